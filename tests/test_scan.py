"""SCAN: tolerance-distance soft labels, shared self-confidence, no rollouts for confident correct solutions."""

from __future__ import annotations

import pytest

from steplabel.labelers.base import RolloutQuery, SolutionTask
from steplabel.labelers.scan import ScanLabeler, balance, tolerance_soft_labels
from steplabel.labelers.scan_config import ScanConfig
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
    assert bad.first_error == 2 and bad.labels == [True, True, False, False]
    assert bad.mc_scores == [1.0, 0.5, 0.0, 0.0] and bad.mc_total == [4, 4, 4, 0]
    assert bad.soft_labels == pytest.approx([1.0, 0.5 / 0.75, 0.0, 0.0])
    assert bad.rollouts_used == 12 and bad.extra["scan_class"] == "negative"
    assert [steps_in_prompt(call[0]) for call in engine.calls] == [0, 1, 2, 3]  # forward scan, one per wave


def test_scan_stops_at_the_first_zero_and_uses_the_final_answer_last():
    engine = ScriptedEngine(planted({1: 1, 2: 1, 3: 1}))
    config = ScanConfig(k=2, sc_samples=1, confidence_threshold=0.0)
    labels = driver_for(engine).run([make_task(n_steps=4, final_correct=False)], ScanLabeler(config)).labels["s1"]
    assert labels.first_error == 3 and labels.mc_total == [2, 2, 2, 1]  # last step: the graded answer
    assert labels.soft_labels == pytest.approx([1.0, 1.0, 1.0, 0.0])  # SC 0: guarded to 1[c > 0]


def test_low_confidence_scan_or_skip():
    engine = ScriptedEngine(planted({0: 0, 1: 2, 2: 2}))
    low_scan = driver_for(engine).run([make_task(n_steps=3)], ScanLabeler(ScanConfig(k=2, sc_samples=3, below_threshold="scan"))).labels["s1"]
    assert low_scan.extra["self_confidence"] == pytest.approx(1 / 3) and low_scan.extra["confident"] is False
    assert low_scan.first_error == -1 and low_scan.rollouts_used == 2 + 4  # correct, but scanned
    engine = ScriptedEngine(planted({0: 0}))
    skipped = driver_for(engine).run([make_task(n_steps=3)], ScanLabeler(ScanConfig(sc_samples=3))).labels["s1"]  # skip is the default
    assert skipped.extra["filtered"] == "self_confidence_below_threshold" and skipped.rollouts_used == 2


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
