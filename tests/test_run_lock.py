"""One process per run id (the run lock), and the repair of a damaged staging area.

Two processes on the same run id used to jam it for good: each wrote its own bytes of a shard under the
other's marker, so every commit (and every rerun) failed with "the file changed after staging".
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for `factories` under any import mode

from factories import commit_run, make_reject_rows, make_step_label_rows, stage_shard  # noqa: E402

from steplabel.storage.schema import REJECTS, STEP_LABELS  # noqa: E402
from steplabel.storage.store import RunLockedError, ShardStore, StoreError  # noqa: E402

SHARDS = ["s0", "s1", "s2", "s3"]


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_a_second_holder_of_a_run_id_is_refused_with_a_clear_message(tmp_path: Path, kind: str):
    root = str(tmp_path / "d") if kind == "local" else f"memory://run-lock-{uuid.uuid4().hex[:8]}/d"
    first, second = ShardStore(root), ShardStore(root)
    with first.run_lock("r1"):
        with pytest.raises(RunLockedError, match=r"run 'r1' is already running on .*runs/r1\.lock\).*; wait for it to finish"):
            with second.run_lock("r1"):
                pass
        with second.run_lock("r2"):  # another run id is another lock
            pass
    with second.run_lock("r1"):  # released with its holder
        pass


def _stage_and_commit(root: str, writer: int, barrier, out_queue) -> None:
    """What a pipeline run does to the store, under its run lock. Each writer's bytes differ (as two real
    runs' timestamps do), so without the lock their files and markers would mix."""
    store = ShardStore(root)
    try:
        barrier.wait(timeout=60)
        with store.run_lock("run-same"):
            store.repair_staging("run-same")
            for shard in SHARDS:
                store.stage("run-same", shard, {
                    STEP_LABELS: make_step_label_rows(5, run_id="run-same", shard_id=shard, config_hash=f"w{writer}"),
                    REJECTS: make_reject_rows(1, run_id="run-same", shard_id=shard),
                })
            manifest = commit_run(store, "run-same")
        out_queue.put((writer, "committed" if manifest.created else "unchanged", manifest.version))
    except RunLockedError as error:
        out_queue.put((writer, "refused", str(error)))
    except BaseException as error:  # noqa: BLE001 - report it instead of hanging the parent
        out_queue.put((writer, "error", repr(error)))


def test_same_run_id_race_two_processes_ten_trials(tmp_path: Path):
    """Every trial ends with exactly one committed version, and each process either made it, found it
    already made, or was refused with a clear message: never an error, never a stuck run."""
    ctx = mp.get_context("spawn")
    outcomes = []
    for trial in range(10):
        root = str(tmp_path / f"trial-{trial}")
        barrier, out_queue = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_stage_and_commit, args=(root, w, barrier, out_queue)) for w in range(2)]
        for p in procs:
            p.start()
        results = sorted(out_queue.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=30)
        kinds = sorted(kind for _, kind, _ in results)
        assert kinds in (["committed", "refused"], ["committed", "unchanged"]), results
        store = ShardStore(root)
        assert store.versions() == ["v0001"] and store.verify() == []
        labels = store.read(STEP_LABELS)
        assert labels.height == 20 and labels["solution_id"].n_unique() == 20
        assert labels["config_hash"].n_unique() == 1  # one writer's shards, not a mix
        assert store.staged_runs() == []
        outcomes.append(kinds)
    print(f"\nsame-run-id race, 10 trials: {outcomes.count(['committed', 'refused'])} refused, "
          f"{outcomes.count(['committed', 'unchanged'])} found it committed")


def test_repair_drops_a_shard_whose_file_changed_after_staging_and_the_run_commits(tmp_path: Path):
    store = ShardStore(tmp_path)
    for shard in ("a", "b"):
        stage_shard(store, "r1", shard)
    staging = tmp_path / "staging" / "r1"
    (staging / "a.step_labels.parquet").write_bytes((staging / "b.step_labels.parquet").read_bytes())  # the jam
    (staging / "c.step_labels.parquet.tmp-1-deadbeef").write_bytes(b"half")  # a killed writer's temporary
    with pytest.raises(StoreError, match=r"the file changed after staging \(rerun the run, or `steplabel run --resume r1`"):
        commit_run(store, "r1")
    assert store.latest() is None

    dropped = store.repair_staging("r1")
    assert len(dropped) == 1 and dropped[0].startswith("shard 'a' of run 'r1': ") and "its marker records" in dropped[0]
    assert sorted(p.name for p in staging.iterdir()) == ["b.done", "b.rejects.parquet", "b.step_labels.parquet"]
    assert store.repair_staging("r1") == []  # what is left is consistent
    stage_shard(store, "r1", "a")  # the run recomputes it
    manifest = commit_run(store, "r1")
    assert manifest.version == "v0001" and sorted(manifest.shards) == ["a", "b"]
    assert store.read(STEP_LABELS)["solution_id"].n_unique() == 10


def test_repair_keeps_a_shard_promoted_before_a_crash_and_drops_an_unreadable_marker(tmp_path: Path):
    store = ShardStore(tmp_path)
    for shard in ("a", "b"):
        stage_shard(store, "r1", shard)
    staging = tmp_path / "staging" / "r1"
    marker = json.loads((staging / "a.done").read_text())
    sha = marker["tables"][STEP_LABELS]["sha256"]
    (tmp_path / "shards").mkdir()
    (staging / "a.step_labels.parquet").rename(tmp_path / "shards" / f"{sha}.parquet")  # a commit died mid-way
    (staging / "b.done").write_text("{not json")
    dropped = store.repair_staging("r1")
    assert [d.split(":")[0] for d in dropped] == ["shard 'b' of run 'r1'"]
    assert commit_run(store, "r1").shards == {"a": "r1"}


@pytest.mark.flow
def test_two_pipeline_processes_on_one_config_end_with_one_version(prefect_harness, tmp_path: Path):
    """The real flow: the second process of the same run id is refused (or, if it came late, finds the
    version committed); the dataset ends with one intact version."""
    from prefect.settings import PREFECT_API_URL

    from steplabel.flows.config import parse_config

    config = parse_config({"source": {"kind": "builtin", "num_problems": 8}, "sampling": {"num_solutions": 2},
                           "labeler": {"name": "math_shepherd", "k": 2}, "shard_size": 2})
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.model_dump(mode="json")))
    env = dict(os.environ, PREFECT_API_URL=str(PREFECT_API_URL.value()), PREFECT_LOGGING_LEVEL="WARNING",
               PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    script = Path(__file__).with_name("run_pipeline_script.py")
    command = [sys.executable, str(script), "--config", str(config_file), "--out", str(tmp_path / "d"), "--sleep", "0.01"]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    results = [(p.returncode, err.decode(errors="replace")) for p, (_, err) in zip(procs, outs)]
    assert any(rc == 0 for rc, _ in results), results
    for rc, err in results:
        assert rc == 0 or "is already running on" in err, err[-2000:]
    store = ShardStore(tmp_path / "d")
    assert store.versions() == ["v0001"] and store.verify() == [] and len(store.manifest().shards) == 4
