"""The pipeline flow: source -> one task per shard (sample + label + stage) -> commit a version.

The flow validates its config once and hands the tasks small picklable values (paths, ids, the
:class:`RunConfig`, :class:`Problem` tuples); the heavy objects (models, grader) live in
:mod:`steplabel.flows.resources`, built by every process that runs shard tasks: the flow's own (thread
runner) or each Dask/Ray worker, ``orchestration.shards_in_flight`` shards at a time (docs/scale-out.md). The shard tasks persist their results as JSON and are cached by Prefect
on config hash + shard id, so rerunning the same config (or ``--resume``) skips finished shards. A
cached result only counts while the store still holds the shard's output: when it does not (the dataset
was deleted or moved), the task reruns and overwrites the record. Committing is idempotent (see
:mod:`steplabel.storage.store`). A run holds its run lock throughout, so a second process with the same
run id is refused, and it repairs its staging area before it starts (see ``docs/robustness.md``).
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import time
from collections import Counter, deque
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.concurrency.sync import concurrency

from steplabel.flows import resources
from steplabel.flows.config import RunConfig
from steplabel.flows.progress import ProgressEvent, emit
from steplabel.labelling.shard import (
    RunContext,
    ShardPlan,
    label_shard,
    plan_shards,
    source_reject_table,
    verify_table,
)
from steplabel.rollouts.engines.base import EngineError
from steplabel.rollouts.sources import Problem, load_problems
from steplabel.storage.schema import REJECTS, SCHEMAS, STEP_LABELS
from steplabel.storage.store import ShardStore, is_local_root, local_path
from steplabel.storage.strict import code_version

TRANSIENT_ERRORS = (OSError, TimeoutError, EngineError)
# Missing or forbidden paths fail the same way on every try.
PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O and engine trouble; a bug or bad data fails the same way again, so fail at once."""
    try:
        state.result()
    except PERMANENT_OS_ERRORS:
        return False
    except TRANSIENT_ERRORS:
        return True
    except Exception:  # noqa: BLE001 - anything else is deterministic
        return False
    return False


def shard_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect cache key of a shard task: task name + config hash + shard id. A remote dataset's records
    share Prefect's default result storage, so its key also names the dataset."""
    config_hash = parameters["config"].hash()
    out = parameters["out"]
    where = "" if is_local_root(out) else "-" + hashlib.sha256(out.encode()).hexdigest()[:8]
    return f"{context.task.name}-{config_hash[:16]}-{parameters['shard_id']}{where}"


def result_storage_for(out: str) -> Path | None:
    """Task results of a local dataset live next to it, so they go wherever the dataset goes; a remote
    dataset uses Prefect's default result storage (``PREFECT_LOCAL_STORAGE_PATH``)."""
    return (Path(local_path(out)) / "prefect-results").resolve() if is_local_root(out) else None


SHARD_TASK_OPTIONS: dict[str, Any] = {
    "cache_key_fn": shard_cache_key,
    "persist_result": True,
    "result_serializer": "json",
}


def shard_progress(store: ShardStore, run_id: str, shard_id: str,
                   committed: set[str] | None = None) -> tuple[bool, bool]:
    """(finished, labelled) by the store's own files: verified output staged or committed; labelled
    output, verified or not (only a run that defers verification stages it unverified)."""
    committed = store.committed_shard_ids() if committed is None else committed
    finished = shard_id in committed or store.is_staged(run_id, shard_id)
    return finished, finished or store.is_staged(unverified_run(run_id), shard_id)


def run_id_for(config: RunConfig) -> str:
    """Runs are named by their config: rerunning the same config resumes the same run."""
    return f"run-{config.hash()[:12]}"


@task(name="load-problems", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_if_transient)
def load_problems_task(out: str, run_id: str, config: RunConfig) -> list[Problem]:
    store = ShardStore(out)
    store.record_run_config(run_id, config.model_dump(mode="json"))
    problems, rejects = load_problems(config.source)
    if not problems and not rejects:  # nothing to label and nothing to report: not a version
        raise ValueError(f"the problem source ({config.source.kind}) holds no records")
    source_shard = f"source-{run_id}"  # per run: another run's source rejects are other records
    if rejects and not store.is_staged(run_id, source_shard):
        ctx = RunContext.now(run_id, config.hash())
        empty_labels = SCHEMAS[STEP_LABELS].empty_table()
        tables = {STEP_LABELS: empty_labels, REJECTS: source_reject_table(rejects, ctx, source_shard)}
        store.stage(run_id, source_shard, tables)
    get_run_logger().info("source: %d problems, %d rejected records", len(problems), len(rejects))
    return problems


@task(name="label-shard", task_run_name="label-shard-{shard_id}", retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=retry_if_transient, **SHARD_TASK_OPTIONS)
def label_shard_task(out: str, run_id: str, config: RunConfig, shard_id: str, problems: tuple[Problem, ...]) -> dict:
    """Label one shard and stage it. The report names the process that did it (``worker``), so a scale-out
    run can show how the shards spread."""
    resources.hold_for_worker()  # on a Dask/Ray worker: keep the engine for the next shard
    store = ShardStore(out)
    deferred = config.defers_verification
    if shard_progress(store, run_id, shard_id)[1]:  # a kill before Prefect's result record: staged, uncached
        return {"shard_id": shard_id, "skipped": True, "deferred": deferred}
    limit = config.orchestration.engine_concurrency_limit
    with concurrency(limit, occupy=1) if limit else nullcontext():  # a missing limit: a warning, no wait
        tables, report = label_shard(
            ShardPlan(shard_id, problems),
            config,
            RunContext.now(run_id, config.hash()),
            policy=resources.engine_for(config.policy),
            completer=resources.engine_for(config.completer_engine),
            grader=resources.grader_for(config.grading),
            judge=resources.engine_for(config.judge_engine) if config.judge_engine else None,
            on_wave=lambda w: emit(
                ProgressEvent("wave", shard_id=shard_id, samples=w.samples, tokens=w.tokens, active=w.active)
            ),
            verify=not deferred,
            scheduling=config.orchestration.scheduling,
        )
    store.stage(unverified_run(run_id) if deferred else run_id, shard_id, tables)
    get_run_logger().info(
        "shard %s: %d problems -> %d labelled solutions, %d rejects, %d rollouts, %d tokens",
        shard_id, report.problems, report.solutions, report.rejects, report.rollouts, report.tokens,
    )
    return {**report.as_dict(), "deferred": deferred, "worker": f"{socket.gethostname()}:{os.getpid()}"}


def unverified_run(run_id: str) -> str:
    """Where a run keeps shards that are labelled but not yet verified (never committed)."""
    return f"{run_id}-unverified"


@task(name="verify-shard", task_run_name="verify-shard-{shard_id}", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=retry_if_transient, **SHARD_TASK_OPTIONS)
def verify_shard_task(out: str, run_id: str, config: RunConfig, shard_id: str) -> str:
    """The engine-free finishing stage: sympy (+ hybrid) on a labelled shard, then stage it for the commit.

    Submitted to the flow's task runner as soon as the shard's labels are staged, so it overlaps with the
    labelling of the shards still in flight.
    """
    store = ShardStore(out)
    if not shard_progress(store, run_id, shard_id)[0]:
        work = unverified_run(run_id)
        labels = verify_table(store.read_staged(work, shard_id, STEP_LABELS), config)
        store.stage(run_id, shard_id, {STEP_LABELS: labels, REJECTS: store.read_staged(work, shard_id, REJECTS)})
    return shard_id


def flow_for(config: RunConfig) -> Any:
    """The pipeline flow with the task runner the config asks for."""
    orchestration = config.orchestration
    if orchestration.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as error:
            raise ValueError('orchestration.task_runner "dask" needs prefect-dask: pip install "steplabel[dask]"') from error

        if orchestration.dask_address:
            return pipeline_flow.with_options(task_runner=DaskTaskRunner(address=orchestration.dask_address))
        local = {"n_workers": orchestration.dask_workers, "threads_per_worker": 1, "processes": True}
        return pipeline_flow.with_options(task_runner=DaskTaskRunner(cluster_kwargs=local))
    if orchestration.task_runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as error:
            raise ValueError('orchestration.task_runner "ray" needs prefect-ray: pip install "steplabel[ray]"') from error

        local = {} if orchestration.ray_address else {"num_cpus": orchestration.dask_workers}
        return pipeline_flow.with_options(task_runner=RayTaskRunner(address=orchestration.ray_address, init_kwargs=local))
    return pipeline_flow


@task(name="commit-version", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_if_transient)
def commit_task(out: str, run_id: str, config: RunConfig, code_version: str) -> dict:
    manifest = ShardStore(out).commit(run_id, config=config.model_dump(mode="json"), config_hash=config.hash(),
                                      code_version=code_version)
    return {"version": manifest.version, "created": manifest.created}


def label_shards(store: ShardStore, out: str, run_id: str, config: RunConfig, plans: list[ShardPlan]) -> list[dict]:
    """Label every shard on the flow's task runner, ``orchestration.shards_in_flight`` at a time, and
    verify each deferred shard as soon as it is labelled; returns the label reports.

    A shard that fails stops new submissions; the shards already in flight finish and stay staged for the
    resume, then the first error is raised (nothing is committed half-labelled or half-verified).
    """
    committed = store.committed_shard_ids()
    storage = result_storage_for(out)
    label, verify = (t.with_options(result_storage=storage) if storage else t
                     for t in (label_shard_task, verify_shard_task))
    waiting, done = deque(plans), queue.SimpleQueue()
    in_flight: dict[Any, tuple[str, bool]] = {}
    reports, verifying, error = [], [], None
    while in_flight or (waiting and error is None):
        while waiting and error is None and len(in_flight) < config.orchestration.shards_in_flight:
            plan = waiting.popleft()
            finished, labelled = shard_progress(store, run_id, plan.shard_id, committed)
            # a cached result counts only while the store holds what the task made
            future = label.with_options(refresh_cache=not labelled).submit(out, run_id, config, plan.shard_id, plan.problems)
            in_flight[future] = (plan.shard_id, finished)
            emit(ProgressEvent("shard_started", shard_id=plan.shard_id))
            future.add_done_callback(done.put)
        future = done.get()
        sid, finished = in_flight.pop(future)
        try:
            report = future.result()
        except Exception as failure:  # noqa: BLE001 - raised below, once the shards in flight are staged
            error = error or failure
            continue
        if future.state.name == "Cached" or report.get("skipped"):
            report = {**report, "skipped": True}
            emit(ProgressEvent("shard_skipped", shard_id=sid))
        else:
            emit(ProgressEvent("shard_done", shard_id=sid, solutions=report["solutions"]))
        reports.append(report)
        if report.get("deferred"):
            verifying.append(verify.with_options(refresh_cache=not finished).submit(out, run_id, config, sid))
    for future in verifying:
        future.wait()  # a verification in flight finishes before the flow ends
    if error is not None:
        raise error
    for future in verifying:
        future.result()  # raises the task's error: nothing is committed half-verified
    return reports


@flow(name="steplabel-pipeline")
def pipeline_flow(config: dict[str, Any], out: str, run_id: str | None = None) -> dict[str, Any]:
    """Label the configured problems and commit a version; ``run_id`` None: named by the config's hash.

    ``config`` is validated here, once; the tasks get the validated :class:`RunConfig` and
    :class:`Problem` objects (pickled to Dask/Ray workers, never re-validated).
    """
    started = time.monotonic()
    run_config = RunConfig.model_validate(config)
    run_id = run_id or run_id_for(run_config)
    logger = get_run_logger()
    store = ShardStore(out)
    with store.run_lock(run_id), resources.held():
        for damage in store.repair_staging(run_id) + store.repair_staging(unverified_run(run_id)):
            logger.warning("staging repaired: %s", damage)
        problems = load_problems_task(out, run_id, run_config)
        plans = plan_shards(problems, run_config.shard_size, run_config.hash())
        emit(ProgressEvent("run_started", shards_total=len(plans)))
        reports = label_shards(store, out, run_id, run_config, plans)
        commit = commit_task(out, run_id, run_config, code_version())
        store.discard_staging(unverified_run(run_id))
    logger.info("committed %s (%s) in %.1f s", commit["version"], "new" if commit["created"] else "unchanged", time.monotonic() - started)
    labelled_by = Counter(r["worker"] for r in reports if not r.get("skipped"))
    return {
        "run_id": run_id,
        "version": commit["version"],
        "created": commit["created"],
        "problems": len(problems),
        "shards": len(plans),
        "shards_skipped": sum(1 for r in reports if r.get("skipped")),
        "shards_by_worker": dict(sorted(labelled_by.items())),
        "wall_s": time.monotonic() - started,
    }
