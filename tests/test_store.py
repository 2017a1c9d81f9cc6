"""ShardStore: staging, commits, versions, crash safety, idempotence, concurrency."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for `factories` under any import mode
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from factories import (  # noqa: E402
    STORE_CONFIG,
    commit_run,
    expected_stats,
    make_reject_rows,
    make_step_label_rows,
    manifest_stats,
    stage_shard,
)

from steplabel.storage.schema import REJECTS, STEP_LABELS, STEP_LABELS_SCHEMA, schema_fingerprint  # noqa: E402
from steplabel.storage.store import PARQUET_WRITE_OPTIONS, ShardStore, StoreError  # noqa: E402
from steplabel.storage.views import STEP_VIEW_COLUMNS, explode_steps  # noqa: E402


def _sorted_rows(df: pl.DataFrame, key: str) -> list[dict]:
    return df.sort(key).to_dicts()


# ----------------------------------------------------------------------------------------------------------
def test_round_trip_exact_rows_and_stats(tmp_path: Path):
    store = ShardStore(tmp_path)
    assert store.latest() is None and store.versions() == []
    sl = make_step_label_rows(7, run_id="r1", shard_id="s0", steps_per_solution=4)
    rj = make_reject_rows(3, run_id="r1", shard_id="s0")
    store.stage("r1", "s0", {STEP_LABELS: sl, REJECTS: rj})
    assert store.is_staged("r1", "s0") and store.staged_shards("r1") == ["s0"]
    # staged data is invisible to readers
    assert store.read().height == 0 and store.read(REJECTS).height == 0

    m = commit_run(store, "r1", message="first")
    assert m.created and m.version == "v0001" and m.parent is None
    assert store.latest() == "v0001" and store.versions() == ["v0001"]
    assert (tmp_path / "LATEST").read_text().strip() == "v0001"
    assert not (tmp_path / "staging" / "r1").exists()

    got = store.read()
    assert got.columns == STEP_LABELS_SCHEMA.names
    want = pl.from_arrow(sl)
    assert _sorted_rows(got, "solution_id") == _sorted_rows(want, "solution_id")
    assert _sorted_rows(store.read(REJECTS), "item_id") == _sorted_rows(pl.from_arrow(rj), "item_id")

    # exact stats, independent of the store: i=0..6, k=4 -> first_error -1,1,2,-1,0,1,-1
    # positives: 4+1+2+4+0+1+4 = 16 of 28 steps
    assert manifest_stats(m) == {
        "solutions": 7, "steps": 28, "positive_steps": 16, "negative_steps": 12, "rejects": 3,
        "rollouts": 7 * 16 + 3 * 2, "tokens": sum(100 + i for i in range(7)) + 3 * 10,
    }  # fmt: skip
    assert manifest_stats(m) == expected_stats([(7, 4)], rejects=3)
    assert m.stats["label_balance"] == pytest.approx(16 / 28)

    # manifest on disk: relative content-addressed paths with correct sha/rows/bytes
    on_disk = json.loads((tmp_path / "versions" / "v0001.json").read_text())
    assert "created" not in on_disk
    for name, rows in ((STEP_LABELS, 7), (REJECTS, 3)):
        (entry,) = on_disk["tables"][name]
        assert entry["path"] == f"shards/{entry['sha256']}.parquet"
        assert entry["rows"] == rows and entry["shard_id"] == "s0" and entry["run_id"] == "r1"
        f = tmp_path / entry["path"]
        assert f.stat().st_size == entry["bytes"]
        import hashlib

        assert hashlib.sha256(f.read_bytes()).hexdigest() == entry["sha256"]
    assert on_disk["schemas"][STEP_LABELS] == schema_fingerprint(STEP_LABELS_SCHEMA)
    assert on_disk["config"] == STORE_CONFIG and on_disk["config_hash"] == "cfg-test" and on_disk["message"] == "first"
    assert on_disk["run_ids"] == ["r1"] and on_disk["parent"] is None and on_disk["created_at"]
    assert store.committed_run_ids() == {"r1"}


def test_parquet_written_with_store_options(tmp_path: Path):
    store = ShardStore(tmp_path)
    stage_shard(store, "r1", "s0", n=10)
    m = commit_run(store, "r1")
    meta = pq.ParquetFile(tmp_path / m.tables[STEP_LABELS][0].path).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert meta.row_group(0).column(0).has_offset_index  # page index written
    assert PARQUET_WRITE_OPTIONS["row_group_size"] == 65536


def test_versions_accumulate(tmp_path: Path):
    store = ShardStore(tmp_path)
    stage_shard(store, "r1", "s0", n=5)
    stage_shard(store, "r1", "s1", n=4)
    v1 = commit_run(store, "r1")
    v1_rows = store.read().sort("solution_id")

    stage_shard(store, "r2", "s2", n=6, k=2, rejects=1)
    v2 = commit_run(store, "r2")
    assert (v2.version, v2.parent) == ("v0002", "v0001")
    assert store.versions() == ["v0001", "v0002"] and store.latest() == "v0002"
    assert v2.run_ids == ["r1", "r2"] and store.committed_run_ids() == {"r1", "r2"}
    assert [e.shard_id for e in v2.tables[STEP_LABELS]] == ["s0", "s1", "s2"]

    exp1 = expected_stats([(5, 3), (4, 3)], rejects=4)
    assert manifest_stats(v1) == exp1
    exp2 = {k: exp1[k] + expected_stats([(6, 2)], rejects=1)[k] for k in exp1}
    assert manifest_stats(v2) == exp2

    # v2 = v1 + new shard; old version stays readable and unchanged
    all_rows = store.read()
    assert all_rows.height == 15 and all_rows["solution_id"].n_unique() == 15
    assert store.read(version="v1").sort("solution_id").equals(v1_rows)
    assert store.read(version="v0001").height == 9
    assert store.read(REJECTS).height == 5
    assert all_rows.filter(pl.col("shard_id") == "s2")["run_id"].unique().to_list() == ["r2"]
    # stats are consistent with a full scan of the data
    assert all_rows["labels"].list.len().sum() == exp2["steps"]
    assert store.summary()["steps"] == exp2["steps"]
    assert store.summary("v1")["solutions"] == 9


def test_crash_after_latest_before_cleanup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = ShardStore(tmp_path)
    stage_shard(store, "r1", "s0", n=5)
    monkeypatch.setattr(ShardStore, "_cleanup_staging", lambda self, run_id: None)
    m1 = commit_run(store, "r1")
    monkeypatch.undo()
    assert store.staged_shards("r1") == ["s0"]
    m2 = commit_run(store, "r1")
    assert not m2.created and m2.version == m1.version == "v0001"
    assert store.versions() == ["v0001"] and store.read().height == 5
    assert not (tmp_path / "staging" / "r1").exists()


def test_double_commit_is_idempotent(tmp_path: Path):
    store = ShardStore(tmp_path)
    stage_shard(store, "r1", "s0", n=5)
    m1 = commit_run(store, "r1")
    m2 = commit_run(store, "r1")
    assert m1.created and not m2.created and m2.version == "v0001"
    assert store.versions() == ["v0001"] and store.read().height == 5

    # re-staging an already committed shard (same or another run) adds nothing
    stage_shard(store, "r1", "s0", n=5)
    assert not commit_run(store, "r1").created
    stage_shard(store, "r9", "s0", n=5)
    m3 = commit_run(store, "r9")
    assert not m3.created and store.versions() == ["v0001"] and store.read().height == 5
    # committing a run with nothing staged at all
    assert not commit_run(store, "never-staged").created


def test_stage_is_idempotent_and_marker_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = ShardStore(tmp_path)
    stage_shard(store, "r1", "s0", n=5)
    marker = tmp_path / "staging" / "r1" / "s0.done"
    mtime = marker.stat().st_mtime_ns
    stage_shard(store, "r1", "s0", n=99)  # already staged: ignored
    assert marker.stat().st_mtime_ns == mtime

    # crash while writing the second table: no marker -> not staged -> redone on the next call
    real = store.fs.write_parquet_atomic
    seen = []

    def flaky(table, path):
        seen.append(path)
        if len(seen) == 2:
            raise OSError("disk full")
        return real(table, path)

    monkeypatch.setattr(store.fs, "write_parquet_atomic", flaky)
    with pytest.raises(Exception, match="disk full"):
        stage_shard(store, "r1", "s1", n=4)
    monkeypatch.undo()
    assert not store.is_staged("r1", "s1") and store.staged_shards("r1") == ["s0"]
    stage_shard(store, "r1", "s1", n=4)
    assert store.staged_shards("r1") == ["s0", "s1"]
    assert not list((tmp_path / "staging" / "r1").glob("*.tmp-*"))
    m = commit_run(store, "r1")
    assert store.read().height == 9 and manifest_stats(m) == expected_stats([(5, 3), (4, 3)], rejects=4)


def test_schema_mismatch_errors(tmp_path: Path):
    store = ShardStore(tmp_path)
    sl = make_step_label_rows(2, run_id="r1", shard_id="s0")

    bad = sl.set_column(sl.schema.get_field_index("first_error"), "first_error", pa.array(["x", "y"]))
    with pytest.raises(ValueError) as ei:
        store.stage("r1", "s0", {STEP_LABELS: bad})
    msg = str(ei.value)
    assert "first_error" in msg and "step_labels" in msg and "s0" in msg and str(tmp_path) in msg

    with pytest.raises(ValueError, match="missing column.*'labels'"):
        store.stage("r1", "s0", {STEP_LABELS: sl.drop_columns(["labels"])})
    with pytest.raises(ValueError, match="unexpected column.*'extra'"):
        store.stage("r1", "s0", {STEP_LABELS: sl.append_column("extra", pa.array([1, 2]))})
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        store.stage("r1", "s0", {"nope": sl})
    with pytest.raises(ValueError, match="shard_id 's0'.*expected 'other'"):
        store.stage("r1", "other", {STEP_LABELS: sl})
    with pytest.raises(ValueError, match="run_id"):
        store.stage("../evil", "s0", {STEP_LABELS: sl})
    assert not store.is_staged("r1", "s0")

    # compatible types are cast: int64 first_error, reordered columns, polars input (large_string etc.)
    ok = sl.set_column(sl.schema.get_field_index("first_error"), "first_error", pa.array([1, -1], pa.int64()))
    ok = ok.select(list(reversed(ok.column_names)))
    store.stage("r1", "s0", {STEP_LABELS: ok})
    store.stage("r1", "s1", {STEP_LABELS: pl.from_arrow(make_step_label_rows(2, run_id="r1", shard_id="s1"))})
    commit_run(store, "r1")
    df = store.read().sort("solution_id")
    assert df.columns == STEP_LABELS_SCHEMA.names and df["first_error"].to_list() == [1, -1, -1, 1]


def test_errors_name_versions_and_paths(tmp_path: Path):
    store = ShardStore(tmp_path)
    with pytest.raises(StoreError, match="no committed version"):
        store.manifest()
    stage_shard(store, "r1", "s0")
    commit_run(store, "r1")
    assert store.manifest("v1").version == store.manifest("v0001").version == store.manifest("1").version
    with pytest.raises(StoreError) as ei:
        store.manifest("v7")
    assert "v0001" in str(ei.value) and "v0007.json" in str(ei.value)
    with pytest.raises(StoreError, match="not a version name"):
        store.manifest("latest-ish")
    with pytest.raises(ValueError, match="unknown table"):
        store.scan("nope")


def test_tampered_staged_file_is_detected(tmp_path: Path):
    store = ShardStore(tmp_path)
    stage_shard(store, "r1", "s0")
    f = tmp_path / "staging" / "r1" / "s0.step_labels.parquet"
    pq.write_table(make_step_label_rows(1, shard_id="s0"), f)
    with pytest.raises(StoreError, match=r"s0\.step_labels\.parquet.*changed after staging"):
        commit_run(store, "r1")
    assert store.latest() is None


def test_empty_store_and_missing_table(tmp_path: Path):
    store = ShardStore(tmp_path)
    lf = store.scan()
    assert isinstance(lf, pl.LazyFrame)
    df = lf.collect()
    assert df.height == 0 and df.columns == STEP_LABELS_SCHEMA.names
    assert df.schema["labels"] == pl.List(pl.Boolean)
    s = store.summary()
    assert s["version"] is None and s["versions"] == [] and s["solutions"] == 0 and s["rejects"] == 0
    assert store.committed_run_ids() == set()

    store.stage("r1", "s0", {STEP_LABELS: make_step_label_rows(2, run_id="r1", shard_id="s0")})
    commit_run(store, "r1")
    rej = store.read(REJECTS)  # version without any rejects shard
    assert rej.height == 0 and "reason" in rej.columns


def test_summary(tmp_path: Path):
    store = ShardStore(tmp_path)
    stage_shard(store, "r1", "s0", n=7, k=4, rejects=3)
    commit_run(store, "r1")
    s = store.summary()
    exp = expected_stats([(7, 4)], rejects=3)
    for key in ("solutions", "steps", "positive_steps", "negative_steps", "rejects", "rollouts", "tokens"):
        assert s[key] == exp[key], key
    assert s["version"] == "v0001" and s["versions"] == ["v0001"]
    assert s["label_balance"] == pytest.approx(16 / 28)
    json.dumps(s)  # JSON-serialisable for `steplabel inspect --json`


def test_explode_steps():
    sl = make_step_label_rows(3, shard_id="s0", steps_per_solution=2)
    df = pl.from_arrow(sl)
    # give one solution no steps and one a missing soft_labels list
    df = df.with_columns(
        completions=pl.when(pl.col("solution_id") == "s0-sol2").then(pl.lit([], pl.List(pl.String)))
        .otherwise(pl.col("completions")),
        soft_labels=pl.when(pl.col("solution_id") == "s0-sol1").then(None).otherwise(pl.col("soft_labels")),
    )
    out = explode_steps(df)
    assert out.columns == STEP_VIEW_COLUMNS
    assert out.height == 4
    assert out["solution_id"].to_list() == ["s0-sol0", "s0-sol0", "s0-sol1", "s0-sol1"]
    assert out["step_index"].to_list() == [0, 1, 0, 1]
    assert out["step"].to_list()[1] == "Step 2 of solution 0: compute 0 + 1."
    # i=0: first_error -1 -> [T, T]; i=1: first_error 1 -> [T, F]
    assert out["label"].to_list() == [True, True, True, False]
    assert out["mc_total"].to_list() == [8, 8, 8, 8]
    assert out["mc_correct"].to_list() == [8, 8, 8, 2]
    assert out["soft_label"].to_list() == [1.0, 1.0, None, None]
    # lazy input stays lazy
    assert isinstance(explode_steps(df.lazy()), pl.LazyFrame)


def test_a_column_added_later_reads_as_null_in_older_shards(tmp_path: Path):
    """Schema evolution: shards written before a nullable column existed stay readable next to new ones."""
    store = ShardStore(tmp_path)
    stage_shard(store, "r1", "old")
    commit_run(store, "r1")
    old_file = tmp_path / store.manifest().tables[STEP_LABELS][0].path
    pq.write_table(pq.read_table(old_file).drop_columns(["tool_checks"]), old_file)  # as an older version wrote it
    manifest_file = tmp_path / "versions" / "v0001.json"  # ... and recorded it
    manifest = json.loads(manifest_file.read_text())
    manifest["tables"][STEP_LABELS][0].update(bytes=old_file.stat().st_size, sha256=store.fs.sha256(str(old_file)))
    manifest_file.write_text(json.dumps(manifest))
    stage_shard(store, "r2", "new")
    commit_run(store, "r2")
    rows = store.read(STEP_LABELS)
    assert rows.height == 10 and rows.columns == STEP_LABELS_SCHEMA.names
    assert rows.filter(pl.col("shard_id") == "old")["tool_checks"].null_count() == 5


def test_reads_check_files_against_the_manifest_and_commit_removes_dead_temporaries(tmp_path: Path):
    """A shard copied over another (the same size or not) is an error on read, never extra rows; a
    killed commit's ``*.tmp-*`` files are gone after the next commit."""
    store = ShardStore(tmp_path)
    for shard in ("a", "b"):
        stage_shard(store, "r1", shard)
    commit_run(store, "r1")
    entries = store.manifest().tables[STEP_LABELS]
    first, second = (tmp_path / e.path for e in entries)
    original = first.read_bytes()
    first.write_bytes(second.read_bytes())
    with pytest.raises(StoreError, match=r"shard file .* has (\d+ bytes|sha256 \w+), its manifest records"):
        store.read(STEP_LABELS)
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    first.write_bytes(bytes(flipped))  # same size: only the hash tells
    store.scan(STEP_LABELS)  # lazily: sizes checked, contents not read
    with pytest.raises(StoreError, match=r"has sha256 \w+, its manifest records " + entries[0].sha256):
        store.read(STEP_LABELS)
    assert store.verify() == [f"shard file {first} has sha256 {store.fs.sha256(str(first))}, its manifest records {entries[0].sha256}"]
    first.write_bytes(original)
    assert store.verify() == [] and store.read(STEP_LABELS).height == 10

    (tmp_path / "versions" / "v0002.json.tmp-99-deadbeef").write_text("{half")
    (tmp_path / "LATEST.tmp-99-deadbeef").write_text("v00")
    stage_shard(store, "r2", "c")
    commit_run(store, "r2")
    assert not list(tmp_path.rglob("*.tmp-*")) and store.versions() == ["v0001", "v0002"]


def test_inspect_json_of_a_folder_that_is_not_a_dataset_fails(tmp_path: Path):
    from typer.testing import CliRunner

    from steplabel.cli.main import app

    (tmp_path / "notes.txt").write_text("hello")
    result = CliRunner().invoke(app, ["inspect", str(tmp_path), "--json"])
    assert result.exit_code == 1 and result.output.startswith("error:") and "not a steplabel dataset" in result.output


def test_a_version_never_holds_one_solution_twice(tmp_path: Path):
    """A later run that labels solutions the version already has (or repeats one within the commit) adds only
    the new ones; the repeats become duplicate_solution rejects at stage commit, and the stats follow the rows."""
    store = ShardStore(tmp_path)
    stage_shard(store, "r1", "s0", n=5)
    commit_run(store, "r1")

    again = make_step_label_rows(6, run_id="r2", shard_id="s9")
    ids = ["s0-sol0", "s0-sol1", "s0-sol2", "s9-new0", "s9-new1", "s9-new0"]  # 3 already in v1, 1 repeated here
    again = again.set_column(again.schema.get_field_index("solution_id"), "solution_id", pa.array(ids))
    store.stage("r2", "s9", {STEP_LABELS: again})
    v2 = commit_run(store, "r2")

    rows = store.read()
    assert rows.height == 7 and rows["solution_id"].n_unique() == 7
    assert sorted(rows.filter(pl.col("shard_id") == "s9")["solution_id"].to_list()) == ["s9-new0", "s9-new1"]
    rejects = store.read(REJECTS).filter(pl.col("reason") == "duplicate_solution")
    assert sorted(rejects["solution_id"].to_list()) == ["s0-sol0", "s0-sol1", "s0-sol2", "s9-new0"]
    assert set(rejects["stage"]) == {"commit"} and set(rejects["shard_id"]) == {"s9"}
    assert "already labelled in version v0001" in rejects.filter(pl.col("solution_id") == "s0-sol0")["detail"][0]
    assert v2.stats["solutions"] == 7 and v2.stats["steps"] == rows["labels"].list.len().sum()
    assert store.verify() == []
