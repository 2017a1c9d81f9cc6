from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steplabel.rollouts.sources_config import BuiltinSource, FileSource
from steplabel.rollouts.builtin_problems import generate_problems
from steplabel.rollouts.sources import load_problems

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_builtin_problems_are_deterministic_exact_and_distinct():
    first, again = generate_problems(40, seed=3), generate_problems(40, seed=3)
    assert first == again and len({p.question for p in first}) == 40
    assert generate_problems(5, seed=4) != generate_problems(5, seed=3)
    problems, rejects = load_problems(BuiltinSource(num_problems=6))
    assert len(problems) == 6 and rejects == []
    assert all(p.reference == str(g.answer) and int(p.reference) >= 0 for p, g in zip(problems, generate_problems(6)))


def test_builtin_answers_follow_from_the_text():
    problem = generate_problems(1, seed=0)[0]  # "X has a items. buys b more ... gives away c" -> a + b - c
    a, b, c = [int(token.strip(".")) for token in problem.question.split() if token.strip(".").isdigit()]
    assert problem.answer == a + b - c


def test_jsonl_gsm8k_and_math_styles_and_malformed_lines(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"question": "Q1 apples?", "answer": "He has 3+4=7 apples.\n#### 1,007"}),
        json.dumps({"question": "Q2 boxed?", "answer": "so \\boxed{\\frac{1}{2}}"}),
        "not json at all",
        json.dumps(["a", "list"]),
        json.dumps({"question": "Q1 apples?", "answer": "#### 9"}),
        json.dumps({"question": "Q3", "answer": "   "}),
    ]
    path.write_text("\n".join(lines) + "\n")
    problems, rejects = load_problems(FileSource(path=str(path)))
    assert [(p.question, p.reference) for p in problems] == [("Q1 apples?", "1007"), ("Q2 boxed?", "\\frac{1}{2}")]
    assert [(r.reason, r.detail.split(": ", 1)[0]) for r in rejects] == [
        ("bad_input", f"{path}:3"),
        ("bad_input", f"{path}:4"),
        ("duplicate_problem", f"{path}:5"),
        ("bad_input", f"{path}:6"),
    ]
    assert "not json at all" in rejects[0].payload


def test_parquet_with_custom_fields_and_limit(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"problem": ["A?", "B?", "C?"], "answer": ["1", "2", "3"]}), path)
    problems, rejects = load_problems(FileSource(path=str(path), question_field="problem", limit=2))
    assert [p.reference for p in problems] == ["1", "2"] and rejects == []
    assert problems[0].problem_id != problems[1].problem_id


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_problems(FileSource(path=str(tmp_path / "nope.jsonl")))


@pytest.mark.skipif(not (SHARED / "gsm8k" / "test.jsonl").exists(), reason="../shared/data is not present")
def test_real_gsm8k_and_math500_load_without_rejects():
    gsm, gsm_rejects = load_problems(FileSource(path=str(SHARED / "gsm8k" / "test.jsonl")))
    assert len(gsm) == 1319 and gsm_rejects == []
    assert all(p.reference.lstrip("-").replace(".", "", 1).isdigit() for p in gsm)
    math, math_rejects = load_problems(FileSource(path=str(SHARED / "math500" / "test.jsonl"), question_field="problem"))
    assert len(math) == 500 and math_rejects == []


def test_json_list_source_and_a_non_list_json(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"question": "A?", "answer": "1"}, {"question": "", "answer": "2"}]))
    problems, rejects = load_problems(FileSource(path=str(path)))
    assert [p.reference for p in problems] == ["1"]
    assert rejects[0].reason == "bad_input" and rejects[0].detail.startswith(f"{path}[1]:")
    bad = tmp_path / "obj.json"
    bad.write_text(json.dumps({"question": "A?"}))
    with pytest.raises(ValueError, match="must hold a list of objects"):
        load_problems(FileSource(path=str(bad)))


def test_a_non_utf8_line_is_a_bad_input_reject_naming_file_and_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    good = json.dumps({"question": "Q1 apples?", "answer": "#### 7"}).encode()
    path.write_bytes(good + b"\n" + b'{"question": "caf\xe9?", "answer": "#### 1"}\n' + b"\n" + good.replace(b"Q1", b"Q2") + b"\n")
    problems, rejects = load_problems(FileSource(kind="file", path=str(path), answer_style="gsm8k"))
    assert [p.question for p in problems] == ["Q1 apples?", "Q2 apples?"]
    assert [(r.reason, r.detail) for r in rejects] == [("bad_input", f"{path}:2: not UTF-8 text (byte 0xe9 at column 18)")]
    assert "caf\ufffd?" in rejects[0].payload


def test_a_non_utf8_json_list_is_one_clear_error(tmp_path):
    path = tmp_path / "latin.json"
    path.write_bytes(b'[{"question": "caf\xe9?", "answer": "1"}]')
    with pytest.raises(ValueError, match=r"latin.json: not UTF-8 text \(byte offset 18\)"):
        load_problems(FileSource(kind="file", path=str(path)))
