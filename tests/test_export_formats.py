"""Our exports against upstream's formats: every format and split loads with ``datasets.load_dataset``, and
has the field names and types of a small upstream-shaped fixture (tests/fixtures/upstream_*, written from
the published schemas: openai/prm800k's README, the peiyi9979/Math-Shepherd card, TRL's stepwise
supervision docs, openr's ConvertedItem). Our importers read those fixtures with known answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from steplabel.storage.exporters import FORMATS, export_version, from_math_shepherd, from_openr, from_prm800k, from_trl
from steplabel.storage.store import ShardStore
from tests.factories import make_step_label_rows

datasets = pytest.importorskip("datasets")

FIXTURES = Path(__file__).with_name("fixtures")
UPSTREAM = {
    "trl": "upstream_trl.jsonl",
    "math-shepherd": "upstream_math_shepherd.jsonl",
    "prm800k": "upstream_prm800k_phase2.jsonl",  # phase 2 has every field; phase 1 lacks pre_generated_*
    "openr": "upstream_openr.json",
}
CONFIG = {"name": "t", "source": {"kind": "hf", "dataset": "openai/gsm8k"}, "labeler": {"name": "omegaprm", "label_mode": "hard"}}


def _shape(t: pa.DataType) -> Any:
    """A type as plain data: 'string', [element], {field: type}, None for null (a JSON field that is null in
    every record has no type of its own)."""
    if pa.types.is_null(t):
        return None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [_shape(t.value_type)]
    if pa.types.is_struct(t):
        return {t.field(i).name: _shape(t.field(i).type) for i in range(t.num_fields)}
    return str(t)


def _compatible(ours: Any, theirs: Any, where: str) -> list[str]:
    """Differences of two shapes: field names must match exactly; a null on either side matches any type."""
    if ours is None or theirs is None:
        return []
    if isinstance(ours, dict) and isinstance(theirs, dict):
        if set(ours) != set(theirs):
            return [f"{where}: fields {sorted(ours)} vs upstream {sorted(theirs)}"]
        return [d for k in ours for d in _compatible(ours[k], theirs[k], f"{where}.{k}")]
    if isinstance(ours, list) and isinstance(theirs, list):
        return _compatible(ours[0], theirs[0], f"{where}[]")
    return [] if ours == theirs else [f"{where}: {ours} vs upstream {theirs}"]


def _load(path: Path, cache: Path) -> Any:
    builder = "parquet" if path.suffix == ".parquet" else "json"
    return datasets.load_dataset(builder, data_files={"train": str(path)}, split="train", cache_dir=str(cache))


def _schema_shape(ds: Any) -> dict[str, Any]:
    schema = ds.features.arrow_schema
    return {f.name: _shape(f.type) for f in schema}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ShardStore:
    root = tmp_path_factory.mktemp("formats")
    s = ShardStore(root / "store")
    for i in range(3):
        sid = f"shard-{i:04d}"
        s.stage("r1", sid, {"step_labels": make_step_label_rows(10, shard_id=sid, steps_per_solution=4)})
    s.commit("r1", config=CONFIG, config_hash="h", code_version="test")
    return s


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_has_upstream_field_names_and_types(store: ShardStore, tmp_path: Path, fmt: str):
    upstream = _schema_shape(_load(FIXTURES / UPSTREAM[fmt], tmp_path / "c1"))
    for parquet_only in (False, True):
        (path,) = export_version(store, None, fmt, tmp_path / f"out{parquet_only}", parquet_only=parquet_only)
        ours = _schema_shape(_load(path, tmp_path / f"c{parquet_only}"))
        assert list(ours) == list(upstream), (fmt, path.suffix)
        assert _compatible(ours, upstream, fmt) == [], path.suffix


def test_shape_comparison_catches_a_wrong_type_or_field():
    assert _compatible({"labels": ["bool"]}, {"labels": ["string"]}, "x") == ["x.labels[]: bool vs upstream string"]
    assert _compatible({"q": {"a": "string"}}, {"q": {"a": "string", "b": None}}, "x") != []
    assert _compatible({"g": "int64"}, {"g": None}, "x") == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_and_split_loads_with_datasets(store: ShardStore, tmp_path: Path, fmt: str):
    solutions = store.read().height
    for parquet_only in (False, True):
        files = export_version(store, None, fmt, tmp_path / f"o{parquet_only}", "train=0.6,validation=0.2,test=0.2",
                               parquet_only=parquet_only)
        assert [f.name.split("-")[0] for f in files] == ["train", "validation", "test"]
        builder = "parquet" if parquet_only or fmt != "prm800k" else "json"
        ds = datasets.load_dataset(builder, data_files={f.name.split("-")[0]: str(f) for f in files},
                                   cache_dir=str(tmp_path / f"cache{parquet_only}"))
        assert sum(ds[split].num_rows for split in ds) == solutions
        assert all(ds[split].num_rows > 0 for split in ds)


def test_importers_read_the_upstream_fixtures():
    ms = from_math_shepherd([json.loads(line) for line in (FIXTURES / UPSTREAM["math-shepherd"]).open(encoding="utf-8")])
    assert ms["completions"][1].to_list() == ["Subtract 3 from both sides: $2x = 8$.", "Divide both sides by 3: $x = \\frac{8}{3}$."]
    assert ms["labels"].to_list() == [[True, True], [True, False], [False, False]]
    assert ms["final_answer"].to_list() == ["7", "\\frac{8}{3}", "140"]
    assert ms["prompt"][0].endswith("How many pens does he have left?")

    lines = [(FIXTURES / f"upstream_prm800k_phase{n}.jsonl").read_text(encoding="utf-8") for n in (1, 2)]
    prm = from_prm800k([json.loads(line) for line in lines])
    # phase 1: chosen completion 1 at step 2, the human completion at step 3; phase 2: stops at the -1 step
    assert prm["completions"].to_list() == [
        ["I want to isolate $x$.", "Subtracting 3 gives $2x = 8$.", "Dividing by 2 gives $x = 4$.", "# Answer\n\n4"],
        ["The train covers 60 miles each hour.", "In 2.5 hours it covers 60 * 2 = 120 miles."],
    ]
    assert prm["labels"].to_list() == [[None, True, True, True], [True, False]]
    assert prm["reference_answer"].to_list() == ["4", "150"]

    items = json.loads((FIXTURES / UPSTREAM["openr"]).read_text(encoding="utf-8"))
    op = from_openr(items)
    assert op["completions"][1].to_list() == ["The train covers 60 miles each hour.", "In 2.5 hours it covers 60 * 2 = 120 miles."]
    assert op["labels"].to_list() == [[True, True], [True, False]]

    trl = from_trl(pl.read_ndjson(FIXTURES / UPSTREAM["trl"]))
    assert trl["labels"].to_list() == [[True, True], [True, False]]
