"""Exporters: exact rows per format, round trips, deterministic problem-level splits, files on disk,
loading with `datasets` and (when trl is importable) TRL's own PRM tokenization."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steplabel.storage.exporters import (
    FORMATS,
    MATH_SHEPHERD_TAG,
    OPENR_STEP_TAG,
    assign_splits,
    export_version,
    format_description,
    from_math_shepherd,
    from_openr,
    from_prm800k,
    get_format,
    labeler_uuid,
    parse_split_ratio,
    soft_targets,
    split_of,
    task_name,
    to_math_shepherd,
    to_openr,
    to_prm800k,
    to_trl,
)
from steplabel.storage.store import ShardStore
from tests.factories import make_step_label_rows

CFG = {"name": "t", "source": {"kind": "hf", "dataset": "openai/gsm8k"}, "engine": {"kind": "openai", "api_key": "sk-x"}}


def _rows(n: int = 6, k: int = 3, **kw) -> pl.DataFrame:
    return pl.from_arrow(make_step_label_rows(n, steps_per_solution=k, **kw))  # type: ignore[return-value]


def _one(prompt: str, steps: list[str], labels: list[bool | None], final_answer: str | None = None, **extra) -> pl.DataFrame:
    base = make_step_label_rows(1).to_pylist()[0]
    base.update(prompt=prompt, completions=steps, labels=labels, final_answer=final_answer, **extra)
    return pl.from_arrow(pa.Table.from_pylist([base], schema=make_step_label_rows(1).schema))  # type: ignore


def _store(tmp_path: Path, shards: int = 3, n: int = 8, config: dict | None = None) -> ShardStore:
    store = ShardStore(tmp_path / "store")
    for s in range(shards):
        sid = f"shard-{s:04d}"
        store.stage("r1", sid, {"step_labels": make_step_label_rows(n, shard_id=sid, steps_per_solution=3)})
    store.commit("r1", config=config or CFG, config_hash="cfg-test", code_version="test")
    return store


# ---------------------------------------------------------------- exact rows
def test_trl_exact_row_and_types():
    df = _one("What is 2+2?", ["2+2=4.", "The answer is 4."], [True, False])
    out = to_trl(df)
    assert out.columns == ["prompt", "completions", "labels"]
    assert out.schema["labels"] == pl.List(pl.Boolean)
    assert out.to_dicts() == [{"prompt": "What is 2+2?", "completions": ["2+2=4.", "The answer is 4."], "labels": [True, False]}]


def test_trl_soft_labels_column():
    df = _one("Q?", ["a", "b"], [True, False], soft_labels=[0.75, 0.125])
    out = to_trl(df, soft_labels=True)
    assert out.columns == ["prompt", "completions", "labels", "soft_labels"]
    assert out.schema["soft_labels"] == pl.List(pl.Float32)
    assert out["soft_labels"].to_list() == [[0.75, 0.125]]
    assert out["labels"].to_list() == [[True, False]]
    with pytest.raises(ValueError, match="no soft target for every step"):
        to_trl(_one("Q?", ["a", "b"], [True, False], soft_labels=[0.5]), soft_labels=True)


def test_soft_targets_follow_the_labeler_mode():
    assert soft_targets({"labeler": {"name": "omegaprm", "label_mode": "soft"}})
    assert soft_targets({"labeler": {"name": "omegaprm", "label_mode": "pairwise"}})
    assert not soft_targets({"labeler": {"name": "omegaprm", "label_mode": "hard"}})
    assert soft_targets({"labeler": {"name": "math_shepherd", "label_mode": "soft"}})
    assert not soft_targets({"labeler": {"name": "math_shepherd", "label_mode": "hard"}})
    assert soft_targets({"labeler": {"name": "scan"}}) and soft_targets({"labeler": {"name": "rpe"}})
    assert not soft_targets(None)


def test_math_shepherd_exact_row_answer_on_the_last_step_line():
    df = _one("What is 2+2?", ["2+2=4.", "So the sum is 4."], [True, False], final_answer="4")
    row = to_math_shepherd(df, task="GSM8K").to_dicts()[0]
    assert row == {
        "input": "What is 2+2? Step 1: 2+2=4. ки\nStep 2: So the sum is 4. The answer is: 4 ки",
        "label": "What is 2+2? Step 1: 2+2=4. +\nStep 2: So the sum is 4. The answer is: 4 -",
        "task": "GSM8K",
    }
    back = from_math_shepherd(to_math_shepherd(df))
    assert back.to_dicts() == [{"prompt": "What is 2+2?", "completions": ["2+2=4.", "So the sum is 4."],
                                "labels": [True, False], "final_answer": "4"}]
    # a last step that already states the answer upstream's way gets no second answer line
    same = _one("Q?", ["x. The answer is: 4"], [True], final_answer="4")
    assert to_math_shepherd(same)["input"][0] == "Q? Step 1: x. The answer is: 4 ки"


def test_math_shepherd_parses_like_upstream_converters():
    """openr's preprocess splits at 'Step 1: ' and 'Step \\d*:', strips, cuts at 'ки' and reads the last char of the label."""
    df = _one("Q?", ["a = 1.", "b = 2.", "So 3."], [True, True, False], final_answer="3")
    row = to_math_shepherd(df).to_dicts()[0]
    q, rest = row["input"].split("Step 1: ")
    steps = [s.strip() for s in re.sub(r"Step \d*:", "च", rest).split("च")]
    assert q.strip() == "Q?"
    assert [s[: s.find(MATH_SHEPHERD_TAG)].strip() for s in steps] == ["a = 1.", "b = 2.", "So 3. The answer is: 3"]
    _, lrest = row["label"].split("Step 1: ")
    assert [s.strip()[-1] for s in re.sub(r"Step \d*:", "च", lrest).split("च")] == ["+", "+", "-"]


def test_math_shepherd_labels_sit_where_trl_converter_looks():
    """TRL's examples/datasets/math_shepherd.py replaces 'ки' by one character and reads the label at its index."""
    df = _one("Q?", ["a", "b", "c"], [True, False, False], final_answer="7")
    row = to_math_shepherd(df).to_dicts()[0]
    inputs = row["input"].replace(MATH_SHEPHERD_TAG, "ⶻ")
    assert len(inputs) == len(row["label"])
    assert [row["label"][m.start()] for m in re.finditer("ⶻ", inputs)] == ["+", "-", "-"]


def test_math_shepherd_existing_step_prefix_not_doubled():
    df = _one("Q?", ["Step 1: x = 1.", "y = 2."], [True, True])
    row = to_math_shepherd(df).to_dicts()[0]
    assert row["input"] == "Q? Step 1: x = 1. ки\nStep 2: y = 2. ки"
    back = from_math_shepherd(to_math_shepherd(df))
    assert back["completions"][0].to_list() == ["x = 1.", "y = 2."]  # documented normalisation
    assert to_math_shepherd(back).to_dicts()[0]["input"] == row["input"]  # idempotent


def test_prm800k_exact_record_stops_at_first_error_like_phase2():
    df = _one("Q?", ["s1", "s2", "s3"], [True, False, False], final_answer="8", reference_answer="7",
              mc_scores=[0.75, 0.25, 0.5], labeler="omegaprm")
    rec = to_prm800k(df)[0]
    assert list(rec) == ["labeler", "timestamp", "generation", "is_quality_control_question",
                         "is_initial_screening_question", "question", "label"]
    assert rec["labeler"] == labeler_uuid("omegaprm") and len(rec["labeler"]) == 36
    assert rec["timestamp"] == "2025-01-01T00:00:00.000000"  # UTC, no offset, microseconds, as upstream
    assert rec["generation"] is None
    assert rec["question"] == {"problem": "Q?", "ground_truth_solution": None, "ground_truth_answer": "7",
                               "pre_generated_steps": ["s1", "s2", "s3"], "pre_generated_answer": "8",
                               "pre_generated_verifier_score": 0.25}
    assert rec["label"]["finish_reason"] == "found_error"
    assert rec["label"]["steps"] == [
        {"completions": [{"text": "s1", "rating": 1, "flagged": False}], "human_completion": None, "chosen_completion": 0},
        {"completions": [{"text": "s2", "rating": -1, "flagged": False}], "human_completion": None, "chosen_completion": None},
    ]
    every = to_prm800k(df, stop_at_first_error=False)[0]
    assert [s["completions"][0]["rating"] for s in every["label"]["steps"]] == [1, -1, -1]
    assert all(s["chosen_completion"] == 0 for s in every["label"]["steps"])
    good = to_prm800k(_one("Q?", ["s1"], [True]))[0]
    assert good["label"]["finish_reason"] == "solution"
    json.dumps(rec)  # JSON-serialisable


def test_bad_option_is_one_line():
    with pytest.raises(ValueError, match=r"^trl export: option neutral: Input should be 'bad' or 'good'$"):
        to_trl(_one("Q?", ["a"], [True]), neutral="maybe")
    with pytest.raises(ValueError, match=r"^prm800k export: option stop_at_first: Extra inputs are not permitted$"):
        to_prm800k(_one("Q?", ["a"], [True]), stop_at_first=True)
    with pytest.raises(ValueError, match="unknown export format 'csv'; choose one of trl, math-shepherd, prm800k, openr"):
        get_format("csv")


def test_neutral_labels():
    df = _one("Q?", ["s1", "s2", "s3"], [True, None, False])
    assert to_trl(df)["labels"].to_list() == [[True, False, False]]
    assert to_trl(df, neutral="good")["labels"].to_list() == [[True, True, False]]
    assert to_openr(df)["label"].to_list() == [["+", "-", "-"]]
    assert to_math_shepherd(df, neutral="good")["label"][0].endswith("s1 +\nStep 2: s2 +\nStep 3: s3 -")
    rec = to_prm800k(df)[0]
    assert [s["completions"][0]["rating"] for s in rec["label"]["steps"]] == [1, 0, -1]
    assert from_prm800k([rec])["labels"].to_list() == [[True, None, False]]  # neutral survives the round trip


def test_openr_exact_row_matches_openr_join():
    df = _one("Q?", ["s1", "s2"], [True, False])
    row = to_openr(df).to_dicts()[0]
    tag = OPENR_STEP_TAG
    # openr preprocess: f" {step_tag} ".join(steps + [""]).strip(" ")
    assert row == {"question": "Q?", "process": f" {tag} ".join(["s1", "s2", ""]).strip(" "), "label": ["+", "-"]}
    assert row["process"] == f"s1 {tag} s2 {tag}"
    custom = to_openr(df, step_tag="<step>")
    assert custom["process"][0] == "s1 <step> s2 <step>"
    assert from_openr(custom, step_tag="<step>").to_dicts() == [{"prompt": "Q?", "completions": ["s1", "s2"], "labels": [True, False]}]


def test_tag_collisions_rejected():
    with pytest.raises(ValueError, match="step tag"):
        to_math_shepherd(_one("Q?", ["has ки inside"], [True]))
    with pytest.raises(ValueError, match="step tag"):
        to_math_shepherd(_one("Q?", ["fine"], [True], final_answer="ки"))
    with pytest.raises(ValueError, match="step tag"):
        to_openr(_one("Q?", ["a\n\n\n\n\nb"], [True]))


def test_length_mismatch_rejected():
    with pytest.raises(ValueError, match="2 completions but 1 labels"):
        to_trl(_one("Q?", ["a", "b"], [True]))


def test_every_format_is_registered_with_its_upstream_named():
    upstream = {"trl": "trl.experimental.prm", "math-shepherd": "peiyi9979/Math-Shepherd", "prm800k": "openai/prm800k",
                "openr": "preprocess"}
    assert set(FORMATS) == set(upstream)
    for fmt, source in upstream.items():
        assert get_format(fmt).name == fmt
        assert source in format_description(fmt)


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_format(fmt):
    df = pl.concat(
        [
            _rows(7, 3),
            _rows(4, 5, shard_id="shard-0001"),
            _one("Multi\nline  question?", ["line one\nline two", "x + y = z -", "  "], [False, True, True], final_answer="5"),
            _one("No steps?", [], []),
        ]
    )
    spec = get_format(fmt)
    options = {"stop_at_first_error": False} if fmt == "prm800k" else {}
    records = spec.records(df, spec.parse_options(options))
    if spec.jsonl:  # through the JSON text, as it is written
        exported = [json.loads(json.dumps(r)) for r in records]
    else:  # through the Parquet types
        exported = pl.from_arrow(pa.Table.from_pylist(records, schema=spec.schema(spec.parse_options(options))))
    back = spec.read(exported)
    assert back["prompt"].to_list() == df["prompt"].to_list()
    assert back["completions"].to_list() == df["completions"].to_list()
    assert back["labels"].to_list() == df["labels"].to_list()


def test_prm800k_default_round_trip_is_the_prefix_through_the_first_error():
    df = _rows(6, 4)
    records = [json.loads(json.dumps(r)) for r in to_prm800k(df)]
    back = from_prm800k(records)
    for rec, steps, labels, fe, got_steps, got_labels in zip(
        records, df["completions"], df["labels"], df["first_error"], back["completions"], back["labels"]
    ):
        cut = len(steps) if fe < 0 else fe + 1
        assert got_steps.to_list() == steps.to_list()[:cut]
        assert got_labels.to_list() == labels.to_list()[:cut]
        assert rec["question"]["pre_generated_steps"] == steps.to_list()  # every step is still there
        assert rec["label"]["finish_reason"] == ("solution" if fe < 0 else "found_error")


def test_from_prm800k_reads_a_real_phase2_style_line():
    line = {
        "question": {"problem": "P", "ground_truth_answer": "1"},
        "label": {
            "steps": [
                {"completions": [{"text": "a", "rating": 1, "flagged": None}], "human_completion": None, "chosen_completion": 0},
                {"completions": [{"text": "b", "rating": 0}, {"text": "c", "rating": 1}], "human_completion": None, "chosen_completion": 1},
                {"completions": [{"text": "d", "rating": -1}], "human_completion": None, "chosen_completion": None},
            ],
            "finish_reason": "found_error",
        },
    }
    back = from_prm800k([line])
    assert back.to_dicts() == [{"prompt": "P", "completions": ["a", "c", "d"], "labels": [True, True, False], "reference_answer": "1"}]


# ---------------------------------------------------------------- splits
def test_parse_split_ratio():
    assert parse_split_ratio(None) == [("train", 1.0)]
    assert parse_split_ratio("train=0.9, test=0.1") == [("train", 0.9), ("test", 0.1)]
    for bad, msg in [("train=0.9", "sum to 0.9"), ("train=1,train=0", "> 0"), ("tr ain=1", "NAME=FRACTION"),
                     ("train=x", "not a number"), ("a=0.5,a=0.5", "twice")]:
        with pytest.raises(ValueError, match=msg):
            parse_split_ratio(bad)


def test_splits_by_problem_deterministic_and_disjoint():
    df = pl.concat([_rows(40, 2, shard_id=f"s{i}") for i in range(5)])  # 100 problems, 2 solutions each
    ratios = parse_split_ratio("train=0.7,validation=0.2,test=0.1")
    parts = assign_splits(df, ratios)
    assert sum(p.height for p in parts.values()) == df.height
    ids = {k: set(p["problem_id"].to_list()) for k, p in parts.items()}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["validation"]) and not (ids["validation"] & ids["test"])
    assert all(p.height for p in parts.values())
    # independent of row order and of the other rows
    again = assign_splits(df.reverse(), ratios)
    assert {k: set(p["solution_id"].to_list()) for k, p in again.items()} == {k: set(p["solution_id"].to_list()) for k, p in parts.items()}
    pid = df["problem_id"][0]
    assert pid in ids[split_of(pid, ratios)]
    assert split_of("fixed-problem", ratios) == split_of("fixed-problem", ratios)


def test_task_name():
    assert task_name(CFG) == "GSM8K"
    assert task_name({"source": {"kind": "file", "path": "/x/math500.jsonl"}}) == "MATH"
    assert task_name({"source": {"kind": "file", "path": "../shared/data/gsm8k/test.jsonl"}}) == "GSM8K"
    assert task_name({"source": {"kind": "hf", "dataset": "HuggingFaceH4/MATH-500"}}) == "MATH"
    assert task_name({"source": {"kind": "hf", "dataset": "hendrycks/competition_math"}}) == "MATH"
    assert task_name({"source": {"kind": "hf", "dataset": "me/mathqa"}}) == "mathqa"  # not MATH
    assert task_name({"source": {"kind": "file", "path": "/x/my_problems.jsonl"}}) == "my_problems"
    assert task_name({"source": {"kind": "builtin"}}) == "arithmetic"
    assert task_name(None) == "unknown"


# ---------------------------------------------------------------- files
def test_export_version_files(tmp_path: Path):
    store = _store(tmp_path)
    out = tmp_path / "out"
    files = export_version(store, None, "trl", out, "train=0.8,test=0.2")
    assert [f.relative_to(out).as_posix() for f in files] == ["trl/train-00000-of-00001.parquet", "trl/test-00000-of-00001.parquet"]
    tables = [pq.read_table(f) for f in files]
    assert tables[0].schema == pa.schema([("prompt", pa.string()), ("completions", pa.list_(pa.string())), ("labels", pa.list_(pa.bool_()))])
    assert sum(t.num_rows for t in tables) == 24
    ms = export_version(store, "v1", "math-shepherd", out)
    assert [f.relative_to(out).as_posix() for f in ms] == ["math-shepherd/train-00000-of-00001.parquet"]
    assert set(pq.read_table(ms[0]).column("task").to_pylist()) == {"GSM8K"}
    (jl,) = export_version(store, None, "prm800k", out)
    assert jl.name == "train-00000-of-00001.jsonl"
    lines = jl.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 24 and json.loads(lines[0])["question"]["ground_truth_answer"] == "0"
    with pytest.raises(ValueError, match="unknown export format"):
        export_version(store, None, "csv", out)


def test_export_version_adds_soft_targets_for_soft_labelers(tmp_path: Path):
    soft_cfg = {**CFG, "labeler": {"name": "omegaprm", "label_mode": "soft"}}
    store = _store(tmp_path, shards=1, n=4, config=soft_cfg)
    (f,) = export_version(store, None, "trl", tmp_path / "soft")
    table = pq.read_table(f)
    assert table.schema.field("soft_labels").type == pa.list_(pa.float32())
    assert table.column("soft_labels").to_pylist() == store.read()["soft_labels"].to_list()
    (plain,) = export_version(store, None, "trl", tmp_path / "plain", soft_labels=False)
    assert pq.read_table(plain).column_names == ["prompt", "completions", "labels"]
    hard = _store(tmp_path / "hard", shards=1, n=2, config={**CFG, "labeler": {"name": "omegaprm", "label_mode": "hard"}})
    assert pq.read_table(export_version(hard, None, "trl", tmp_path / "h")[0]).column_names == ["prompt", "completions", "labels"]


def test_trl_files_load_with_datasets(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    store = _store(tmp_path, shards=2, n=5)
    files = export_version(store, None, "trl", tmp_path / "out")
    ds = datasets.load_dataset(
        "parquet", data_files={"train": [str(f) for f in files]}, split="train", cache_dir=str(tmp_path / "cache")
    )
    assert ds.num_rows == 10
    assert ds.features["labels"].feature.dtype == "bool"  # List(Value("bool"))
    assert ds.features["completions"].feature.dtype == "string"
    expected = store.read().select("prompt", "completions", "labels").to_dicts()
    assert ds.to_list() == expected


# ---------------------------------------------------------------- TRL's own tokenization
TRL_CHECK = Path(__file__).with_name("trl_tokenize_check.py")
# trl 0.29 needs torch, so it lives in the torch environment (`make test` adds it to .venv-vllm)
TRL_PYTHON = os.environ.get("STEPLABEL_TRL_PYTHON") or (sys.executable if importlib.util.find_spec("trl") else None)


@pytest.mark.skipif(TRL_PYTHON is None, reason="no interpreter with trl 0.29: set STEPLABEL_TRL_PYTHON (make test does)")
@pytest.mark.parametrize("label_mode", ["hard", "soft"])
def test_trl_prm_tokenize_row_places_labels_on_step_ends(tmp_path: Path, label_mode: str):
    """Also with the soft_labels column, which TRL's loading and tokenization must leave alone."""
    store = _store(tmp_path, shards=1, n=6, config={**CFG, "labeler": {"name": "omegaprm", "label_mode": label_mode}})
    (f,) = export_version(store, None, "trl", tmp_path / "out")
    assert ("soft_labels" in pq.read_schema(f).names) == (label_mode == "soft")
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([TRL_PYTHON, str(TRL_CHECK), str(f)], capture_output=True, text=True, timeout=600,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "tokenize_row checked 6 rows"


def test_searched_paths_become_extra_examples(tmp_path):
    from steplabel.storage.exporters import export_version

    table = make_step_label_rows(2, run_id="r", shard_id="s0", steps_per_solution=3)
    rows = table.to_pylist()
    own = {"steps": rows[0]["completions"], "labels": rows[0]["labels"], "mc": [0.5] * 3, "soft": [0.5] * 3}
    other = {"steps": rows[0]["completions"][:1] + ["a different step"], "labels": [True, False],
             "mc": [0.5, 0.0], "soft": [0.5, 0.0]}
    other["soft"] = [0.5, 0.25]
    rows[0]["labeler_details"] = json.dumps({"paths": [own, other]})
    store = ShardStore(tmp_path / "d")
    store.stage("r", "s0", {"step_labels": pa.Table.from_pylist(rows, schema=table.schema)})
    store.commit("r", config={}, config_hash="h", code_version="t")

    plain = pl.read_parquet(export_version(store, None, "trl", tmp_path / "a")[0])
    assert plain.height == 2
    with_paths = pl.read_parquet(export_version(store, None, "trl", tmp_path / "b", searched_paths=True)[0])
    assert with_paths.height == 3  # the solution's own path is not repeated
    added = with_paths.filter(pl.col("completions").list.last() == "a different step")
    assert added.height == 1 and added["labels"].to_list() == [[True, False]]
    assert added["prompt"].item() == rows[0]["prompt"]
    # a path's soft targets are its own, and its answer is unknown (no answer line in Math-Shepherd)
    soft = pl.read_parquet(export_version(store, None, "trl", tmp_path / "c", searched_paths=True, soft_labels=True)[0])
    assert soft.filter(pl.col("completions").list.last() == "a different step")["soft_labels"].to_list() == [[0.5, 0.25]]
    ms = pl.read_parquet(export_version(store, None, "math-shepherd", tmp_path / "d", searched_paths=True)[0])
    assert ms.filter(pl.col("input").str.contains("a different step"))["input"].item().endswith("a different step ки")
