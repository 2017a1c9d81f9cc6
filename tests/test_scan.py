"""SCAN: tolerance-distance soft labels, shared self-confidence, no rollouts for confident correct solutions."""

from __future__ import annotations

import json

import pytest

from steplabel.labelers.base import Dropped, RolloutQuery, SolutionTask
from steplabel.labelers.scan import ScanLabeler, balance, policy_pass_counts, tolerance_soft_labels
from steplabel.labelers.scan_config import ScanConfig
from steplabel.flows.config import parse_config
from steplabel.labelling.shard import RunContext, ShardPlan, filter_reason, label_shard
from steplabel.rollouts.engines.base import GenerationRequest
from steplabel.rollouts.grading import Grader, Verdict
from steplabel.rollouts.sampling import SampledSolution, SampleReject
from steplabel.rollouts.sources import Problem
from tests.scripted_engine import ScriptedEngine
from tests.test_labelers import driver_for, make_task, planted, steps_in_prompt


def test_tolerance_soft_labels_for_a_known_c_sequence():
    c = [1.0, 0.75, 0.5, 0.25, 0.0]
    # SC = 0.8, error at 4, d = 2: steps 2 and 3 get min(c/SC, 1); earlier 1; the error and later 0.
    assert tolerance_soft_labels(c, 4, 6, 0.8, 2) == pytest.approx([1.0, 1.0, 0.625, 0.3125, 0.0, 0.0])
    assert tolerance_soft_labels(c, 4, 6, 0.8, 0) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert tolerance_soft_labels([0.0], 0, 3, 0.8, 2) == [0.0, 0.0, 0.0]
    assert tolerance_soft_labels([0.5, 0.0], 1, 2, 0.0, 2) == [1.0, 0.0]  # SC = 0 guard
    assert tolerance_soft_labels([], -1, 3, 0.5, 2) == [1.0, 1.0, 1.0]


def test_confident_problem_one_sc_query_correct_solution_free_wrong_one_scanned():
    # Two solutions of p1 (one right): 2 answers known, 2 more samples from the question, both right: SC 3/4.
    engine = ScriptedEngine(planted({0: 2, 1: 4, 2: 2, 3: 0}))
    tasks = [make_task("good", n_steps=4), make_task("bad", n_steps=4, final_correct=False)]
    result = driver_for(engine).run(tasks, ScanLabeler(ScanConfig(k=4, sc_samples=4)))
    sc_queries = [r for call in engine.calls for r in call if steps_in_prompt(r) == 0]
    assert [r.n for r in sc_queries] == [2]
    good, bad = result.labels["good"], result.labels["bad"]
    assert good.extra["self_confidence"] == 0.75 and good.extra["confident"] is True
    assert good.labels == [True] * 4 and good.first_error == -1 and good.soft_labels == [1.0] * 4
    assert good.rollouts_used == 2  # it issued the SC query
    # A negative stops at its error step, as SCAN truncates it: step 3 carries no label.
    assert bad.first_error == 2 and bad.labels == [True, True, False]
    assert bad.mc_scores == [1.0, 0.5, 0.0] and bad.mc_total == [4, 4, 4]
    assert bad.soft_labels == pytest.approx([1.0, 0.5 / 0.75, 0.0])
    assert bad.rollouts_used == 12 and bad.extra["scan_class"] == "negative"
    assert [steps_in_prompt(call[0]) for call in engine.calls] == [0, 1, 2, 3]  # forward scan, one per wave


def test_a_wrong_solution_with_no_zero_is_dropped_and_a_scanned_right_one_ends_on_its_answer():
    engine = ScriptedEngine(planted({1: 1, 2: 1, 3: 1}))
    config = ScanConfig(k=2, sc_samples=2, below_threshold="scan")  # SC 1/2: both solutions are scanned
    tasks = [make_task("right", n_steps=4), make_task("wrong", n_steps=4, final_correct=False),
             SolutionTask("one", "p1", "What is 2 + 3?", "5", ("Step 1: it is 7.",), False)]
    result = driver_for(engine).run(tasks, ScanLabeler(config))
    right, wrong, one = (result.labels[sid] for sid in ("right", "wrong", "one"))
    assert right.first_error == -1 and right.mc_total == [2, 2, 2, 1]  # last step: the graded answer
    assert right.extra["scan_class"] == "positive"
    # Every prefix of the wrong one can still succeed: the annotator over-estimated, SCAN discards it.
    assert isinstance(wrong, Dropped) and filter_reason(wrong) == "scan_no_zero_mc" and wrong.rollouts_used == 6
    # A one-step wrong solution is a negative at step 0, with no rollouts of its own.
    assert one.labels == [False] and one.first_error == 0 and one.mc_total == [1] and one.rollouts_used == 0


def test_low_confidence_scan_or_skip():
    engine = ScriptedEngine(planted({0: 0, 1: 2, 2: 2}))
    low_scan = driver_for(engine).run([make_task(n_steps=3)], ScanLabeler(ScanConfig(k=2, sc_samples=3, below_threshold="scan"))).labels["s1"]
    assert low_scan.extra["self_confidence"] == pytest.approx(1 / 3) and low_scan.extra["confident"] is False
    assert low_scan.first_error == -1 and low_scan.rollouts_used == 2 + 4  # correct, but scanned
    engine = ScriptedEngine(planted({0: 0}))
    tasks = [make_task("right", n_steps=3), make_task("wrong", n_steps=3, final_correct=False)]
    result = driver_for(engine).run(tasks, ScanLabeler(ScanConfig(sc_samples=3)))  # skip is the default
    for sid in ("right", "wrong"):  # no placeholder labels for either: both go to rejects with the reason
        assert isinstance(result.labels[sid], Dropped)
        assert filter_reason(result.labels[sid]) == "self_confidence_below_threshold"
    assert result.labels["right"].rollouts_used + result.labels["wrong"].rollouts_used == 1
    assert result.labels["wrong"].extra["self_confidence"] == pytest.approx(1 / 3)


def test_self_confidence_counts_rejected_policy_samples_and_truncated_top_ups():
    # The pipeline drew 8 samples of p1: 3 right, the rest wrong, answerless, truncated or duplicates.
    labeler = ScanLabeler(ScanConfig(sc_samples=8), policy_samples={"p1": (3, 8)})
    engine = ScriptedEngine(planted({}))
    result = driver_for(engine).run([make_task("a", n_steps=2), make_task("b", n_steps=2)], labeler)
    assert labeler.self_confidence("p1") == pytest.approx(3 / 8) and engine.calls == []  # not 2/2 from the kept ones
    assert isinstance(result.labels["a"], Dropped)
    # A top-up sample cut off by max_tokens has no answer: in the denominator, never correct.
    engine = ScriptedEngine(planted({0: 4}), truncate_when=lambda request, index: index >= 2)
    labeler = ScanLabeler(ScanConfig(sc_samples=5, below_threshold="scan", k=1))
    driver_for(engine).run([make_task("a", n_steps=1)], labeler)
    assert labeler.self_confidence("p1") == pytest.approx((1 + 2) / 5)


def test_policy_pass_counts_over_every_drawn_sample():
    p1, p2, p3 = (Problem(pid, "q", "5", "test") for pid in ("p1", "p2", "p3"))
    right, wrong = Verdict(True, "string"), Verdict(False, "string")
    solutions = [SampledSolution("s-right", p1, "t", ("t",), "5", right, 1),
                 SampledSolution("s-wrong", p1, "t", ("t",), "6", wrong, 1),
                 SampledSolution("s-p2", p2, "t", ("t",), "5", right, 1)]
    rejects = [SampleReject(p1, "s-right", "duplicate_solution", "", "", 1, 2),  # a right answer again
               SampleReject(p1, "s-wrong", "duplicate_solution", "", "", 1, 3),
               SampleReject(p1, "s-x", "truncated", "", "", 1, 4),
               SampleReject(p1, "s-y", "no_final_answer", "", "", 1, 5),
               SampleReject(p3, None, "engine_error", "", "", 0)]  # nothing drawn
    assert policy_pass_counts(solutions, rejects) == {"p1": (2, 6), "p2": (1, 1)}


def test_sc_not_from_solutions_samples_everything():
    engine = ScriptedEngine(planted({0: 4}))
    labels = driver_for(engine).run([make_task(n_steps=2)], ScanLabeler(ScanConfig(sc_samples=4, sc_from_solutions=False))).labels["s1"]
    assert labels.extra["sc_samples"] == 4 and labels.extra["self_confidence"] == 1.0 and labels.rollouts_used == 4


def test_sibling_takes_over_when_the_sc_query_fails():
    failed = []

    def fail_once(request):
        if steps_in_prompt(request) == 0 and not failed:
            failed.append(request)
            return "HTTP 503"
        return None

    engine = ScriptedEngine(planted({0: 4}), fail_when=fail_once)
    result = driver_for(engine).run([make_task("a", n_steps=2), make_task("b", n_steps=2)],
                                    ScanLabeler(ScanConfig(sc_samples=6)))
    assert set(result.failures) == {"a"} and set(result.labels) == {"b"}
    assert result.labels["b"].extra["self_confidence"] == pytest.approx(6 / 6)


def test_balance_samples_both_classes_down():
    kept = balance(["positive", "negative", "positive", "filtered", "positive"], seed=1)
    assert len(kept) == 2 and 1 in kept and 3 not in kept


def test_driver_rejects_labelers_that_only_wait():
    class Stuck:
        name = "stuck"

        def label(self, task: SolutionTask):
            while True:
                yield []

    with pytest.raises(RuntimeError, match="waiting"):
        driver_for(ScriptedEngine(planted({}))).run([make_task()], Stuck())


def test_driver_wait_resumes_after_the_wave():
    seen = []

    class Waiter:
        name = "waiter"

        def label(self, task: SolutionTask):
            if task.solution_id == "w":
                got = yield []
                seen.append(got)
            yield [RolloutQuery(steps=task.steps[:1], k=1)]
            return ScanLabeler(ScanConfig())  # any value: the driver stores what the labeler returns

    engine = ScriptedEngine(planted({1: 1}))
    result = driver_for(engine).run([make_task("w"), make_task("q")], Waiter())
    assert seen == [[]] and len(engine.calls) == 2 and result.waves == 2 and set(result.labels) == {"w", "q"}


SHARD_PROBLEM = Problem("p1", "Ann has 2 apples and buys 3 more. How many apples does she have?", "5", "test")
RIGHT = "Step 1: 2 + 3 = 5.\nStep 2: So 5 apples.\nStep 3: Done.\nThe answer is 5."
WRONG = "Step 1: 2 + 3 = 5.\nStep 2: a wrong step, 5 - 1 = 4.\nStep 3: Done.\nThe answer is 4."
CUT = "Step 1: Ann has 2 + 3 = 5.\nThe answer is 5."  # reads right, but cut off by max_tokens (sample 3)
SAMPLES = [RIGHT, WRONG, RIGHT, CUT, "Just talk without steps or numbers"]  # a duplicate, a cut one, no answer


def shard_script(request: GenerationRequest, index: int) -> str:
    if steps_in_prompt(request) == 0:
        return SAMPLES[index]
    if "wrong step" in request.prompt:
        return "Step 3: hmm.\nThe answer is 4."
    return "Step 3: done.\nThe answer is 5." if index == 0 else "Step 3: hmm.\nThe answer is 4."


def label_scan_shard(below_threshold: str):
    config = parse_config({"prompt": {"template": "Question: {question}\n"}, "sampling": {"num_solutions": 5},
                           "labeler": {"name": "scan", "k": 2, "sc_samples": 5, "below_threshold": below_threshold}})
    engine = ScriptedEngine(shard_script, truncate_when=lambda r, i: steps_in_prompt(r) == 0 and i == 3)
    with Grader(timeout_s=5) as grader:
        tables, _ = label_shard(ShardPlan("shard-a", (SHARD_PROBLEM,)), config,
                                RunContext.now("run-x", config.hash()), policy=engine, completer=engine, grader=grader)
    return tables["step_labels"].to_pylist(), tables["rejects"].to_pylist()


def test_pipeline_sc_counts_every_sample_and_negatives_stop_at_the_error():
    labels, rejects = label_scan_shard("scan")
    assert sorted(r["reason"] for r in rejects) == ["duplicate_solution", "no_final_answer", "truncated"]
    details = [json.loads(r["labeler_details"]) for r in labels]
    # 2 right of 5 drawn (the duplicate repeats a right one; the cut and answerless ones count as not right).
    assert {d["self_confidence"] for d in details} == {0.4} and {d["sc_samples"] for d in details} == {5}
    negative = next(r for r in labels if not r["final_correct"])
    assert negative["completions"] == ["Step 1: 2 + 3 = 5.", "Step 2: a wrong step, 5 - 1 = 4."]
    assert negative["labels"] == [True, False] and negative["first_error"] == 1 and negative["mc_total"] == [2, 2]
    positive = next(r for r in labels if r["final_correct"])
    assert len(positive["completions"]) == 3 and positive["labels"] == [True] * 3


def test_pipeline_rejects_what_scan_drops_with_its_reason():
    labels, rejects = label_scan_shard("skip")
    assert labels == []
    dropped = [r for r in rejects if r["stage"] == "labeling"]
    assert [r["reason"] for r in dropped] == ["self_confidence_below_threshold"] * 2
