"""Scale-out on Dask: 2 local worker processes against the thread runner, same 16-shard scripted run.

Each run is the real pipeline flow (``flow_for``) on a temporary Prefect server. The engine is the scripted
one of the tests, built by name in every process (``STEPLABEL_ENGINE_FACTORY``), with one model's
behaviour: calls to one engine are serialised (as llama.cpp's lock does) and each sample costs
``--sample-ms``. The thread runner shares one engine in the flow's process; Dask gives each worker its
own. The benchmark prints the wall time of both, the shards each worker process labelled (both workers
must be busy), and checks that both committed identical labels.

    python benchmarks/dask_scaleout.py [--problems 32] [--shard-size 2] [--workers 2] [--sample-ms 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="steplabel-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from benchmarks.reporting import show_and_save  # noqa: E402
from steplabel.rollouts.engines.base import GenerationRequest, GenerationResult  # noqa: E402
from tests.scripted_engine import ScriptedEngine  # noqa: E402
from tests.scripted_factory import SLEEP_ENV, arithmetic_engine  # noqa: E402

FACTORY = "benchmarks.dask_scaleout:serial_engine"
COLUMNS = ["solution_id", "completions", "labels", "mc_scores", "tool_verdicts", "first_error"]


class SerialEngine:
    """The scripted engine with one model's limit: one generate call at a time per process."""

    def __init__(self, inner: ScriptedEngine) -> None:
        self.inner, self.model_name, self._lock = inner, inner.model_name, threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        with self._lock:
            return self.inner.generate(requests)

    def close(self) -> None:
        self.inner.close()


def serial_engine(config: object) -> SerialEngine:
    return SerialEngine(arithmetic_engine(config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-ms", type=float, default=40.0)
    args = parser.parse_args()
    os.environ["STEPLABEL_ENGINE_FACTORY"] = FACTORY  # inherited by the Dask workers the flow spawns
    os.environ[SLEEP_ENV] = str(args.sample_ms / 1000)

    from distributed import LocalCluster
    from prefect.testing.utilities import prefect_test_harness

    from steplabel.flows.config import parse_config
    from steplabel.flows.pipeline import flow_for, run_id_for
    from steplabel.storage.store import ShardStore

    base = {"source": {"kind": "builtin", "num_problems": args.problems}, "sampling": {"num_solutions": 4},
            "labeler": {"name": "math_shepherd", "k": 4}, "shard_size": args.shard_size}
    runs = {"thread": {}, "dask": {"task_runner": "dask", "dask_workers": args.workers}}
    results, labels = {}, {}
    started = time.monotonic()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True):
        pass
    cluster_start_s = time.monotonic() - started  # what the dask run pays before its first shard
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        for name, orchestration in runs.items():
            config = parse_config({**base, "orchestration": orchestration})
            out = Path(tmp) / name
            results[name] = flow_for(config)(config=config.model_dump(mode="json"), out=str(out), run_id=run_id_for(config))
            labels[name] = ShardStore(out).read("step_labels").select(COLUMNS).sort("solution_id")
    thread, dask = results["thread"], results["dask"]
    identical = labels["dask"].equals(labels["thread"])
    per_worker = sorted(dask["shards_by_worker"].values(), reverse=True)
    result = {
        "shards": dask["shards"],
        "labelled_solutions": labels["dask"].height,
        "sample_ms": args.sample_ms,
        "thread_wall_s": round(thread["wall_s"], 2),
        "thread_shards_by_process": thread["shards_by_worker"],
        "dask_workers": args.workers,
        "dask_wall_s": round(dask["wall_s"], 2),  # includes starting the local cluster
        "dask_cluster_start_s": round(cluster_start_s, 2),
        "dask_shards_by_worker": dask["shards_by_worker"],
        "dask_shards_in_flight": 2 * args.workers,
        "speedup": round(thread["wall_s"] / dask["wall_s"], 2),
        "speedup_after_cluster_start": round(thread["wall_s"] / (dask["wall_s"] - cluster_start_s), 2),
        "labels_identical": identical,
    }
    busy = len(per_worker) == args.workers and per_worker[-1] > 0
    verdict = (f"{'PASS' if identical and busy else 'FAIL'}: {args.workers} Dask workers labelled "
               f"{'/'.join(map(str, per_worker))} shards, {result['dask_wall_s']} s vs {result['thread_wall_s']} s "
               f"on threads (one engine), labels {'identical' if identical else 'DIFFER'}")
    show_and_save("scale-out: Dask workers vs the thread runner (scripted engine)", result, verdict,
                  Path(__file__).with_name("results") / "dask_scaleout.json")


if __name__ == "__main__":
    main()
