"""Fault tolerance of the whole pipeline: SIGKILL at random points and resume; a flaky / dead
OpenAI-compatible server; two writers committing to one dataset at once (threads and processes)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import polars as pl
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for `factories` under any import mode
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from factories import expected_stats, make_reject_rows, make_step_label_rows  # noqa: E402

from steplabel.flows.config import RunConfig, parse_config  # noqa: E402
from steplabel.rollouts.builtin_problems import generate_problems  # noqa: E402
from steplabel.rollouts.sources import load_problems  # noqa: E402
from steplabel.storage.schema import REJECTS, STEP_LABELS  # noqa: E402
from steplabel.storage.store import FsspecFS, ShardStore  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "run_pipeline_script.py"
COMPARED = ["solution_id", "problem_id", "completions", "labels", "mc_scores", "mc_correct", "mc_total", "first_error"]


def assert_complete(store: ShardStore, config: RunConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every problem's samples are labelled or rejected with a reason; no duplicates; no placeholder rows."""
    labels, rejects = store.read(STEP_LABELS), store.read(REJECTS)
    assert labels["solution_id"].n_unique() == labels.height, "duplicate labelled solutions"
    # a `duplicate_solution` reject carries the id of the sample it duplicates (rollouts/sampling.py), so
    # item_id is unique only among the other rejects
    unique = rejects.filter(pl.col("reason") != "duplicate_solution")
    dups = unique.filter(pl.col("item_id").is_duplicated()).select("item_id", "solution_id", "stage", "reason", "detail")
    assert dups.height == 0, f"duplicate rejects: {dups.sort('item_id').to_dicts()}"
    problems, _ = load_problems(config.source)
    n = config.sampling.num_solutions
    for problem in problems:
        pid = problem.problem_id
        mine = rejects.filter(pl.col("problem_id") == pid)
        whole = mine.filter(pl.col("solution_id").is_null())
        done = labels.filter(pl.col("problem_id") == pid).height + mine.filter(pl.col("solution_id").is_not_null()).height
        assert whole.height or done == n, f"{pid}: {done} of {n} samples accounted for and no problem-level reject"
    assert rejects.filter(pl.col("reason").is_null() | (pl.col("reason") == "")).height == 0
    assert rejects.filter(pl.col("detail").is_null() | (pl.col("detail") == "")).height == 0
    # no placeholder rows: real completions, one non-null label per step
    assert labels.filter(pl.col("completions").list.len() == 0).height == 0
    assert labels.select(pl.col("completions").list.eval(pl.element().str.strip_chars() == "").list.any().sum()).item() == 0
    assert labels.filter(pl.col("labels").is_null() | (pl.col("labels").list.len() != pl.col("completions").list.len())).height == 0
    assert labels.select(pl.col("labels").list.eval(pl.element().is_null()).list.any().sum()).item() == 0
    return labels, rejects


# ----------------------------------------------------------------------------------------------------------
# (a) SIGKILL at random points, resume, compare with an uninterrupted run
# ----------------------------------------------------------------------------------------------------------
CRASH_CONFIG = {
    "source": {"kind": "builtin", "num_problems": 40},
    "sampling": {"num_solutions": 4},
    "labeler": {"name": "math_shepherd", "k": 4},
    "shard_size": 2,
}


class Child:
    """The pipeline in a subprocess (its own process group) whose progress events we read line by line;
    ``crash_at`` names the point where it kills itself (see tests/run_pipeline_script.py)."""

    def __init__(self, config_file: Path, out: Path, env: dict[str, str], log: Path, crash_at: str | None = None):
        self.log_path = log
        self.log = log.open("ab")
        crash = ["--crash-at", crash_at] if crash_at else []
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--config", str(config_file), "--out", str(out), "--sleep", "0.002",
             "--events", *crash],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self.log, start_new_session=True,
        )
        self.events: queue.Queue[str] = queue.Queue()
        self.result: dict | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line.startswith("EVENT "):
                self.events.put(line.split()[1])
            elif line.startswith("{"):
                self.result = json.loads(line)
        self.events.put("EOF")

    def wait_events(self, kinds: set[str], count: int, timeout: float) -> bool:
        """Wait until ``count`` events of ``kinds`` were seen; False if the child ended first."""
        seen, deadline = 0, time.monotonic() + timeout
        while seen < count:
            try:
                kind = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty as e:
                raise AssertionError(f"child made no progress in {timeout}s (see {self.log.name})") from e
            if kind == "EOF":
                return False
            seen += kind in kinds
        return True

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the child and anything it started (grader worker)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.log.close()

    def crashed(self, point: str, timeout: float = 180) -> None:
        """The child reached ``point`` and died there by its own SIGKILL."""
        rc = self.proc.wait(timeout=timeout)
        self.log.close()
        assert rc == -signal.SIGKILL, f"child ended with {rc}, not at {point}; see {self.log_path}"
        assert f"CRASH {point}" in self.log_path.read_text(errors="replace").splitlines()[-1], self.log_path

    def finish(self, timeout: float = 180) -> dict:
        rc = self.proc.wait(timeout=timeout)
        self.log.close()
        for _ in range(100):  # the reader thread may lag behind the exit
            if self.result is not None:
                break
            time.sleep(0.02)
        assert rc == 0 and self.result is not None, f"child failed with {rc}; see {self.log.name}"
        return self.result


@pytest.fixture(scope="module")
def child_env(prefect_harness, tmp_path_factory) -> dict[str, str]:
    """Children talk to the session harness's server instead of starting their own (~10 s each)."""
    from prefect.settings import PREFECT_API_URL

    home = tmp_path_factory.mktemp("prefect-home")
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PYTHONPATH=str(REPO),
    )
    return env


def _staged(out: Path) -> int:
    """Shards staged for the commit (labelled shards waiting for verification are not counted)."""
    staging = out / "staging"
    if not staging.exists():
        return 0
    return sum(1 for marker in staging.rglob("*.done") if not marker.parent.name.endswith("-unverified"))


def _torn(out: Path) -> int:
    """Staged table files whose shard has no marker: a stage killed between its files and its marker."""
    files = {(p.parent, p.name.split(".")[0]) for p in (out / "staging").rglob("*.parquet")}
    return sum(1 for parent, shard in files if not (parent / f"{shard}.done").exists())


def assert_same_as(reference: ShardStore, root: Path, config: RunConfig, shards_total: int) -> None:
    """``root`` committed exactly one version, equal to the uninterrupted run's, every file intact."""
    store = ShardStore(root)
    assert store.versions() == ["v0001"], (root, store.versions())
    labels, rejects = assert_complete(store, config)
    want = reference.read(STEP_LABELS).select(COMPARED).sort("solution_id")
    assert labels.select(COMPARED).sort("solution_id").equals(want), root
    assert rejects.select("item_id", "reason").sort("item_id").equals(
        reference.read(REJECTS).select("item_id", "reason").sort("item_id")
    )
    assert store.manifest().stats == reference.manifest().stats
    assert len(store.manifest().shards) == shards_total
    assert store.verify() == []  # every committed file has the sha256 its manifest records
    assert not list(root.rglob("*.tmp-*"))  # a killed writer's temporaries were removed
    assert not (root / "staging").exists() or not list((root / "staging").iterdir())


@pytest.fixture(scope="module")
def crash_setup(child_env, tmp_path_factory):
    """The crash config as a file, and one uninterrupted reference run of it (shared by the crash tests)."""
    tmp_path = tmp_path_factory.mktemp("reference")
    config = parse_config(CRASH_CONFIG)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.model_dump(mode="json")))
    shards_total = -(-40 // 2)
    reference = Child(config_file, tmp_path / "reference", child_env, tmp_path / "reference.log").finish()
    assert reference["created"] and reference["shards_skipped"] == 0 and reference["shards"] == shards_total
    return config, config_file, shards_total, ShardStore(tmp_path / "reference")


@pytest.mark.flow
def test_sigkill_at_named_points_then_resume_matches_an_uninterrupted_run(crash_setup, child_env, tmp_path: Path):
    """Each crash lands where the test says; after each the store is in the state that point implies, a
    damaged staging area is repaired by the next run, and the resumed run equals the uninterrupted one."""
    config, config_file, shards_total, reference = crash_setup
    out, log = tmp_path / "crashy", tmp_path / "crashy.log"

    def crash(point: str) -> None:
        Child(config_file, out, child_env, log, crash_at=point).crashed(point)
        assert ShardStore(out).latest() is None or point == "latest"

    crash("staged:3")
    assert _staged(out) == 3 and _torn(out) == 0
    crash("mid-stage:2")  # resumes the 3, stages one more, dies inside the next
    assert _staged(out) == 4 and _torn(out) == 1
    crash("staged:4")  # the torn shard is staged again from scratch
    assert _staged(out) == 8 and _torn(out) == 0
    # the jam of two writers on one run id: a staged file replaced by another shard's file under its marker
    first, second = sorted(p for p in (out / "staging").rglob("*.step_labels.parquet") if "-unverified" not in str(p))[:2]
    first.write_bytes(second.read_bytes())
    crash("promote:5")  # repairs (drops and recomputes that shard), stages the rest, dies inside the commit
    assert len(list((out / "shards").iterdir())) == 5 and _staged(out) == shards_total
    crash("manifest")
    assert (out / "versions" / "v0001.json").exists() and not (out / "LATEST").exists()
    resumed = Child(config_file, out, child_env, log).finish()
    assert resumed["version"] == "v0001" and resumed["created"]
    assert_same_as(reference, out, config, shards_total)

    out2 = tmp_path / "crashy-2"  # the end of the commit: a dead manifest write, then a dead cleanup
    out, log = out2, tmp_path / "crashy-2.log"
    crash("manifest-write")
    assert [p.name.split(".tmp-")[0] for p in (out / "versions").iterdir()] == ["v0001.json"]  # only the tmp
    crash("latest")
    assert ShardStore(out).latest() == "v0001" and _staged(out) == shards_total
    again = Child(config_file, out, child_env, log).finish()
    assert again["version"] == "v0001" and not again["created"]
    assert_same_as(reference, out, config, shards_total)


@pytest.mark.flow
def test_sigkill_at_random_moments_then_resume(crash_setup, child_env, tmp_path: Path):
    """An extra to the named points: kills at random moments (wherever they land) never lose or
    duplicate anything. Nothing here depends on where a kill lands."""
    config, config_file, shards_total, reference = crash_setup
    out = tmp_path / "random"
    rng = random.Random(20240611)
    for _ in range(3):
        child = Child(config_file, out, child_env, tmp_path / "random.log")
        child.wait_events({"run_started"}, 1, timeout=120)
        time.sleep(rng.uniform(0.0, 3.0))
        child.kill()
    resumed = Child(config_file, out, child_env, tmp_path / "random.log").finish()
    assert resumed["version"] == "v0001"
    assert_same_as(reference, out, config, shards_total)


# ----------------------------------------------------------------------------------------------------------
# (b) a real HTTP server that drops, stalls or fails ~10% of requests
# ----------------------------------------------------------------------------------------------------------
FLAKY_PROBLEMS = 8
FLAKY_ANSWERS = {p.question: p.answer for p in generate_problems(FLAKY_PROBLEMS)}


def scripted_text(prompt: str, seed: int) -> str:
    question = prompt.split("Question:")[-1]
    answer = FLAKY_ANSWERS.get(question.split("\n")[0].strip(), 0) + seed % 2
    if re.search(r"^Step \d+:", question, flags=re.MULTILINE):
        return f"Step 9: so it is {answer}."
    verb = ("add them up", "sum the numbers", "combine the amounts", "work it out")[seed % 4]
    return f"Step 1: {verb}.\nStep 2: that gives {answer}.\nThe answer is {answer}."


class FlakyServer:
    """``/v1/completions`` with scripted answers. Faults are deterministic per (prompt, seed, attempt):
    a request's first attempt fails for ~10% of keys (drop / stall past the client timeout / HTTP 500, in
    turn, by a counter) and every attempt fails for ~1% of keys (those samples must end in rejects)."""

    def __init__(self, stall_s: float = 2.0):
        self.attempts: dict[str, int] = {}
        self.faults = {"drop": 0, "stall": 0, "500": 0, "ok": 0}
        self.first_faults = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path.rstrip("/") != "/v1/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                key = hashlib.sha256(f"{body['prompt']}|{body['seed']}".encode()).digest()
                h = int.from_bytes(key[:4], "big")
                with server.lock:
                    attempt = server.attempts.get(key.hex(), 0)
                    server.attempts[key.hex()] = attempt + 1
                fault = None
                with server.lock:
                    if h % 100 == 0:
                        fault = "500"
                    elif h % 10 == 0 and attempt == 0:  # the kinds in turn, by a counter of first faults
                        fault = ("drop", "stall", "500")[server.first_faults % 3]
                        server.first_faults += 1
                    server.faults[fault or "ok"] += 1
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "stall":
                    time.sleep(stall_s)
                if fault == "500":
                    return self._send(500, {"error": {"message": "scripted server error"}})
                text = scripted_text(body["prompt"], int(body["seed"]))
                self._send(200, {
                    "id": "cmpl-1", "object": "text_completion", "model": body["model"],
                    "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": len(body["prompt"].split()), "completion_tokens": len(text.split())},
                })

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there: connection refused


@pytest.fixture
def flaky_server():
    server = FlakyServer()
    yield server
    server.close()


@pytest.mark.flow
@pytest.mark.parametrize("layout", ["one-flaky", "flaky-plus-dead"])
def test_flaky_and_dead_servers_end_labelled_or_rejected(prefect_harness, flaky_server, tmp_path, layout):
    from steplabel.flows.pipeline import pipeline_flow, run_id_for

    base_urls = [flaky_server.url] if layout == "one-flaky" else [dead_url(), flaky_server.url]
    config = parse_config({
        "source": {"kind": "builtin", "num_problems": FLAKY_PROBLEMS},
        "policy": {"kind": "openai", "base_urls": base_urls, "model": "scripted", "timeout_s": 1, "max_retries": 3},
        "sampling": {"num_solutions": 4},
        "labeler": {"name": "math_shepherd", "k": 3},
        "shard_size": 4,
    })
    started = time.monotonic()
    result = pipeline_flow(config=config.model_dump(mode="json"), out=str(tmp_path / "d"), run_id=run_id_for(config))
    wall = time.monotonic() - started
    assert result["version"] == "v0001" and result["problems"] == FLAKY_PROBLEMS
    faults = flaky_server.faults
    assert faults["drop"] and faults["stall"] and faults["500"], faults  # every kind of fault was served
    labels, rejects = assert_complete(ShardStore(tmp_path / "d"), config)
    assert labels.height >= FLAKY_PROBLEMS * 4 // 2, (labels.height, rejects.to_dicts())  # most samples survive the faults
    engine_errors = rejects.filter(pl.col("reason") == "engine_error")
    for detail in engine_errors["detail"]:  # the reason names the URL and what went wrong
        assert "127.0.0.1" in detail or "failed" in detail, detail
    print(f"\n{layout}: faults {faults}, {labels.height} labelled, {rejects.height} rejected, {wall:.1f} s")


# ----------------------------------------------------------------------------------------------------------
# (c) two writers committing to the same dataset at once
# ----------------------------------------------------------------------------------------------------------
CFG = {"labeler": "hard_mc"}


def _stage_run(store: ShardStore, run_id: str, shards: list[str], n: int = 20) -> None:
    for s in shards:
        store.stage(run_id, s, {
            STEP_LABELS: make_step_label_rows(n, run_id=run_id, shard_id=s),
            REJECTS: make_reject_rows(2, run_id=run_id, shard_id=s),
        })


def _check_two_writers(store: ShardStore, results: list[tuple], runs: dict[str, list[str]], n: int = 20) -> None:
    assert all(r[0] != "error" for r in results), results
    assert sorted((v, p) for v, p in results) == [("v0001", None), ("v0002", "v0001")]
    m = store.manifest()
    assert store.versions() == ["v0001", "v0002"] and set(m.run_ids) == set(runs)
    assert sorted(m.shards) == sorted(s for ss in runs.values() for s in ss)
    shards = sum(len(s) for s in runs.values())
    total = n * shards
    df = store.read()
    assert df.height == total and df["solution_id"].n_unique() == total
    assert store.read(REJECTS).height == 2 * shards
    per_shard = expected_stats([(n, 3)], rejects=2)  # what _stage_run stages
    assert {k: m.stats[k] for k in per_shard} == {k: shards * v for k, v in per_shard.items()}
    for entries in m.tables.values():
        for e in entries:  # nothing lost or corrupted
            path = store.fs.join(store.root, e.path)
            assert store.fs.sha256(path) == e.sha256
            assert pq.ParquetFile(store.fs.fs.open(path) if isinstance(store.fs, FsspecFS) else path).metadata.num_rows == e.rows


def _commit_in_thread(root: str, make, run_id: str, barrier: threading.Barrier, results: list) -> None:
    try:
        store = make(root)
        barrier.wait(timeout=30)
        m = store.commit(run_id, config=CFG, config_hash="h", code_version="t")
        results.append((m.version, m.parent))
    except BaseException as e:  # noqa: BLE001
        results.append(("error", repr(e)))


@pytest.mark.parametrize("kind", ["local", "memory", "fsspec-file"])
def test_two_writer_threads(tmp_path: Path, kind: str):
    import uuid

    root = {
        "local": str(tmp_path / "d"),
        "memory": f"memory://two-writers-{uuid.uuid4().hex[:8]}/d",
        "fsspec-file": f"file://{tmp_path}/d",
    }[kind]
    make = (lambda r: ShardStore(r, fs=FsspecFS(fsspec.filesystem("file")))) if kind == "fsspec-file" else ShardStore
    runs = {"ra": ["a0", "a1", "a2"], "rb": ["b0", "b1"]}
    for run, shards in runs.items():
        _stage_run(make(root), run, shards)
    barrier, results = threading.Barrier(2), []
    threads = [threading.Thread(target=_commit_in_thread, args=(root, make, r, barrier, results)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    _check_two_writers(make(root), results, runs)


def _commit_process(root: str, use_fsspec: bool, run_id: str, shards: list[str], barrier, out_queue) -> None:
    try:
        store = ShardStore(root, fs=FsspecFS(fsspec.filesystem("file"))) if use_fsspec else ShardStore(root)
        _stage_run(store, run_id, shards)
        barrier.wait(timeout=60)
        m = store.commit(run_id, config=CFG, config_hash="h", code_version="t")
        out_queue.put((m.version, m.parent))
    except BaseException as e:  # noqa: BLE001 - report instead of hanging the parent
        out_queue.put(("error", repr(e)))


@pytest.mark.parametrize("use_fsspec", [False, True], ids=["local-filelock", "fsspec-remote-lock"])
def test_two_writer_processes(tmp_path: Path, use_fsspec: bool):
    """Processes cannot share ``memory://``; ``FsspecFS`` on ``file://`` runs the object-store protocol
    (exclusive-create lock object and manifest claims) across real processes."""
    root = f"file://{tmp_path}/d" if use_fsspec else str(tmp_path / "d")
    ctx = mp.get_context("spawn")
    barrier, out_queue = ctx.Barrier(2), ctx.Queue()
    runs = {"ra": ["a0", "a1", "a2"], "rb": ["b0", "b1"]}
    procs = [ctx.Process(target=_commit_process, args=(root, use_fsspec, r, s, barrier, out_queue)) for r, s in runs.items()]
    for p in procs:
        p.start()
    results = [out_queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    store = ShardStore(root, fs=FsspecFS(fsspec.filesystem("file"))) if use_fsspec else ShardStore(root)
    _check_two_writers(store, results, runs)
    assert not list((tmp_path / "d").rglob("*.tmp-*"))  # no half-written file left, whichever lock
    if use_fsspec:
        assert not (tmp_path / "d" / ".lock").exists()  # the remote lock object is released
