"""ProcessBench evaluation: loading, the metric, and predictions (MC labelers, judge, sympy, hybrid)."""

from __future__ import annotations

import json
import math

import pytest

from steplabel.flows.config import parse_config
from steplabel.checks.hybrid_config import HybridConfig
from steplabel.checks.judge_config import JudgeConfig
from steplabel.rollouts.engines.base import GenerationRequest, derive_seed
from steplabel.labelling.evaluate import (
    BenchmarkError,
    load_benchmark,
    overall_metrics,
    predict_first_errors,
    processbench_metrics,
)
from tests.scripted_engine import ScriptedEngine

RECORD = {"id": "a", "problem": "What is 2 + 3?", "steps": ["Step 1: x", "Step 2: y"], "label": 1}


def test_load_json_list_and_jsonl(tmp_path):
    as_json = tmp_path / "b.json"
    as_json.write_text(json.dumps([RECORD, {**RECORD, "id": "b", "label": -1}]))
    assert [r["id"] for r in load_benchmark(as_json)] == ["a", "b"]
    as_jsonl = tmp_path / "b.jsonl"
    as_jsonl.write_text(json.dumps(RECORD) + "\n\n" + json.dumps({**RECORD, "label": 0}) + "\n")
    assert [r["label"] for r in load_benchmark(as_jsonl)] == [1, 0]


@pytest.mark.parametrize(("record", "message"), [
    ({"problem": "q", "steps": ["a"]}, "missing field 'label'"),
    ({**RECORD, "label": 2}, r"'label' must be an integer in \[-1, 1\]"),
    ({**RECORD, "steps": []}, "'steps' must be a non-empty list"),
    ({**RECORD, "label": True}, "'label' must be an integer"),
])
def test_bad_records_are_named(tmp_path, record, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORD) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(BenchmarkError, match=rf"bad.jsonl: line 2: {message}"):
        load_benchmark(path)
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(BenchmarkError, match="bad.json: record 0: a record must be an object"):
        load_benchmark(tmp_path / "bad.json")


def test_processbench_metrics_hand_computed():
    m = processbench_metrics([2, 0, -1, -1, 1], [2, 1, -1, 0, 1])
    assert m["acc_err"] == pytest.approx(2 / 3) and m["acc_cor"] == 0.5
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert (m["n"], m["n_err"], m["n_cor"]) == (5, 3, 2)
    assert math.isnan(processbench_metrics([1], [0])["f1"])  # no correct samples: acc_cor undefined
    assert math.isnan(processbench_metrics([-1], [-1])["acc_err"])
    with pytest.raises(ValueError):
        processbench_metrics([1], [])


def test_no_answer_is_wrong_on_both_subsets_and_dropped_records_are_not_scored():
    m = processbench_metrics([-1, -1, 2, 2], [None, -1, None, 2])
    assert (m["acc_cor"], m["acc_err"], m["n_dropped"]) == (0.5, 0.5, 0)  # None is not "no error"
    m = processbench_metrics([-1, 2, 1, -1], ["self_confidence_below_threshold", 2, "scan_no_zero_mc", -1])
    assert (m["acc_err"], m["acc_cor"], m["f1"]) == (1.0, 1.0, 1.0)
    assert (m["n"], m["n_err"], m["n_cor"], m["n_dropped"]) == (4, 1, 1, 2)


def test_overall_is_the_mean_of_per_file_f1_not_the_pooled_f1():
    small = processbench_metrics([1, -1], [1, -1])  # F1 1.0
    large = processbench_metrics([1] * 4 + [-1] * 4, [1, 1, 0, 0, -1, -1, 0, 0])  # F1 0.5
    overall = overall_metrics([small, large])
    assert overall["f1"] == pytest.approx(0.75) and overall["files"] == 2
    assert (overall["n"], overall["n_err"], overall["n_cor"], overall["n_dropped"]) == (10, 5, 5, 0)
    pooled = processbench_metrics([1, -1] + [1] * 4 + [-1] * 4, [1, -1, 1, 1, 0, 0, -1, -1, 0, 0])
    assert pooled["f1"] == pytest.approx(0.6)  # a different number, shown as "pooled"
    assert math.isnan(overall_metrics([small, processbench_metrics([1], [1])])["f1"])
    with pytest.raises(ValueError):
        overall_metrics([])


def test_an_empty_json_list_is_an_error_like_an_empty_jsonl(tmp_path):
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "empty.jsonl").write_text("\n")
    for name in ("empty.json", "empty.jsonl"):
        with pytest.raises(BenchmarkError, match=f"{name}: no records"):
            load_benchmark(tmp_path / name)


def test_records_a_labeler_drops_are_predicted_as_the_reason_not_scored(grader):
    # SCAN on a question its completer fails 2 times in 3: SC under 0.75, every record is dropped.
    def weak(request: GenerationRequest, index: int) -> str:
        return "The answer is 5." if index % 3 == 0 else "The answer is 7."

    config = parse_config({"prompt": {"template": "Question: {question}\n"},
                           "labeler": {"name": "scan", "k": 2, "sc_samples": 6}})
    records = [{**HYBRID_RECORDS[1], "id": "wrong"}, {**HYBRID_RECORDS[2], "id": "right"}]
    for method in ("scan", "hybrid"):
        predictions = predict_first_errors(records, method, ScriptedEngine(weak), grader, config)
        assert predictions == ["self_confidence_below_threshold"] * 2, method
        metrics = processbench_metrics([r["label"] for r in records], predictions)
        assert metrics["n_dropped"] == 2 and metrics["n_err"] == metrics["n_cor"] == 0


def script(request: GenerationRequest, index: int) -> str:
    body = request.prompt.split("Question:")[-1]
    return "The answer is 7." if "wrong" in body else "The answer is 5."


def test_predict_first_errors_with_math_shepherd_and_binary_search():
    config = parse_config({"prompt": {"template": "Question: {question}\n"}, "labeler": {"name": "math_shepherd", "k": 2}})
    records = [
        {"id": "e", "problem": "What is 2 + 3?", "answer": "5", "label": 1,
         "steps": ["Step 1: fine", "Step 2: wrong", "Step 3: more", "Step 4: The answer is 7."]},
        {"id": "c", "problem": "What is 2 + 3?", "reference": "5", "label": -1,
         "steps": ["Step 1: fine", "Step 2: The answer is 5."], "final_answer_correct": True},
    ]
    from steplabel.rollouts.grading import Grader

    grader = Grader()
    try:
        for method in ("math_shepherd", "omegaprm", "scan", "rpe"):
            engine = ScriptedEngine(script)
            assert predict_first_errors(records, method, engine, grader, config) == [1, -1], method
        with pytest.raises(BenchmarkError, match="record x: method 'omegaprm' needs the gold answer"):
            predict_first_errors([{**records[0], "id": "x", "answer": None}], "omegaprm", ScriptedEngine(script), grader, config)
        with pytest.raises(ValueError, match="unknown method"):
            predict_first_errors(records, "magic", ScriptedEngine(script), grader, config)
    finally:
        grader.close()


# ---------------------------------------------------------------- judge, sympy, hybrid

APPLES = {"id": "apples", "problem": "Tom has 12 apples, buys 5 and gives away 4. How many are left?", "label": 2,
          "steps": ["Tom has 12 apples and buys 5 more.", "Now he has 12 + 5 = 17 apples.",
                    "He gives away 4, so 17 - 4 = 12 are left.", "The answer is 12."]}
PENS = {"id": "pens", "problem": "12 boxes of 5 pens are shared over 4 days. Pens per day?", "label": -1,
        "steps": ["There are 12 * 5 = 60 pens.", "Per day: 60 / 4 = 15.", "The answer is 15."]}


def test_sympy_method_needs_no_engine():
    assert predict_first_errors([APPLES, PENS], "sympy", None, None, parse_config({})) == [2, -1]
    m = processbench_metrics([r["label"] for r in (APPLES, PENS)], [2, -1])
    assert m["f1"] == 1.0


def judge_script(request: GenerationRequest, index: int) -> str:
    if "17 - 4 = 12" in request.prompt:
        return "Paragraph 2: 17 - 4 is 13, not 12.\n\\boxed{2}"
    if "60 / 4" in request.prompt:
        return "All paragraphs are correct. \\boxed{-1}"
    return "I am not sure."


def test_judge_method_on_a_scripted_engine():
    config = parse_config({"seed": 5})
    unsure = {**RECORD, "id": "unsure"}
    engine = ScriptedEngine(judge_script)
    predictions = predict_first_errors([APPLES, PENS, unsure], "judge", engine, None, config,
                                       judge_config=JudgeConfig(samples=3))
    assert predictions == [2, -1, None]  # unparsable -> None, counted wrong by the metric
    assert len(engine.calls) == 1 and [r.n for r in engine.calls[0]] == [3, 3, 3]
    assert engine.calls[0][0].seed == derive_seed(5, "r0", "judge")
    assert "<paragraph_2>\nHe gives away 4" in engine.calls[0][0].prompt
    m = processbench_metrics([2, -1, 1], predictions)
    assert m["acc_err"] == 0.5 and m["acc_cor"] == 1.0
    failing = ScriptedEngine(judge_script, fail_when=lambda r: "timeout after 3 retries" if "60 / 4" in r.prompt else None)
    with pytest.raises(RuntimeError, match="record pens: judging failed: .*timeout after 3 retries"):
        predict_first_errors([APPLES, PENS], "judge", failing, None, config)
    with pytest.raises(ValueError, match="needs an engine"):
        predict_first_errors([APPLES], "judge", None, None, config)


HYBRID_RECORDS = [
    # MC cannot see the arithmetic slip (every rollout still reaches 5); sympy refutes step 0.
    {"id": "slip", "problem": "What is 2 + 3?", "answer": "5", "label": 0, "final_answer_correct": True,
     "steps": ["Step 1: 2 + 3 = 6.", "Step 2: oops, it is 5.", "Step 3: The answer is 5."]},
    # sympy sees nothing checkable; MC finds the error.
    {"id": "mc", "problem": "What is 2 + 3?", "answer": "5", "label": 1, "final_answer_correct": False,
     "steps": ["Step 1: fine", "Step 2: wrong", "Step 3: The answer is 7."]},
    {"id": "ok", "problem": "What is 2 + 3?", "answer": "5", "label": -1, "final_answer_correct": True,
     "steps": ["Step 1: fine", "Step 2: The answer is 5."]},
]


@pytest.fixture
def grader():
    from steplabel.rollouts.grading import Grader

    g = Grader()
    yield g
    g.close()


def test_hybrid_method_combines_mc_values_with_sympy(grader):
    config = parse_config({"prompt": {"template": "Question: {question}\n"}, "labeler": {"name": "math_shepherd", "k": 2}})
    engine = ScriptedEngine(script)
    assert predict_first_errors(HYBRID_RECORDS, "math_shepherd", engine, grader, config) == [-1, 1, -1]
    assert predict_first_errors(HYBRID_RECORDS, "sympy", None, None, config) == [0, -1, -1]
    engine = ScriptedEngine(script)
    assert predict_first_errors(HYBRID_RECORDS, "hybrid", engine, grader, config) == [0, 1, -1]
    assert engine.samples == 2 * (2 + 2 + 1)  # k = 2 rollouts from every prefix but the last step
    # a verified step may rescue a step the labeler called bad only when asked to; nothing is verified here
    assert predict_first_errors(HYBRID_RECORDS, "hybrid", ScriptedEngine(script), grader, config,
                                hybrid_config=HybridConfig(verified_rescues=True)) == [0, 1, -1]
    assert predict_first_errors(HYBRID_RECORDS, "hybrid", ScriptedEngine(script), grader, config,
                                mc_method="omegaprm") == [0, 1, -1]
    with pytest.raises(ValueError, match="unknown MC method"):
        predict_first_errors(HYBRID_RECORDS, "hybrid", ScriptedEngine(script), grader, config, mc_method="judge")
    with pytest.raises(ValueError, match="needs a grader"):
        predict_first_errors(HYBRID_RECORDS, "hybrid", ScriptedEngine(script), None, config)
    with pytest.raises(ValueError, match="needs an engine"):
        predict_first_errors(HYBRID_RECORDS, "hybrid", None, grader, config)
    with pytest.raises(BenchmarkError, match="record x: method 'math_shepherd' needs the gold answer"):
        predict_first_errors([{**HYBRID_RECORDS[0], "id": "x", "answer": None}], "hybrid", ScriptedEngine(script),
                             grader, config)
