"""Scale-out: label tasks on Dask worker processes, each building its own engine by name, commit the same
labels as a thread run; a worker killed mid-shard has its shard run again elsewhere."""

from __future__ import annotations

import pytest

from steplabel.flows import resources
from steplabel.flows.config import RunConfig, parse_config
from steplabel.flows.pipeline import flow_for, run_id_for
from steplabel.storage.store import ShardStore
from tests.scripted_factory import FACTORY, KILL_ONCE_ENV, arithmetic_engine

COLUMNS = ["solution_id", "completions", "labels", "mc_scores", "tool_verdicts", "first_error"]
CONFIG = {
    "source": {"kind": "builtin", "num_problems": 8},
    "sampling": {"num_solutions": 2},
    "labeler": {"name": "math_shepherd", "k": 2},
    "shard_size": 2,
}


def with_orchestration(**orchestration) -> RunConfig:
    return parse_config({**CONFIG, "orchestration": orchestration})


def run(config: RunConfig, out) -> dict:
    return flow_for(config)(config=config.model_dump(mode="json"), out=str(out), run_id=run_id_for(config))


def labels_of(out) -> object:
    return ShardStore(out).read("step_labels").select(COLUMNS).sort("solution_id")


def test_orchestration_is_speed_only_and_in_flight_defaults_to_two_per_engine_process():
    threads, dask = with_orchestration(), with_orchestration(task_runner="dask", dask_workers=3)
    assert threads.hash() == dask.hash() == with_orchestration(max_shards_in_flight=7).hash()
    assert threads.orchestration.shards_in_flight == 2 and dask.orchestration.shards_in_flight == 6
    assert with_orchestration(task_runner="dask", max_shards_in_flight=1).orchestration.shards_in_flight == 1


def test_engine_factory_is_imported_by_name_and_a_bad_name_is_one_line(monkeypatch):
    monkeypatch.setenv(resources.ENGINE_FACTORY_ENV, FACTORY)
    assert resources.named_factory(FACTORY) is arithmetic_engine
    with resources.held():
        engine = resources.engine_for(with_orchestration().policy)
        assert engine.model_name == "scripted"
    with pytest.raises(ValueError, match=r"^STEPLABEL_ENGINE_FACTORY='tests.nope:x': cannot import it .*module:function$"):
        resources.named_factory("tests.nope:x")


@pytest.mark.flow
@pytest.mark.slow
def test_two_dask_workers_commit_the_labels_of_a_thread_run_and_a_killed_workers_shard_reruns(
    prefect_harness, tmp_path, monkeypatch
):
    monkeypatch.setenv(resources.ENGINE_FACTORY_ENV, FACTORY)  # spawned workers inherit it
    monkeypatch.setenv("STEPLABEL_TEST_SLEEP_S", "0.002")
    threads = run(with_orchestration(), tmp_path / "threads")
    assert threads["created"] and threads["shards"] == 4 and len(threads["shards_by_worker"]) == 1

    marker = tmp_path / "killed-once"
    monkeypatch.setenv(KILL_ONCE_ENV, str(marker))
    dask = run(with_orchestration(task_runner="dask", dask_workers=2), tmp_path / "dask")
    assert marker.exists()  # a worker died inside a shard's generation...
    assert dask["created"] and dask["shards_skipped"] == 0  # ...and that shard was labelled again elsewhere
    assert sum(dask["shards_by_worker"].values()) == 4
    assert len(dask["shards_by_worker"]) >= 2  # labelled in worker processes, not in the flow's
    assert labels_of(tmp_path / "dask").equals(labels_of(tmp_path / "threads"))
    assert ShardStore(tmp_path / "dask").verify() == []
    staging = tmp_path / "dask" / "staging"
    assert not staging.exists() or not any(staging.iterdir())
