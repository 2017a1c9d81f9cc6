"""The Math-Shepherd labeler and the wave driver against hand-computed MC values."""

from __future__ import annotations

import re

import pytest

from steplabel.labelers.base import RolloutQuery, SolutionTask
from steplabel.labelers.driver import WaveDriver
from steplabel.labelers.math_shepherd import MathShepherdLabeler
from steplabel.labelers.math_shepherd_config import MathShepherdConfig
from steplabel.rollouts.engines.base import GenerationRequest
from steplabel.rollouts.prompts import prefix_prompt
from steplabel.rollouts.sampling_params import SamplingParams
from tests.scripted_engine import ScriptedEngine

TEMPLATE = "Question: {question}\n"
SAMPLING = SamplingParams(temperature=0.8, top_p=1.0, max_tokens=64)


def steps_in_prompt(request: GenerationRequest) -> int:
    return len(re.findall(r"^Step \d+:", request.prompt.split("Question:")[-1], flags=re.MULTILINE))


def make_task(solution_id: str = "s1", n_steps: int = 3, final_correct: bool = True) -> SolutionTask:
    steps = tuple(f"Step {i + 1}: line {i + 1}" for i in range(n_steps))
    return SolutionTask(solution_id, "p1", "What is 2 + 3?", "5", steps, final_correct)


def judge(text: str, reference: str) -> bool:
    match = re.search(r"The answer is (\S+?)\.", text)
    return bool(match) and match.group(1) == reference


def driver_for(engine: ScriptedEngine) -> WaveDriver:
    return WaveDriver(engine, lambda q, steps: prefix_prompt(TEMPLATE, q, steps, "step_pattern"), judge, SAMPLING,
                      stop=("\n\n",), base_seed=7)


def planted(correct_by_prefix: dict[int, int]):
    """Sample i from a t-step prefix is correct iff i < correct_by_prefix[t]."""

    def script(request: GenerationRequest, index: int) -> str:
        ok = index < correct_by_prefix[steps_in_prompt(request)]
        return "Step 9: more.\nThe answer is 5." if ok else "Step 9: oops.\nThe answer is 7."

    return script


def test_math_shepherd_hard_labels_match_hand_computed_mc():
    engine = ScriptedEngine(planted({1: 3, 2: 0}))
    result = driver_for(engine).run([make_task()], MathShepherdLabeler(MathShepherdConfig(k=4)))
    labels = result.labels["s1"]
    assert labels.mc_scores == [0.75, 0.0, 1.0]
    assert labels.mc_correct == [3, 0, 1]
    assert labels.mc_total == [4, 4, 1]  # the last step is its own final answer, graded once
    assert labels.labels == [True, False, True]
    assert labels.soft_labels == [1.0, 0.0, 1.0]
    assert labels.first_error == 1
    assert labels.rollouts_used == 8
    assert labels.tokens_generated == 8 * 7  # seven words per scripted continuation
    assert result.waves == 1 and engine.samples == 8


def test_math_shepherd_hard_label_is_any_success_not_a_majority():
    engine = ScriptedEngine(planted({1: 1, 2: 2, 3: 0}))
    labels = driver_for(engine).run([make_task(n_steps=4)], MathShepherdLabeler(MathShepherdConfig(k=4))).labels["s1"]
    assert labels.mc_scores == [0.25, 0.5, 0.0, 1.0]
    assert labels.labels == [True, True, False, True]  # 1 of 4 reaching the answer is enough (MC > 0)


def test_a_truncated_rollout_is_never_correct_and_is_flagged():
    # Samples 0 and 1 reach the answer, but sample 1 was cut off by max_tokens: no final answer.
    engine = ScriptedEngine(planted({1: 2}), truncate_when=lambda request, index: index == 1)
    driver = driver_for(engine)
    request = driver._request(make_task(), RolloutQuery(steps=("Step 1: line 1",), k=3))
    outcome = driver._outcome(make_task(), RolloutQuery(steps=("Step 1: line 1",), k=3), engine.generate([request])[0])
    assert outcome.correct_flags == (True, False, False) and outcome.truncated_flags == (False, True, False)
    assert (outcome.correct, outcome.total) == (1, 3)
    labels = driver_for(ScriptedEngine(planted({1: 2}), truncate_when=lambda r, i: i == 1)).run(
        [make_task(n_steps=2)], MathShepherdLabeler(MathShepherdConfig(k=3))).labels["s1"]
    assert labels.mc_correct == [1, 1] and labels.mc_total == [3, 1]


def test_math_shepherd_soft_mode_thresholds_and_keeps_mc():
    engine = ScriptedEngine(planted({1: 1, 2: 2, 3: 4}))
    config = MathShepherdConfig(k=4, label_mode="soft", soft_threshold=0.5)
    labels = driver_for(engine).run([make_task(n_steps=4, final_correct=False)], MathShepherdLabeler(config)).labels["s1"]
    assert labels.mc_scores == [0.25, 0.5, 1.0, 0.0]
    assert labels.soft_labels == [0.25, 0.5, 1.0, 0.0]
    assert labels.labels == [False, True, True, False]
    assert labels.first_error == 0


def test_single_step_solution_needs_no_rollouts():
    engine = ScriptedEngine(planted({}))
    labels = driver_for(engine).run([make_task(n_steps=1, final_correct=False)], MathShepherdLabeler(MathShepherdConfig())).labels["s1"]
    assert labels.labels == [False] and labels.first_error == 0 and labels.rollouts_used == 0
    assert engine.calls == []


def test_one_wave_serves_every_solution_with_derived_distinct_seeds():
    engine = ScriptedEngine(planted({1: 1, 2: 1}))
    tasks = [make_task("a"), make_task("b", n_steps=2)]
    result = driver_for(engine).run(tasks, MathShepherdLabeler(MathShepherdConfig(k=2)))
    assert set(result.labels) == {"a", "b"}
    assert len(engine.calls) == 1  # one batched generate for both solutions
    requests = engine.calls[0]
    assert [r.n for r in requests] == [2, 2, 2]
    # Same problem and same one-step prefix -> same seed (reproducible); a longer prefix -> another seed.
    assert requests[0].seed == requests[2].seed
    assert requests[0].seed != requests[1].seed
    assert requests[0].prompt == "Question: What is 2 + 3?\nStep 1: line 1\n"


def test_engine_failure_stops_only_that_solution_with_its_message():
    engine = ScriptedEngine(planted({1: 1, 2: 1}), fail_when=lambda r: "HTTP 503 from server" if "line 2" in r.prompt else None)
    tasks = [make_task("a", n_steps=3), make_task("b", n_steps=2)]
    result = driver_for(engine).run(tasks, MathShepherdLabeler(MathShepherdConfig(k=2)))
    assert set(result.labels) == {"b"}
    assert "HTTP 503" in result.failures["a"]
    # "a" still paid for the request that succeeded in the failing wave (prefix of 1 step: 2 samples).
    assert result.spent["a"][0] == 2 and result.spent["a"][1] > 0


@pytest.mark.parametrize("k", [1, 8])
def test_rollouts_used_is_k_times_prefixes(k):
    engine = ScriptedEngine(planted({t: 0 for t in range(1, 6)}))
    labels = driver_for(engine).run([make_task(n_steps=6)], MathShepherdLabeler(MathShepherdConfig(k=k))).labels["s1"]
    assert labels.rollouts_used == 5 * k
    assert labels.labels == [False] * 5 + [True]
