"""The wave driver: advances every labeler state machine of a shard together (docs/labelers.md).

Each wave gathers the pending rollout queries of all active solutions and sends them to the engine in
ONE ``generate`` call, queries of the same solution adjacent and prompts byte-identical so prefix caches
hit. Results are graded and handed back; a solution whose request failed after the engine's retries is
stopped and reported as failed with the engine's message, never given made-up outcomes.

Checks that need a model but no grading (the judge, the code verifier) yield complete :class:`GenerationRequest` objects and go
through the same waves (:meth:`WaveDriver.run_checks`); their engine errors are handed back to them in the
:class:`TextOutcome` rather than stopping them.

A labeler may yield an empty list: "resume me after this wave" (it receives an empty list back). This is a
barrier for labelers that share per-problem state across solutions (SCAN's self-confidence): waiting
solutions are resumed after every solution that had queries in the wave. A round where every pending
solution waits makes no engine call and does not count as a wave; two such rounds in a row mean no
labeler can make progress, which is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from steplabel.labelers.base import (
    CheckRun,
    Labeler,
    LabelerRun,
    RolloutOutcome,
    RolloutQuery,
    SolutionTask,
    TextOutcome,
)
from steplabel.rollouts.engines.base import Engine, GenerationRequest, GenerationResult, derive_seed

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
    labels: dict[str, Any] = field(default_factory=dict)  # id -> what its generator returned (StepLabels, Dropped...)
    failures: dict[str, str] = field(default_factory=dict)  # solution_id -> what went wrong
    spent: dict[str, tuple[int, int]] = field(default_factory=dict)  # solution_id -> (samples, tokens) used
    waves: int = 0
    samples: int = 0
    tokens: int = 0


class WaveDriver:
    """``build_prompt``, ``judge`` and ``sampling`` serve rollout queries; a driver that only runs checks
    (:meth:`run_checks`) can leave them out."""

    def __init__(
        self,
        engine: Engine,
        build_prompt: PromptBuilder | None = None,
        judge: AnswerJudge | None = None,
        sampling: RolloutSampling | None = None,
        on_wave: Callable[[WaveStats], None] | None = None,
    ) -> None:
        self.engine = engine
        self.build_prompt = build_prompt
        self.judge = judge
        self.sampling = sampling
        self.on_wave = on_wave

    def _request(self, task: SolutionTask | None, query: RolloutQuery | GenerationRequest) -> GenerationRequest:
        if isinstance(query, GenerationRequest):  # a check's request goes out as it is
            return query
        if task is None or self.build_prompt is None or self.sampling is None:
            raise TypeError("a rollout query needs its solution task and the driver's rollout settings")
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

    def _outcome(self, task: SolutionTask | None, query: RolloutQuery | GenerationRequest,
                 gen: GenerationResult) -> RolloutOutcome | TextOutcome:
        if isinstance(query, GenerationRequest):
            return TextOutcome(tuple(c.text for c in gen.completions), gen.tokens_generated, gen.error)
        assert task is not None and self.judge is not None
        # A continuation cut off by max_tokens has no final answer, whatever its last number says: never
        # correct, and flagged so that no labeler searches it as a wrong answer.
        truncated = tuple(c.finish_reason == "length" for c in gen.completions)
        flags = tuple(not cut and self.judge(c.text, task.reference)
                      for c, cut in zip(gen.completions, truncated, strict=True))
        return RolloutOutcome(correct=sum(flags), total=len(flags), tokens=gen.tokens_generated,
                              texts=tuple(c.text for c in gen.completions), correct_flags=flags,
                              truncated_flags=truncated)

    def run(self, tasks: Sequence[SolutionTask], labeler: Labeler) -> DriverResult:
        """Label every task; ``labels`` maps solution ids to their :class:`StepLabels` or :class:`Dropped`."""
        return self._run({task.solution_id: labeler.label(task) for task in tasks},
                         {task.solution_id: task for task in tasks})

    def run_checks(self, checks: Mapping[str, CheckRun]) -> DriverResult:
        """Run model-based checks (prompt queries only); ``labels`` maps ids to what each check returned."""
        return self._run(checks, {})

    def _run(self, runs: Mapping[str, LabelerRun | CheckRun], tasks: Mapping[str, SolutionTask]) -> DriverResult:
        result = DriverResult()
        pending: dict[str, tuple[Any, list[Any]]] = {}
        for run_id, run in runs.items():  # primed in order: labelers sharing state rely on it
            self._advance(run_id, run, None, pending, result)
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
                requests.extend(self._request(tasks.get(solution_id), q) for q in queries)
                spans.append((solution_id, start, len(requests)))
            generated = self.engine.generate(requests)
            if len(generated) != len(requests):
                raise RuntimeError(f"engine returned {len(generated)} results for {len(requests)} requests")
            result.waves += 1
            wave_samples = wave_tokens = 0
            for solution_id, start, end in spans:
                run, queries = pending.pop(solution_id)
                answers = generated[start:end]
                samples, tokens = result.spent.get(solution_id, (0, 0))
                result.spent[solution_id] = (samples + sum(len(r.completions) for r in answers),
                                             tokens + sum(r.tokens_generated for r in answers))
                wave_samples += sum(len(r.completions) for r in answers)
                wave_tokens += sum(r.tokens_generated for r in answers)
                errors = [r.error for q, r in zip(queries, answers, strict=True) if r.error and isinstance(q, RolloutQuery)]
                if errors:
                    run.close()
                    result.failures[solution_id] = f"engine error on a rollout request: {errors[0]}"
                    continue
                task = tasks.get(solution_id)
                outcomes = [self._outcome(task, q, r) for q, r in zip(queries, answers, strict=True)]
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
        run: Any,
        outcomes: list[Any] | None,
        pending: dict[str, tuple[Any, list[Any]]],
        result: DriverResult,
    ) -> None:
        try:
            queries = run.send(outcomes)  # type: ignore[arg-type]  # None primes the generator
        except StopIteration as stop:
            result.labels[solution_id] = stop.value
            return
        pending[solution_id] = (run, list(queries))  # [] = wait one wave
