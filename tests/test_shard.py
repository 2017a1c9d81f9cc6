"""One shard end to end on a scripted engine: every sample ends labelled or rejected with a reason."""

from __future__ import annotations

import json
import re

from steplabel.flows.config import parse_config
from steplabel.labelling.shard import RunContext, ShardPlan, label_shard, plan_shards
from steplabel.rollouts.engines.base import GenerationRequest
from steplabel.rollouts.grading import Grader
from steplabel.rollouts.sources import Problem
from tests.scripted_engine import ScriptedEngine

CONFIG = parse_config({"sampling": {"num_solutions": 5}, "labeler": {"name": "math_shepherd", "k": 2}, "shard_size": 2})
PROBLEMS = (
    Problem("p1", "Ann has 2 apples and buys 3 more. How many apples does she have?", "5", "test"),
    Problem("p2", "Bob has 9 cards and gives away 4. How many cards are left?", "5", "test"),
)

SOLUTIONS = [
    "Step 1: 2 + 3 = 5.\nStep 2: So 5 apples.\nThe answer is 5.",  # labelled, correct
    "Step 1: 2 + 3 = 6.\nThe answer is 6.",  # labelled, wrong
    "Step 1: 2 + 3 = 5.\nStep 2: So 5 apples.\nThe answer is 5.",  # duplicate of the first
    "Step 1: I am not sure what to do here",  # the last-number rule reads "1": labelled, wrong
    "Just talk without steps or numbers",  # one preamble step and no answer at all -> rejected
]


def script(request: GenerationRequest, index: int) -> str:
    tail = request.prompt.split("Question:")[-1]
    if not re.search(r"^Step \d+:", tail, flags=re.MULTILINE):
        return SOLUTIONS[index]
    return "Step 3: done.\nThe answer is 5." if index == 0 else "Step 3: hmm.\nThe answer is 4."


def run_shard(engine: ScriptedEngine):
    plan = ShardPlan("shard-a", PROBLEMS)
    with Grader(timeout_s=5) as grader:
        return label_shard(plan, CONFIG, RunContext.now("run-x", CONFIG.hash()), policy=engine, completer=engine, grader=grader)


def test_every_sample_is_labelled_or_rejected():
    tables, report = run_shard(ScriptedEngine(script))
    labels, rejects = tables["step_labels"].to_pylist(), tables["rejects"].to_pylist()
    assert len(labels) + len(rejects) == len(PROBLEMS) * 5
    assert sorted(r["reason"] for r in rejects) == ["duplicate_solution"] * 2 + ["no_final_answer"] * 2
    assert all(r["detail"] and r["stage"] == "sampling" for r in rejects)
    good = next(r for r in labels if r["problem_id"] == "p1" and r["final_correct"])
    assert good["completions"] == ["Step 1: 2 + 3 = 5.", "Step 2: So 5 apples.\nThe answer is 5."]
    # k=2 from the one-step prefix: one sample right, one wrong -> MC 0.5, then the final answer.
    assert good["mc_scores"] == [0.5, 1.0] and good["labels"] == [True, True] and good["first_error"] == -1
    assert good["rollouts_used"] == 2 and good["labeler"] == "math_shepherd" and good["run_id"] == "run-x"
    wrong = next(r for r in labels if r["problem_id"] == "p1" and not r["final_correct"])
    assert wrong["labels"] == [False] and wrong["first_error"] == 0 and wrong["final_answer"] == "6"
    assert report.solutions == len(labels) and report.rejects == len(rejects)


def test_engine_failure_becomes_rejects_not_placeholders():
    engine = ScriptedEngine(script, fail_when=lambda r: "timed out after 120 s" if "Bob" in r.prompt else None)
    tables, _ = run_shard(engine)
    rejects = tables["rejects"].to_pylist()
    problem_level = [r for r in rejects if r["problem_id"] == "p2"]
    assert len(problem_level) == 1 and problem_level[0]["reason"] == "engine_error"
    assert "timed out" in problem_level[0]["detail"]
    assert all(r["problem_id"] == "p1" for r in tables["step_labels"].to_pylist())


def test_shard_ids_are_deterministic_and_config_dependent():
    problems = [Problem(f"p{i}", "q", "1", "t") for i in range(5)]
    first, again = plan_shards(problems, 2, "h1"), plan_shards(problems, 2, "h1")
    assert [p.shard_id for p in first] == [p.shard_id for p in again]
    assert [len(p.problems) for p in first] == [2, 2, 1]
    assert first[0].shard_id != plan_shards(problems, 2, "h2")[0].shard_id


def test_sympy_verification_fills_tool_columns():
    tables, _ = run_shard(ScriptedEngine(script))
    rows = {(r["problem_id"], r["final_answer"]): r for r in tables["step_labels"].to_pylist()}
    wrong = rows[("p1", "6")]  # "Step 1: 2 + 3 = 6."
    assert wrong["tool_verdicts"] == ["refuted"] and wrong["tool_first_error"] == 0
    assert "2 + 3 = 6" in wrong["tool_evidence"][0]
    right = rows[("p1", "5")]
    assert right["tool_verdicts"][0] == "verified" and right["tool_first_error"] == -1


def judged_script(request: GenerationRequest, index: int) -> str:
    """Answers judge prompts with 'first error at paragraph 0', everything else as `script`."""
    if "<paragraph_0>" in request.prompt:
        return "Paragraph 0 is already wrong.\n\\boxed{0}"
    return script(request, index)


def test_judge_stage_keeps_agreeing_rows_and_rejects_the_rest():
    config = CONFIG.model_copy(update={"judge": parse_config({"judge": {}}).judge})
    engine = ScriptedEngine(judged_script)
    with Grader(timeout_s=5) as grader:
        tables, _ = label_shard(ShardPlan("shard-a", PROBLEMS), config, RunContext.now("run-x", config.hash()),
                                policy=engine, completer=engine, grader=grader, judge=engine)
    kept = tables["step_labels"].to_pylist()
    judged_rejects = [r for r in tables["rejects"].to_pylist() if r["stage"] == "judge"]
    # MC first errors: correct solutions -1, the two wrong ones 0; the judge always says 0.
    assert sorted(r["first_error"] for r in kept) == [0, 0, 0, 0]
    assert all(r["consensus"] is True and r["judge_first_error"] == 0 and r["judge_model"] == "scripted" for r in kept)
    assert len(judged_rejects) == 2
    assert all(r["reason"] == "consensus_disagree" and "mc=-1 judge=0" in r["detail"] for r in judged_rejects)


def coding_script(request: GenerationRequest, index: int) -> str:
    """Writes a failing check for steps that mention 'apples', a passing one otherwise."""
    if "```python" in request.prompt or "<verify>" in request.prompt:
        step = request.prompt.rsplit("Step 1:", 1)[-1]
        return "```python\nassert 1 == 2\n```" if "apples" in step else "```python\nassert 2 + 2 == 4\n```"
    return script(request, index)


def test_code_checks_fill_steps_sympy_left_unknown():
    config = parse_config({**CONFIG.model_dump(mode="json"), "verification": {"sympy": {}, "code": {"wall_s": 10}}})
    engine = ScriptedEngine(coding_script)
    with Grader(timeout_s=5) as grader:
        tables, _ = label_shard(ShardPlan("shard-a", PROBLEMS), config, RunContext.now("run-x", config.hash()),
                                policy=engine, completer=engine, grader=grader)
    code_calls = [call for call in engine.calls if any("<verify>" in r.prompt for r in call)]
    checked = [r for r in tables["step_labels"].to_pylist() if r["tool_checks"]]
    assert len(checked) > 1 and len(code_calls) == 1  # every row's code checks went out in one wave
    row = next(r for r in tables["step_labels"].to_pylist() if r["final_answer"] == "5")
    # Step 0 "2 + 3 = 5." is verified by sympy; step 1 "So 5 apples." has no claim, so the code check decides.
    assert row["tool_verdicts"] == ["verified", "refuted"] and row["tool_first_error"] == 1
    assert "AssertionError" in row["tool_evidence"][1]
    [check] = json.loads(row["tool_checks"])  # only step 1 needed code; its code and sandbox output are kept
    assert check["step"] == 1 and check["verdict"] == "refuted" and check["code"] == "assert 1 == 2"
    assert check["status"] == "error" and check["exit_code"] != 0 and "AssertionError" in check["stderr"]


def test_an_unparsable_judgement_is_rejected_with_its_raw_output():
    def mumbling_judge(request: GenerationRequest, index: int) -> str:
        return "Hmm, hard to say." if "<paragraph_0>" in request.prompt else script(request, index)

    config = CONFIG.model_copy(update={"judge": parse_config({"judge": {}}).judge})
    engine = ScriptedEngine(mumbling_judge)
    with Grader(timeout_s=5) as grader:
        tables, _ = label_shard(ShardPlan("shard-a", PROBLEMS), config, RunContext.now("run-x", config.hash()),
                                policy=engine, completer=engine, grader=grader, judge=engine)
    assert tables["step_labels"].num_rows == 0  # nothing guessed: no judged row without a judgement
    judged = [r for r in tables["rejects"].to_pylist() if r["stage"] == "judge"]
    assert len(judged) == 6 and all("unparsable" in r["detail"] for r in judged)
    assert all(json.loads(r["payload"])["judge_rationale"] == "Hmm, hard to say." for r in judged)


def test_consensus_truncation_cuts_every_per_step_column():
    def two_wrong_steps(request: GenerationRequest, index: int) -> str:
        if "<paragraph_0>" in request.prompt:
            return "\\boxed{0}"
        if re.search(r"^Step \d+:", request.prompt.split("Question:")[-1], flags=re.MULTILINE):
            return "Step 3: still wrong.\nThe answer is 9."
        return f"Step 1: 2 + 3 = {6 + index}.\nStep 2: so it is {6 + index}.\nThe answer is {6 + index}."

    stage = parse_config({"judge": {"consensus": {"truncate_after_error": True}}}).judge
    config = CONFIG.model_copy(update={"judge": stage})
    engine = ScriptedEngine(two_wrong_steps)
    with Grader(timeout_s=5) as grader:
        tables, _ = label_shard(ShardPlan("shard-a", PROBLEMS[:1]), config, RunContext.now("run-x", config.hash()),
                                policy=engine, completer=engine, grader=grader, judge=engine)
    rows = tables["step_labels"].to_pylist()
    assert len(rows) == 5 and all(r["first_error"] == 0 and r["judge_first_error"] == 0 for r in rows)
    for row in rows:  # everything after the first error is cut, in every per-step column
        assert len(row["completions"]) == len(row["labels"]) == len(row["mc_scores"]) == len(row["tool_verdicts"]) == 1
        assert len(row["labeler_labels"]) == 1
        assert row["labels"] == [False]


def lucky_script(request: GenerationRequest, index: int) -> str:
    """The quick-start failure: a right final answer reached through false arithmetic; every rollout agrees."""
    if re.search(r"^Step \d+:", request.prompt.split("Question:")[-1], flags=re.MULTILINE):
        return "Step 3: so 5.\nThe answer is 5."
    return "Step 1: 2 + 3 = 6.\nStep 2: 6 - 1 = 5.\nThe answer is 5."


def lucky_rows(config):
    engine = ScriptedEngine(lucky_script)
    with Grader(timeout_s=5) as grader:
        tables, _ = label_shard(ShardPlan("shard-a", PROBLEMS[:1]), config, RunContext.now("run-x", config.hash()),
                                policy=engine, completer=engine, grader=grader)
    [row] = tables["step_labels"].to_pylist()  # the other four samples are duplicates of it
    return row


def test_by_default_a_refuted_step_is_never_exported_as_good():
    row = lucky_rows(CONFIG)
    assert row["final_correct"] and row["mc_scores"] == [1.0, 1.0]
    assert row["tool_verdicts"] == ["refuted", "verified"]
    assert row["labeler_labels"] == [True, True]  # MC alone: both good, kept beside the exported labels
    # the refuted step and the step after it are bad; first_error follows the exported labels
    assert row["labels"] == [False, False] and row["first_error"] == 0
    assert row["soft_labels"] == [0.0, 0.0]  # the steps the tool made bad lose their soft targets


def test_hybrid_null_exports_the_labelers_labels_as_they_are():
    config = parse_config({**CONFIG.model_dump(mode="json"), "verification": {"sympy": {}, "hybrid": None}})
    row = lucky_rows(config)
    assert row["tool_verdicts"] == ["refuted", "verified"]
    assert row["labels"] == row["labeler_labels"] == [True, True] and row["first_error"] == -1
    assert row["soft_labels"] == [1.0, 1.0]


def test_deferred_verification_is_idempotent():
    from steplabel.labelling.shard import verify_table

    engine = ScriptedEngine(lucky_script)
    with Grader(timeout_s=5) as grader:
        tables, _ = label_shard(ShardPlan("shard-a", PROBLEMS[:1]), CONFIG, RunContext.now("run-x", CONFIG.hash()),
                                policy=engine, completer=engine, grader=grader, verify=False)
    staged = tables["step_labels"]
    assert staged.column("labels").to_pylist() == [[True, True]] and staged.column("tool_verdicts").null_count == 1
    once = verify_table(staged, CONFIG)
    assert once.column("labels").to_pylist() == [[False, False]]
    assert verify_table(once, CONFIG).to_pylist() == once.to_pylist()
