from __future__ import annotations

import json

from typer.testing import CliRunner

from steplabel.cli.main import app


def test_grade_writes_one_verdict_per_line_in_order(tmp_path):
    source = tmp_path / "in.jsonl"
    rows = [
        {"response": "Step 1: 2 + 3 = 5.\nThe answer is 5.", "reference": "5"},
        {"response": "so the result is \\boxed{\\frac{1}{2}}", "reference": "0.5"},
        {"response": "The answer is 21.", "reference": "1"},
        "garbage line",
        {"response": "#### 1,234", "reference": "1234"},
        {"response": "I give up", "reference": "7"},
    ]
    source.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "verdicts.jsonl"
    result = CliRunner().invoke(app, ["grade", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v["line"] for v in verdicts] == [1, 2, 3, 4, 5, 6]
    assert [v["correct"] for v in verdicts] == [True, True, False, None, True, False]
    assert [v["extracted"] for v in verdicts] == ["5", "\\frac{1}{2}", "21", None, "1234", None]
    assert verdicts[0]["layer"] == "string" and verdicts[5]["layer"] == "no_answer"
    assert "in.jsonl:4" in verdicts[3]["error"]
    assert "6 lines: 3 correct, 2 incorrect, 1 unreadable" in result.output


def test_bad_config_exits_with_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("sampling:\n  num_solution: 3\n")
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--out", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "sampling.num_solution: Extra inputs are not permitted" in result.output


def test_inspect_of_an_empty_directory_says_so(tmp_path):
    result = CliRunner().invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 1 and "no committed version yet" in result.output
    missing = CliRunner().invoke(app, ["inspect", str(tmp_path / "nope"), "--json"])
    assert missing.exit_code == 2 and "no such directory" in missing.output


def test_evaluate_scores_each_file_and_writes_predictions(tmp_path):
    """sympy needs no engine: it predicts the first step it refutes. Two files, so overall (mean of files)
    and pooled are both reported; the loop lives in steplabel.labelling.evaluate.evaluate_files."""
    wrong = {"id": "w", "problem": "p", "steps": ["2 + 2 = 4", "4 * 3 = 13", "so 13"], "label": 1}
    right = {"id": "r", "problem": "p", "steps": ["2 + 2 = 4", "4 * 3 = 12"], "label": -1}
    missed = {"id": "m", "problem": "p", "steps": ["the answer is seven"], "label": 0}
    one, two = tmp_path / "a.jsonl", tmp_path / "b.json"
    one.write_text("\n".join(json.dumps(r) for r in (wrong, right)) + "\n")
    two.write_text(json.dumps([missed, right]))
    out = tmp_path / "pred.jsonl"
    result = CliRunner().invoke(app, ["evaluate", "-b", str(one), "-b", str(two), "-m", "sympy", "--json",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files"][str(one)]["f1"] == 1.0 and report["files"][str(two)]["f1"] == 0.0
    assert report["overall"]["f1"] == 0.5 and report["pooled"]["acc_err"] == 0.5
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"id": "w", "label": 1, "predicted": 1}, {"id": "r", "label": -1, "predicted": -1},
        {"id": "m", "label": 0, "predicted": -1}, {"id": "r", "label": -1, "predicted": -1}]
