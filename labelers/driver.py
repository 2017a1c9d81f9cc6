"""The driver: advances labeler state machines and sends their queries to the engine (docs/scheduling.md).

Runs advance in *rounds*. A round of a set of runs sends the pending queries of every run that has some,
and when all of them are back hands each run its outcomes (in the runs' order), then resumes the runs
that yielded an empty list. Queries of the same solution go out adjacent and prompts are byte-identical,
so prefix caches hit. Results are graded and handed back; a solution whose request failed after the
engine's retries is stopped and reported as failed with the engine's message, never given made-up
outcomes.

Two schedules (``scheduling``), with identical labels because every request carries its own seed:

``wave``: all runs are one set, so a round is a global wave: ONE ``generate`` call for every active
solution, and the next wave starts when the slowest request of this one is back.

``continuous``: each solution is its own set (the solutions of one problem form one set when the
labeler shares per-problem state, ``Labeler.shares_problem_state``), so a solution's next query goes
out as soon as its own results are back. Engines that accept requests one by one
(:class:`~steplabel.rollouts.engines.base.ContinuousEngine`, e.g. the ``openai`` engine) get each request
as it is ready; other engines get whatever is ready as one ``generate`` call (micro-batches).

``auto`` (the default) is ``continuous`` for a continuous engine and ``wave`` otherwise.

Checks that need a model but no grading (the judge, the code verifier) yield complete
:class:`GenerationRequest` objects and go through the same rounds (:meth:`WaveDriver.run_checks`); their
engine errors are handed back to them in the :class:`TextOutcome` rather than stopping them.

A labeler may yield an empty list: "resume me after the others of my set" (it receives an empty list
back). This is a barrier for labelers that share per-problem state across solutions (SCAN's
self-confidence): waiting runs are resumed after every run of their set that had queries in the round. A
round where every run of a set waits makes no engine call; two such rounds in a row mean no run of the
set can make progress, which is an error.

The driver advances generators only in the calling thread; engine callbacks merely queue results. So
several drivers (several shards) may share one continuous engine from different threads.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from steplabel.labelers.base import (
    CheckRun,
    Labeler,
    LabelerRun,
    RolloutOutcome,
    RolloutQuery,
    SolutionTask,
    TextOutcome,
)
from steplabel.rollouts.engines.base import (
    ContinuousEngine,
    Engine,
    GenerationRequest,
    GenerationResult,
    derive_seed,
)
from steplabel.rollouts.sampling_params import SamplingParams

PromptBuilder = Callable[[str, tuple[str, ...]], str]
"""(question, prefix steps) -> the exact text the completer continues."""

AnswerJudge = Callable[[str, str], bool]
"""(continuation text, reference answer) -> is the continuation's final answer correct."""

Scheduling = Literal["auto", "wave", "continuous"]

Pending = dict[str, tuple[Any, list[Any]]]
"""run id -> (its generator, the queries it yielded; [] = waiting for its set)."""


@dataclass(frozen=True)
class WaveStats:
    """One finished round: a global wave (``wave`` scheduling) or one set's round (``continuous``)."""

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
    waves: int = 0  # rounds that went to the engine (global waves, or set rounds when continuous)
    samples: int = 0
    tokens: int = 0


@dataclass
class _Round:
    """The queries of one set's round in flight, and the results that have come back so far."""

    order: list[str]  # runs with queries, in the set's order
    waiting: list[str]  # runs resumed after the others
    spans: list[tuple[str, int, int]]  # run id -> its slice of ``requests``
    requests: list[GenerationRequest]
    results: list[GenerationResult | None]
    missing: int


def prefers_continuous(engine: Engine) -> bool:
    """Whether ``auto`` scheduling runs continuously on this engine (it accepts requests one by one)."""
    return isinstance(engine, ContinuousEngine)


def _result_of(future: Future) -> GenerationResult:
    """A submitted request's result; an exception inside the engine becomes that request's error."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - reported on the request, never lost
        return GenerationResult(error=f"{type(exc).__name__}: {exc}")


class WaveDriver:
    """``build_prompt``, ``judge`` and ``sampling`` (with the prompt format's ``stop`` strings and the run's
    ``base_seed``) serve rollout queries; a driver that only runs checks (:meth:`run_checks`) can leave them
    out. ``scheduling``: see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        build_prompt: PromptBuilder | None = None,
        judge: AnswerJudge | None = None,
        sampling: SamplingParams | None = None,
        on_wave: Callable[[WaveStats], None] | None = None,
        scheduling: Scheduling = "auto",
        *,
        stop: Sequence[str] = (),
        base_seed: int = 0,
    ) -> None:
        if scheduling not in ("auto", "wave", "continuous"):
            raise ValueError(f"scheduling must be auto, wave or continuous, not {scheduling!r}")
        self.engine = engine
        self.build_prompt = build_prompt
        self.judge = judge
        self.sampling = sampling
        self.stop = tuple(stop)
        self.base_seed = base_seed
        self.on_wave = on_wave
        self.continuous = scheduling == "continuous" or (scheduling == "auto" and prefers_continuous(engine))

    def _request(self, task: SolutionTask | None, query: RolloutQuery | GenerationRequest) -> GenerationRequest:
        if isinstance(query, GenerationRequest):  # a check's request goes out as it is
            return query
        if task is None or self.build_prompt is None or self.sampling is None:
            raise TypeError("a rollout query needs its solution task and the driver's rollout settings")
        prompt = self.build_prompt(task.question, query.steps)
        return self.sampling.request(prompt, n=query.k, stop=self.stop,
                                     seed=derive_seed(self.base_seed, task.problem_id, prompt))

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
        shared = getattr(labeler, "shares_problem_state", True)  # undeclared: the safe lockstep
        return self._run({task.solution_id: labeler.label(task) for task in tasks},
                         {task.solution_id: task for task in tasks},
                         {task.solution_id: task.problem_id if shared else task.solution_id for task in tasks})

    def run_checks(self, checks: Mapping[str, CheckRun]) -> DriverResult:
        """Run model-based checks (prompt queries only); ``labels`` maps ids to what each check returned."""
        return self._run(checks, {}, {check_id: check_id for check_id in checks})

    def _run(self, runs: Mapping[str, LabelerRun | CheckRun], tasks: Mapping[str, SolutionTask],
             set_of: Mapping[str, str]) -> DriverResult:
        result = DriverResult()
        sets: dict[str, Pending] = {}
        for run_id, run in runs.items():  # primed in order: labelers sharing state rely on it
            members = sets.setdefault(set_of[run_id] if self.continuous else "", {})
            self._advance(run_id, run, None, members, result)
        done: queue.SimpleQueue[tuple[str, int, GenerationResult]] = queue.SimpleQueue()
        batch: list[tuple[str, int, GenerationRequest]] = []  # ready requests of an engine without submit
        in_flight: dict[str, _Round] = {}
        idle = dict.fromkeys(sets, 0)

        def start(key: str) -> None:
            """Open the set's next round: send its queries, or resume its waiting runs when it has none."""
            members = sets[key]
            while members:
                order = [rid for rid in members if members[rid][1]]
                waiting = [rid for rid in members if not members[rid][1]]
                if order:
                    break
                idle[key] += 1
                if idle[key] > 1:
                    raise RuntimeError(f"every labeler is waiting and none can proceed: {sorted(waiting)}")
                for run_id in waiting:
                    self._advance(run_id, members.pop(run_id)[0], [], members, result)
            else:
                return
            idle[key] = 0
            requests: list[GenerationRequest] = []
            spans = []
            for run_id in order:
                first = len(requests)
                requests.extend(self._request(tasks.get(run_id), q) for q in members[run_id][1])
                spans.append((run_id, first, len(requests)))
            in_flight[key] = _Round(order, waiting, spans, requests, [None] * len(requests), len(requests))
            for index, request in enumerate(requests):
                if self.continuous and isinstance(self.engine, ContinuousEngine):
                    future = self.engine.submit(request)
                    future.add_done_callback(lambda f, k=key, i=index: done.put((k, i, _result_of(f))))
                else:
                    batch.append((key, index, request))

        def flush() -> None:
            """One ``generate`` call for everything that is ready (a wave, or a micro-batch)."""
            generated = self.engine.generate([request for _, _, request in batch])
            if len(generated) != len(batch):
                raise RuntimeError(f"engine returned {len(generated)} results for {len(batch)} requests")
            for (key, index, _), answer in zip(batch, generated, strict=True):
                done.put((key, index, answer))
            batch.clear()

        for key in list(sets):
            start(key)
        while in_flight:
            if batch and done.empty():
                flush()
            key, index, answer = done.get()
            rnd = in_flight[key]
            rnd.results[index] = answer
            rnd.missing -= 1
            if rnd.missing:
                continue
            del in_flight[key]
            result.waves += 1
            samples, tokens = self._finish(rnd, sets[key], tasks, result)
            start(key)
            if self.on_wave:
                active = sum(len(members) for members in sets.values())
                self.on_wave(WaveStats(result.waves, len(rnd.requests), samples, tokens, active, len(result.labels)))
        return result

    def _finish(self, rnd: _Round, members: Pending, tasks: Mapping[str, SolutionTask],
                result: DriverResult) -> tuple[int, int]:
        """Hand a finished round's outcomes to its runs, then resume the set's waiting runs; (samples, tokens)."""
        round_samples = round_tokens = 0
        for run_id, first, end in rnd.spans:
            run, queries = members.pop(run_id)
            answers = [answer for answer in rnd.results[first:end] if answer is not None]
            samples = sum(len(r.completions) for r in answers)
            tokens = sum(r.tokens_generated for r in answers)
            spent_samples, spent_tokens = result.spent.get(run_id, (0, 0))
            result.spent[run_id] = (spent_samples + samples, spent_tokens + tokens)
            round_samples += samples
            round_tokens += tokens
            errors = [r.error for q, r in zip(queries, answers, strict=True) if r.error and isinstance(q, RolloutQuery)]
            if errors:
                run.close()
                result.failures[run_id] = f"engine error on a rollout request: {errors[0]}"
                continue
            task = tasks.get(run_id)
            outcomes = [self._outcome(task, q, r) for q, r in zip(queries, answers, strict=True)]
            self._advance(run_id, run, outcomes, members, result)
        # Waiting runs resume after everyone who had queries, so they see this round's results.
        for run_id in rnd.waiting:
            self._advance(run_id, members.pop(run_id)[0], [], members, result)
        result.samples += round_samples
        result.tokens += round_tokens
        return round_samples, round_tokens

    @staticmethod
    def _advance(run_id: str, run: Any, outcomes: list[Any] | None, members: Pending, result: DriverResult) -> None:
        try:
            queries = run.send(outcomes)  # type: ignore[arg-type]  # None primes the generator
        except StopIteration as stop:
            result.labels[run_id] = stop.value
            return
        members[run_id] = (run, list(queries))  # [] = wait for the others of the set
