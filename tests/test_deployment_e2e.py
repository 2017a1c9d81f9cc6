"""The CPU deployment of deploy/prefect.yaml, for real: a Prefect server, a `process` work pool, `prefect deploy`,
a worker, `prefect deployment run`, and a committed version in the dataset.

This is the path a scheduled run takes, so it guards what unit tests cannot: that the pinned fastapi lets
Prefect's client and server agree (fastapi 0.151-0.154 turned every list call's `"limit": null` into a 422),
that the entrypoint loads from the pull step's working directory and that the flow runs in a worker's
subprocess. Every process listens on 127.0.0.1 only, has a temporary PREFECT_HOME and is killed (with its
descendants) at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from steplabel.flows.config import RunConfig
from steplabel.storage.store import ShardStore

pytestmark = [pytest.mark.slow, pytest.mark.flow, pytest.mark.timeout(240)]  # 40-75 s on 2 busy cores

REPO = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).with_name("prefect"))
DEPLOYMENT = "quickstart-cpu"
POOL = "local-cpu"
SERVER_START_S = 90
RUN_TIMEOUT_S = 150


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc): a flow run may sit in a session of its own."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_groups(groups: set[int], sig: signal.Signals) -> None:
    for group in groups:
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            pass


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process groups of ``process`` and all its descendants; 10 s later SIGKILL what is left."""
    groups = {process.pid}
    for pid in descendants(process.pid):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    signal_groups(groups, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    signal_groups(groups, signal.SIGKILL)
    process.wait(timeout=10)


class Prefect:
    """The `prefect` CLI against one server, with the environment a user's shell would have."""

    def __init__(self, home: Path, port: int) -> None:
        self.port = port
        self.api = f"http://127.0.0.1:{port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "COLUMNS": "240",  # wide enough that `prefect ... ls` tables do not elide names
            "PWD": str(REPO),  # `prefect deploy` fills {{ $PWD }} in prefect.yaml with it, as a shell would
        }
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, *args: str, log: Path) -> subprocess.Popen:
        """A long-running `prefect ...` in a process group of its own, output to ``log``."""
        with log.open("wb") as out:
            process = subprocess.Popen([PREFECT, *args], cwd=REPO, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(process)
        self.logs.append(log)
        return process

    def __call__(self, *args: str, timeout: float = 90) -> str:
        """Run `prefect --no-prompt ...` to completion; its output, or a failure that shows it and the
        tails of the server's and worker's logs."""
        done = subprocess.run([PREFECT, "--no-prompt", *args], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        output = done.stdout + done.stderr
        logs = "".join(f"\n--- {log.name} ---\n{log.read_text(errors='replace')[-4000:]}" for log in self.logs)
        assert done.returncode == 0, f"prefect {' '.join(args)} exited {done.returncode}:\n{output[-4000:]}{logs}"
        return output

    def wait_healthy(self, server: subprocess.Popen, log: Path) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            assert server.poll() is None, f"prefect server exited {server.returncode}:\n{log.read_text()[-4000:]}"
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        pytest.fail(f"prefect server not healthy after {SERVER_START_S} s:\n{log.read_text()[-4000:]}")


@pytest.fixture
def prefect(tmp_path: Path) -> Iterator[Prefect]:
    """A real `prefect server start` on a free local port; it and everything started through it die at the end."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    cli = Prefect(home, free_port())
    log = tmp_path / "server.log"
    server = cli.start("server", "start", "--host", "127.0.0.1", "--port", str(cli.port), log=log)
    try:
        cli.wait_healthy(server, log)
        yield cli
    finally:
        for process in reversed(cli.processes):
            stop(process)


def test_cpu_deployment_runs_on_a_worker_and_commits(prefect: Prefect, tmp_path: Path):
    out = tmp_path / "data"
    deployment = f"steplabel-pipeline/{DEPLOYMENT}"
    prefect("work-pool", "create", POOL, "--type", "process")
    prefect("deploy", "--prefect-file", "deploy/prefect.yaml", "--name", DEPLOYMENT, timeout=120)

    # what was registered: the pull step and the dataset path are this checkout, absolute
    (stored,) = httpx.post(f"{prefect.api}/deployments/filter", json={"deployments": {"name": {"any_": [DEPLOYMENT]}}},
                           timeout=10).json()
    assert stored["work_pool_name"] == POOL
    assert stored["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    assert stored["parameters"]["out"] == f"{REPO}/steplabel-data"
    declared = next(d for d in yaml.safe_load((REPO / "deploy" / "prefect.yaml").read_text())["deployments"]
                    if d["name"] == DEPLOYMENT)
    assert stored["parameters"]["config"] == declared["parameters"]["config"]
    assert [s["active"] for s in stored["schedules"]] == [False]

    prefect.start("worker", "start", "--pool", POOL, "--limit", "1", log=tmp_path / "worker.log")
    watched = prefect("deployment", "run", deployment, "--param", f"out={out}", "--watch",
                      "--watch-timeout", str(RUN_TIMEOUT_S), timeout=RUN_TIMEOUT_S + 30)  # exit 0: Completed
    assert "finished successfully in 'Completed'" in watched

    # the worker's flow run committed one version of the deployment's config: 2 problems x 2 solutions,
    # each a labelled row or a reject
    store = ShardStore(out)
    assert store.versions() == ["v0001"]
    manifest = store.manifest()
    config = RunConfig.model_validate(declared["parameters"]["config"])
    assert manifest.run_id == declared["parameters"]["run_id"] and manifest.config_hash == config.hash()
    labels, rejects = store.read("step_labels"), store.read("rejects")
    assert labels.height + rejects.height == 2 * 2, (labels.height, rejects.to_dicts())
    assert labels["solution_id"].n_unique() == labels.height
    assert set(labels["config_hash"]) <= {config.hash()}
    (flow_run,) = httpx.post(f"{prefect.api}/flow_runs/filter", json={}, timeout=10).json()
    assert flow_run["state_type"] == "COMPLETED" and flow_run["parameters"]["out"] == str(out)

    # the listing commands that hit 422s under fastapi 0.151-0.154 (their "limit": null)
    assert DEPLOYMENT in prefect("deployment", "ls")
    assert flow_run["name"] in prefect("flow-run", "ls")
    assert POOL in prefect("work-pool", "ls")
