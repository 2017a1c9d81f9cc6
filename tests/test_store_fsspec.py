"""ShardStore on every kind of root: ``memory://`` (an object-store stand-in: no rename, no locks),
``FsspecFS`` over ``file://`` (the same code against a real filesystem), ``file://`` URLs routed to
``LocalFS``, and a plain local path. The crash-recovery tests run on all four."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import fsspec
import polars as pl
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for `factories` under any import mode
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from factories import (  # noqa: E402
    commit_run,
    expected_stats,
    make_reject_rows,
    make_step_label_rows,
    manifest_stats,
    stage_shard,
)

from steplabel.storage.schema import REJECTS, STEP_LABELS  # noqa: E402
from steplabel.storage.store import (  # noqa: E402
    FsspecFS,
    LocalFS,
    Manifest,
    RemoteLock,
    ShardStore,
    StoreError,
    make_fs,
)


@pytest.fixture
def memory_root():
    root = f"memory://steplabel-test-{uuid.uuid4().hex[:8]}/data"
    yield root
    fs = fsspec.filesystem("memory")
    try:
        fs.rm(root.split("://", 1)[1].split("/", 1)[0], recursive=True)
    except FileNotFoundError:
        pass


@pytest.fixture(params=["memory", "fsspec-file", "file-url", "local"])
def store(request, tmp_path: Path, memory_root: str) -> ShardStore:
    if request.param == "local":
        return ShardStore(tmp_path / "data")
    if request.param == "memory":
        return ShardStore(memory_root)
    if request.param == "fsspec-file":
        return ShardStore(f"file://{tmp_path}/data", fs=FsspecFS(fsspec.filesystem("file")))
    return ShardStore(f"file://{tmp_path}/data")


def _files(store: ShardStore, rel: str) -> list[str]:
    return store.fs.listdir(store.fs.join(store.root, rel))


# ----------------------------------------------------------------------------------------------------------
def test_root_picks_the_filesystem(tmp_path: Path, memory_root: str):
    assert isinstance(make_fs(tmp_path), LocalFS) and isinstance(make_fs(f"file://{tmp_path}"), LocalFS)
    local = ShardStore(f"file://{tmp_path}/d")
    assert isinstance(local.fs, LocalFS) and local.root == f"{tmp_path}/d"
    remote = ShardStore(memory_root + "/")
    assert isinstance(remote.fs, FsspecFS) and remote.root == memory_root and remote.fs.protocol == "memory"
    assert remote.fs.join(remote.root, "shards", "x.parquet") == memory_root + "/shards/x.parquet"


def test_stage_commit_read_summary(store: ShardStore):
    assert store.latest() is None and store.versions() == [] and store.read().height == 0
    sl = make_step_label_rows(7, run_id="r1", shard_id="s0", steps_per_solution=4)
    rj = make_reject_rows(3, run_id="r1", shard_id="s0")
    store.stage("r1", "s0", {STEP_LABELS: sl, REJECTS: rj})
    assert store.is_staged("r1", "s0") and store.staged_shards("r1") == ["s0"]
    assert store.read().height == 0  # staged data is invisible to readers
    store.stage("r1", "s0", {STEP_LABELS: sl, REJECTS: rj})  # idempotent

    m = commit_run(store, "r1")
    assert m.created and m.version == "v0001" and m.parent is None
    assert store.latest() == "v0001" and store.versions() == ["v0001"]
    got = store.read().sort("solution_id")
    assert got.equals(pl.from_arrow(sl).sort("solution_id"))  # exact rows and dtypes through the reader
    assert store.read(REJECTS).sort("item_id").equals(pl.from_arrow(rj).sort("item_id"))
    lazy = store.scan().filter(pl.col("first_error") == -1).select("solution_id").collect()
    assert 0 < lazy.height < 7
    assert manifest_stats(m) == expected_stats([(7, 4)], rejects=3)
    summary = store.summary()
    assert summary["root"] == store.root and summary["version"] == "v0001" and summary["solutions"] == 7
    assert summary["files"][STEP_LABELS]["files"] == 1 and summary["shards"] == 1
    shas = {e.sha256 for es in m.tables.values() for e in es}
    assert set(_files(store, "shards")) == {f"{s}.parquet" for s in shas}
    for es in m.tables.values():  # content-addressed: the name is the hash of the bytes
        for e in es:
            assert store.fs.sha256(store.fs.join(store.root, e.path)) == e.sha256
    assert "r1" not in _files(store, "staging")
    assert not any(".tmp-" in n for rel in ("", "shards", "versions") for n in _files(store, rel))
    assert not any(n.startswith(".lock") for n in _files(store, "")) or isinstance(store.fs, LocalFS)

    again = commit_run(store, "r1")  # nothing new
    assert not again.created and store.versions() == ["v0001"]


def test_two_versions(store: ShardStore):
    stage_shard(store, "r1", "s0", n=5)
    commit_run(store, "r1")
    stage_shard(store, "r2", "s1", n=4)
    stage_shard(store, "r2", "s2", n=3)
    m2 = commit_run(store, "r2")
    assert m2.version == "v0002" and m2.parent == "v0001" and m2.run_ids == ["r1", "r2"]
    assert store.versions() == ["v0001", "v0002"]
    assert store.read(version="v1").height == 5 and store.read().height == 12
    assert store.read()["solution_id"].n_unique() == 12
    assert manifest_stats(m2) == expected_stats([(5, 3), (4, 3), (3, 3)], rejects=6)
    assert store.summary("v1")["solutions"] == 5 and store.summary()["versions"] == ["v0001", "v0002"]
    with pytest.raises(StoreError, match="available versions"):
        store.manifest("v9")


def test_crash_between_promote_and_manifest(store: ShardStore, monkeypatch: pytest.MonkeyPatch):
    stage_shard(store, "r1", "s0", n=5)
    commit_run(store, "r1")
    before = store.read().sort("solution_id")
    stage_shard(store, "r2", "s1", n=4)
    stage_shard(store, "r2", "s2", n=3)

    def boom(self, manifest):
        raise OSError("simulated crash before manifest write")

    monkeypatch.setattr(ShardStore, "_write_manifest", boom)
    with pytest.raises(OSError, match="simulated crash"):
        commit_run(store, "r2")
    monkeypatch.undo()
    assert len(_files(store, "shards")) == 2 + 4  # promoted, but not visible
    assert store.latest() == "v0001" and store.versions() == ["v0001"]
    assert store.read().sort("solution_id").equals(before) and store.committed_run_ids() == {"r1"}

    m = commit_run(store, "r2")  # the rerun finishes the job
    assert m.created and m.version == "v0002"
    df = store.read()
    assert df.height == 12 and df["solution_id"].n_unique() == 12
    assert store.read(REJECTS)["item_id"].n_unique() == store.read(REJECTS).height == 6
    assert manifest_stats(m) == expected_stats([(5, 3), (4, 3), (3, 3)], rejects=6)
    assert "r2" not in _files(store, "staging")


def test_crash_mid_promotion(store: ShardStore, monkeypatch: pytest.MonkeyPatch):
    for s in ("s0", "s1", "s2"):
        stage_shard(store, "r1", s, n=3)
    real = ShardStore._promote
    calls = {"n": 0}

    def flaky(self, *a):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("simulated crash mid-promotion")
        return real(self, *a)

    monkeypatch.setattr(ShardStore, "_promote", flaky)
    with pytest.raises(OSError):
        commit_run(store, "r1")
    monkeypatch.undo()
    assert store.latest() is None and store.read().height == 0
    m = commit_run(store, "r1")
    assert m.version == "v0001" and store.read().height == 9 and store.read(REJECTS).height == 6
    assert manifest_stats(m) == expected_stats([(3, 3)] * 3, rejects=6)


@pytest.mark.parametrize("rerun", ["same-run", "other-run"])
def test_crash_after_manifest_before_latest(store: ShardStore, monkeypatch: pytest.MonkeyPatch, rerun: str):
    """The orphan v0002 (written, never pointed to) is not visible; the next commit, by the same run or by
    another one, replaces it (it predates the lock that commit holds)."""
    stage_shard(store, "r1", "s0", n=5)
    commit_run(store, "r1")
    stage_shard(store, "r2", "s1", n=4)
    monkeypatch.setattr(ShardStore, "_swap_latest", lambda self, v: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError, match="crash"):
        commit_run(store, "r2")
    monkeypatch.undo()
    assert "v0002.json" in _files(store, "versions")
    assert store.latest() == "v0001" and store.versions() == ["v0001"] and store.read().height == 5
    with pytest.raises(StoreError, match="available versions"):
        store.manifest("v2")
    time.sleep(0.02)  # mtimes: the orphan is strictly older than the next lock
    if rerun == "same-run":
        m = commit_run(store, "r2")
        assert m.created and m.version == "v0002" and m.parent == "v0001"
        assert store.read().height == 9 and store.read()["solution_id"].n_unique() == 9
        assert manifest_stats(m) == expected_stats([(5, 3), (4, 3)], rejects=4)
    else:
        stage_shard(store, "r3", "s9", n=2)
        m = commit_run(store, "r3")
        assert m.version == "v0002" and m.run_ids == ["r1", "r3"] and store.read().height == 7
        assert commit_run(store, "r2").version == "v0003"  # r2's staging is still there and commits next
        assert store.read().height == 11


def test_manifest_claimed_by_a_concurrent_writer_is_a_conflict(memory_root: str, monkeypatch):
    """Two writers that both believe they hold the lock (a lock broken as stale while its holder lived)
    cannot both publish v0002: the exclusive create makes the late one fail without touching LATEST."""
    store = ShardStore(memory_root)
    stage_shard(store, "r1", "s0", n=5)
    commit_run(store, "r1")
    stage_shard(store, "r2", "s1", n=4)
    real = FsspecFS.write_exclusive

    def racing(self, path, data):
        if path.endswith("v0002.json") and not self.exists(path):
            other = Manifest(version="v0002", parent="v0001", run_id="intruder", created_at="x")
            real(self, path, other.model_dump_json().encode())  # the other writer wins the race
        return real(self, path, data)

    monkeypatch.setattr(FsspecFS, "write_exclusive", racing)
    with pytest.raises(StoreError, match="claimed by another writer"):
        commit_run(store, "r2")
    assert store.latest() == "v0001" and store.read().height == 5
    assert json.loads(store.fs.read_bytes(store.fs.join(memory_root, "versions", "v0002.json")))["run_id"] == "intruder"


def test_remote_lock_excludes_and_breaks_stale_locks(memory_root: str):
    fs = FsspecFS.from_url(memory_root)
    path = fs.join(memory_root, ".lock")
    held = RemoteLock(fs, path, timeout=1, stale_s=60).acquire()
    import filelock

    with pytest.raises(filelock.Timeout):
        RemoteLock(fs, path, timeout=0.3, stale_s=60, poll_s=0.05).acquire()
    held.release()
    assert not fs.exists(path)
    # a dead writer's lock: older than stale_s -> broken
    fs.write_atomic(path, json.dumps({"owner": "dead:1:x", "created": time.time() - 120}).encode())
    with RemoteLock(fs, path, timeout=2, stale_s=60, poll_s=0.05) as lock:
        assert json.loads(fs.read_bytes(path))["owner"] == lock.token
    assert not fs.exists(path)


def test_commit_lock_timeout_is_a_store_error(memory_root: str):
    store = ShardStore(memory_root, lock_timeout=0.3)
    stage_shard(store, "r1", "s0")
    store.fs.write_atomic(store._lock_file, json.dumps({"owner": "other", "created": time.time()}).encode())
    with pytest.raises(StoreError, match="could not acquire"):
        commit_run(store, "r1")
    store.fs.remove(store._lock_file)
    assert commit_run(store, "r1").version == "v0001"


def test_concurrent_commits_from_threads_on_memory(memory_root: str):
    runs = {f"r{i}": [f"s{i}a", f"s{i}b"] for i in range(4)}
    for run, shards in runs.items():
        store = ShardStore(memory_root)
        for s in shards:
            stage_shard(store, run, s, n=10)
    barrier = threading.Barrier(len(runs))
    results: dict[str, tuple] = {}

    def worker(run: str) -> None:
        barrier.wait(timeout=30)
        try:
            m = commit_run(ShardStore(memory_root), run)
            results[run] = (m.version, m.parent)
        except BaseException as e:  # noqa: BLE001
            results[run] = ("error", repr(e))

    threads = [threading.Thread(target=worker, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(v != "error" for v, _ in results.values()), results
    chain = sorted(results.values())
    assert chain == [("v0001", None), ("v0002", "v0001"), ("v0003", "v0002"), ("v0004", "v0003")]
    store = ShardStore(memory_root)
    df = store.read()
    assert df.height == 80 and df["solution_id"].n_unique() == 80
    assert sorted(store.manifest().shards) == sorted(s for ss in runs.values() for s in ss)
