"""Continuous scheduling: same labels as global waves on every labeler, whatever order results come back in;
no wave barrier between solutions; per-problem lockstep kept for labelers that share state."""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Sequence
from concurrent.futures import Future

import httpx
import pytest

from steplabel.labelers.base import SolutionTask
from steplabel.labelers.driver import DriverResult, WaveDriver, prefers_continuous
from steplabel.labelers.math_shepherd import MathShepherdLabeler
from steplabel.labelers.math_shepherd_config import MathShepherdConfig
from steplabel.labelers.omegaprm import OmegaPRMLabeler
from steplabel.labelers.omegaprm_config import OmegaPRMConfig
from steplabel.labelers.rpe import RPELabeler
from steplabel.labelers.rpe_config import RPEConfig
from steplabel.labelers.scan import ScanLabeler
from steplabel.labelers.scan_config import ScanConfig
from steplabel.rollouts.engines.base import (
    ContinuousEngine,
    GenerationRequest,
    GenerationResult,
)
from steplabel.rollouts.engines.openai_compat import OpenAICompatEngine
from steplabel.rollouts.prompts import prefix_prompt
from steplabel.rollouts.sampling_params import SamplingParams
from tests.scripted_engine import ScriptedEngine, seeded_index

TEMPLATE = "Question: {question}\n"
SAMPLING = SamplingParams(temperature=0.8, top_p=1.0, max_tokens=64)


def judge(text: str, reference: str) -> bool:
    match = re.search(r"The answer is (\S+?)\.", text)
    return bool(match) and match.group(1) == reference


def steps_in(prompt: str) -> int:
    return len(re.findall(r"^Step \d+:", prompt.split("Question:")[-1], flags=re.MULTILINE))


def noisy_script(request: GenerationRequest, index: int) -> str:
    """Seeded samples: the deeper the prefix, the likelier a wrong answer; 2-4 steps each (tree mode splits them)."""
    rng = random.Random(seeded_index(request, index))
    depth = steps_in(request.prompt)
    right = rng.random() < max(0.05, 0.7 - 0.2 * depth)
    steps = "".join(f"Step {depth + j + 1}: step {rng.randint(0, 99)}.\n" for j in range(rng.randint(2, 4)))
    return steps + ("The answer is 5." if right else f"The answer is {rng.randint(6, 9)}.")


def tasks() -> list[SolutionTask]:
    """3 problems x 4 solutions, 1 to 6 steps, right and wrong."""
    out = []
    for p in range(3):
        for s in range(4):
            n_steps = 1 + (p * 4 + s) % 6
            steps = tuple(f"Step {i + 1}: p{p} s{s} line {i + 1}." for i in range(n_steps))
            out.append(SolutionTask(f"p{p}s{s}", f"p{p}", f"Problem {p}: what is 2 + 3?", "5", steps, s % 2 == 0))
    return out


class OutOfOrderEngine:
    """Accepts requests one by one (a ContinuousEngine) and answers them from a thread of its own in a
    seeded random order, so results come back in an order unrelated to submission."""

    def __init__(self, inner: ScriptedEngine, seed: int) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.submitted = 0
        self._rng = random.Random(seed)
        self._queue: list[tuple[GenerationRequest, Future]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return self.inner.generate(requests)

    def submit(self, request: GenerationRequest) -> Future:
        future: Future = Future()
        with self._cond:
            self._queue.append((request, future))
            self.submitted += 1
            self._cond.notify()
        return future

    def _serve(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed, timeout=0.002)
                if self._closed:
                    return
                if not self._queue:
                    continue
                request, future = self._queue.pop(self._rng.randrange(len(self._queue)))
            future.set_result(self.inner.generate([request])[0])

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)


def driver(engine, scheduling: str = "auto") -> WaveDriver:
    return WaveDriver(engine, lambda q, steps: prefix_prompt(TEMPLATE, q, steps, "step_pattern"), judge, SAMPLING,
                      stop=("\n\n",), base_seed=11, scheduling=scheduling)


def fingerprint(result: DriverResult) -> tuple:
    labels = {sid: json.dumps(vars(value), sort_keys=True, default=str) for sid, value in result.labels.items()}
    return labels, result.failures, result.spent, result.samples, result.tokens


LABELERS = {
    "math_shepherd": lambda: MathShepherdLabeler(MathShepherdConfig(k=3)),
    "omegaprm": lambda: OmegaPRMLabeler(OmegaPRMConfig(k=4)),
    "omegaprm_tree": lambda: OmegaPRMLabeler(OmegaPRMConfig(k=3, mode="tree", filter_k=4, search_limit=6,
                                                            label_mode="pairwise")),
    "scan": lambda: ScanLabeler(ScanConfig(k=3, sc_samples=6, confidence_threshold=0.5)),
    "rpe": lambda: RPELabeler(RPEConfig(k=3)),
}


@pytest.mark.parametrize("name", sorted(LABELERS))
def test_labels_do_not_depend_on_scheduling_or_result_order(name):
    wave_engine = ScriptedEngine(noisy_script)
    wave = driver(wave_engine, "wave").run(tasks(), LABELERS[name]())
    assert len(wave.labels) == 12 and wave.samples > 0
    micro_engine = ScriptedEngine(noisy_script)  # continuous on an engine that only batches: micro-batches
    micro = driver(micro_engine, "continuous").run(tasks(), LABELERS[name]())
    assert fingerprint(micro) == fingerprint(wave)
    assert sorted(r.prompt for c in micro_engine.calls for r in c) == sorted(r.prompt for c in wave_engine.calls for r in c)
    for seed in range(3):
        engine = OutOfOrderEngine(ScriptedEngine(noisy_script), seed)
        try:
            continuous = driver(engine).run(tasks(), LABELERS[name]())  # auto: the engine accepts requests one by one
        finally:
            engine.close()
        assert engine.submitted == sum(len(c) for c in wave_engine.calls)
        assert fingerprint(continuous) == fingerprint(wave), seed


def test_auto_picks_continuous_only_for_engines_that_accept_requests_one_by_one():
    scripted = ScriptedEngine(noisy_script)
    engine = OutOfOrderEngine(ScriptedEngine(noisy_script), 0)
    openai = OpenAICompatEngine(["http://127.0.0.1:9"], "m", transport=httpx.MockTransport(lambda r: httpx.Response(500)),
                                api_key_env=None)
    try:
        assert not prefers_continuous(scripted) and not driver(scripted).continuous
        assert prefers_continuous(engine) and driver(engine).continuous and not driver(engine, "wave").continuous
        assert isinstance(openai, ContinuousEngine) and driver(openai).continuous
    finally:
        engine.close()
        openai.close()
    with pytest.raises(ValueError, match="scheduling"):
        driver(scripted, "fast")


class GatedEngine(OutOfOrderEngine):
    """Holds the requests of solution ``slow`` until solution ``fast`` has sent ``release_after`` requests
    of its own (or 5 s passed, which the test reports as a barrier); then answers everything."""

    def __init__(self, release_after: int) -> None:
        super().__init__(ScriptedEngine(noisy_script), 0)
        self.release_after = release_after
        self.fast_sent = 0
        self.held: list[tuple[GenerationRequest, Future]] = []
        self.released = False
        self.timed_out = False
        self._timer = threading.Timer(5.0, self._release, kwargs={"timed_out": True})
        self._timer.start()

    def submit(self, request: GenerationRequest) -> Future:
        if "slow" not in request.prompt:
            self.fast_sent += 1
            if self.fast_sent == self.release_after:
                self._release()
        elif not self.released:
            future: Future = Future()
            with self._cond:
                self.held.append((request, future))
            return future
        return super().submit(request)

    def _release(self, timed_out: bool = False) -> None:
        with self._cond:
            held, self.held, self.released = self.held, [], True
            self.timed_out |= timed_out and bool(held)
        for request, future in held:
            future.set_result(self.inner.generate([request])[0])

    def close(self) -> None:
        self._timer.cancel()
        super().close()


def test_a_solution_goes_on_while_another_solution_of_the_shard_is_still_out():
    """OmegaPRM's binary search on an 8-step wrong solution issues 3 queries one after another: all three go
    out while the other solution's first query is still unanswered (a wave driver would wait for it)."""
    steps = tuple(f"Step {i + 1}: line {i + 1}." for i in range(8))
    work = [SolutionTask("slow", "p1", "slow question?", "5", steps, False),
            SolutionTask("fast", "p2", "fast question?", "5", steps, False)]
    engine = GatedEngine(release_after=3)  # fast's third query: sent after its second came back
    try:
        result = driver(engine).run(work, OmegaPRMLabeler(OmegaPRMConfig(k=2)))
    finally:
        engine.close()
    assert engine.fast_sent == 3 and not engine.timed_out
    assert set(result.labels) == {"slow", "fast"} and result.spent["fast"][0] == 6


def test_engine_failure_stops_only_that_solution_in_continuous_mode():
    fail = lambda request: "HTTP 500: boom" if "p0 s1 line 1" in request.prompt else None  # noqa: E731
    wave = driver(ScriptedEngine(noisy_script, fail_when=fail), "wave").run(tasks(), MathShepherdLabeler(MathShepherdConfig(k=3)))
    engine = OutOfOrderEngine(ScriptedEngine(noisy_script, fail_when=fail), 1)
    try:
        continuous = driver(engine).run(tasks(), MathShepherdLabeler(MathShepherdConfig(k=3)))
    finally:
        engine.close()
    assert "HTTP 500: boom" in continuous.failures["p0s1"] and len(continuous.labels) == 11
    assert fingerprint(continuous) == fingerprint(wave)


def test_exception_inside_the_engine_is_that_request_error_not_a_lost_solution():
    class Raising(OutOfOrderEngine):
        def submit(self, request: GenerationRequest) -> Future:
            future: Future = Future()
            if "p1 s1" in request.prompt:
                future.set_exception(ConnectionResetError("peer went away"))
                return future
            return super().submit(request)

    engine = Raising(ScriptedEngine(noisy_script), 0)
    try:
        result = driver(engine).run(tasks(), MathShepherdLabeler(MathShepherdConfig(k=2)))
    finally:
        engine.close()
    assert result.failures == {"p1s1": "engine error on a rollout request: ConnectionResetError: peer went away"}
    assert len(result.labels) == 11


def test_a_set_where_everyone_waits_is_an_error_not_a_hang():
    class Stuck:
        name = "stuck"
        shares_problem_state = False

        def label(self, task: SolutionTask):
            while True:
                yield []

    engine = OutOfOrderEngine(ScriptedEngine(noisy_script), 0)
    try:
        with pytest.raises(RuntimeError, match="waiting"):
            driver(engine).run(tasks()[:2], Stuck())
    finally:
        engine.close()


def test_several_shards_share_one_engine_from_threads():
    """Two drivers (two shards) in two threads on one continuous engine get the labels each gets alone."""
    engine = OutOfOrderEngine(ScriptedEngine(noisy_script), 2)
    shards = [tasks()[:6], tasks()[6:]]
    alone = [fingerprint(driver(ScriptedEngine(noisy_script), "wave").run(s, OmegaPRMLabeler(OmegaPRMConfig(k=3))))
             for s in shards]
    together: list = [None, None]

    def label(i: int) -> None:
        together[i] = fingerprint(driver(engine).run(shards[i], OmegaPRMLabeler(OmegaPRMConfig(k=3))))

    threads = [threading.Thread(target=label, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        engine.close()
    assert together == alone
