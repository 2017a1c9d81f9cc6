"""The wave driver: advances every labeler state machine of a shard together (DESIGN.md section 2).

Each wave gathers the pending rollout queries of all active solutions and sends them to the engine in
ONE ``generate`` call, queries of the same solution adjacent and prompts byte-identical so prefix caches
hit. Results are graded and handed back; a solution whose request failed after the engine's retries is
stopped and reported as failed with the engine's message, never given made-up outcomes.

A labeler may yield an empty list: "resume me after this wave" (it receives an empty list back). This is a
barrier for labelers that share per-problem state across solutions (SCAN's self-confidence): waiting
solutions are resumed after every solution that had queries in the wave. A round where every pending
solution waits makes no engine call and does not count as a wave; two such rounds in a row mean no
labeler can make progress, which is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from labelers.base import (
    Labeler,
    LabelerRun,
    RolloutOutcome,
    RolloutQuery,
    SolutionTask,
    StepLabels,
)
from rollouts.engines.base import Engine, GenerationRequest, derive_seed

PromptBuilder = Callable[[str, tuple[str, ...]], str]
"""(question, prefix steps) -> the exact text the completer continues."""

AnswerJudge = Callable[[str, str], bool]
"""(continuation text, reference answer) -> is the continuation's final answer correct."""


@dataclass(frozen=True)
class RolloutSampling:
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    base_seed: int


@dataclass(frozen=True)
class WaveStats:
    wave: int
    requests: int
    samples: int
    tokens: int
    active: int
    finished: int


@dataclass
class DriverResult:
    labels: dict[str, StepLabels] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # solution_id -> what went wrong
    spent: dict[str, tuple[int, int]] = field(default_factory=dict)  # solution_id -> (samples, tokens) used
    waves: int = 0
    samples: int = 0
    tokens: int = 0


class WaveDriver:
    def __init__(
        self,
        engine: Engine,
        build_prompt: PromptBuilder,
        judge: AnswerJudge,
        sampling: RolloutSampling,
        on_wave: Callable[[WaveStats], None] | None = None,
    ) -> None:
        self.engine = engine
        self.build_prompt = build_prompt
        self.judge = judge
        self.sampling = sampling
        self.on_wave = on_wave

    def _request(self, task: SolutionTask, query: RolloutQuery) -> GenerationRequest:
        prompt = self.build_prompt(task.question, query.steps)
        s = self.sampling
        return GenerationRequest(
            prompt=prompt,
            n=query.k,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            stop=s.stop,
            seed=derive_seed(s.base_seed, task.problem_id, prompt),
        )

    def run(self, tasks: Sequence[SolutionTask], labeler: Labeler) -> DriverResult:
        result = DriverResult()
        by_id = {task.solution_id: task for task in tasks}
        pending: dict[str, tuple[LabelerRun, list[RolloutQuery]]] = {}
        for task in tasks:
            run = labeler.label(task)
            self._advance(task.solution_id, run, None, pending, result)
        idle_rounds = 0
        while pending:
            order = [sid for sid in pending if pending[sid][1]]
            waiting = [sid for sid in pending if not pending[sid][1]]
            if not order:
                idle_rounds += 1
                if idle_rounds > 1:
                    raise RuntimeError(f"every labeler is waiting and none can proceed: {sorted(waiting)}")
                for solution_id in waiting:
                    run, _ = pending.pop(solution_id)
                    self._advance(solution_id, run, [], pending, result)
                continue
            idle_rounds = 0
            requests: list[GenerationRequest] = []
            spans: list[tuple[str, int, int]] = []
            for solution_id in order:
                _, queries = pending[solution_id]
                start = len(requests)
                requests.extend(self._request(by_id[solution_id], q) for q in queries)
                spans.append((solution_id, start, len(requests)))
            generated = self.engine.generate(requests)
            if len(generated) != len(requests):
                raise RuntimeError(f"engine returned {len(generated)} results for {len(requests)} requests")
            result.waves += 1
            wave_samples = wave_tokens = 0
            for solution_id, start, end in spans:
                run, queries = pending.pop(solution_id)
                reference = by_id[solution_id].reference
                samples, tokens = result.spent.get(solution_id, (0, 0))
                result.spent[solution_id] = (
                    samples + sum(len(r.completions) for r in generated[start:end]),
                    tokens + sum(r.tokens_generated for r in generated[start:end]),
                )
                errors = [r.error for r in generated[start:end] if r.error]
                if errors:
                    run.close()
                    result.failures[solution_id] = f"engine error on a rollout request: {errors[0]}"
                    continue
                outcomes = []
                for gen in generated[start:end]:
                    # A continuation cut off by max_tokens has no final answer, whatever its last number says.
                    flags = tuple(c.finish_reason != "length" and self.judge(c.text, reference) for c in gen.completions)
                    outcomes.append(
                        RolloutOutcome(
                            correct=sum(flags),
                            total=len(flags),
                            tokens=gen.tokens_generated,
                            texts=tuple(c.text for c in gen.completions),
                            correct_flags=flags,
                        )
                    )
                    wave_samples += len(flags)
                    wave_tokens += gen.tokens_generated
                self._advance(solution_id, run, outcomes, pending, result)
            # Waiting solutions resume after everyone who had queries, so they see this wave's results.
            for solution_id in waiting:
                run, _ = pending.pop(solution_id)
                self._advance(solution_id, run, [], pending, result)
            result.samples += wave_samples
            result.tokens += wave_tokens
            if self.on_wave:
                self.on_wave(
                    WaveStats(result.waves, len(requests), wave_samples, wave_tokens, len(pending), len(result.labels))
                )
        return result

    @staticmethod
    def _advance(
        solution_id: str,
        run: LabelerRun,
        outcomes: list[RolloutOutcome] | None,
        pending: dict[str, tuple[LabelerRun, list[RolloutQuery]]],
        result: DriverResult,
    ) -> None:
        try:
            queries = run.send(outcomes)  # type: ignore[arg-type]  # None primes the generator
        except StopIteration as stop:
            result.labels[solution_id] = stop.value
            return
        pending[solution_id] = (run, list(queries))  # [] = wait one wave
