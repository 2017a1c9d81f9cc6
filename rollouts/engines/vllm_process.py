"""The vLLM engine in a separate process (and usually a separate interpreter).

vLLM and Prefect pin incompatible fastapi versions, so the flow's environment cannot import vLLM. The
:class:`VLLMProcessEngine` starts :mod:`steplabel.rollouts.engines.vllm_worker` with another interpreter (one that
has vLLM, e.g. ``/opt/vllm-venv/bin/python``), with ``PYTHONPATH`` set to this repository's root so the
worker imports this code even where steplabel is not installed there, and speaks JSON lines with it.

- Startup waits for the worker's ``ready`` (``startup_timeout_s``); a worker that fails, dies or times out
  raises :class:`~steplabel.rollouts.engines.base.EngineError` with the tail of its log.
- ``generate`` is one message and one reply. A worker that dies or times out mid-call raises
  ``EngineError`` naming the model and the log tail (the flow retries engine errors); the next call
  starts a fresh worker (``max_restarts`` in total).
- The worker's stdout and stderr (vLLM's own output) go to a log file, ``self.log_path``, in a temporary
  folder (or ``log_dir``); a temporary folder is removed after a clean ``close``.
- Calls are serialised with a lock: the object can be shared by threads.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steplabel.rollouts.engines.base import EngineError, GenerationRequest, GenerationResult
from steplabel.rollouts.engines.vllm_worker import (
    DEFAULT_ENGINE,
    request_to_dict,
    result_from_dict,
)

log = logging.getLogger(__name__)

WORKER_MODULE = "steplabel.rollouts.engines.vllm_worker"
_EOF = object()


@functools.cache
def worker_pythonpath() -> Path:
    """A folder holding the ``steplabel`` package and nothing else: what the worker gets on ``PYTHONPATH``.

    In a source checkout that is the repository root (``steplabel/__init__.py`` adds the folders beside it). An
    installed wheel lives in ``site-packages`` beside Prefect's fastapi and numpy, which must not shadow the vLLM
    environment's own, so the worker gets a private folder with one link to the package instead.
    """
    import steplabel

    package = Path(steplabel.__file__).resolve().parent
    if (package.parent / "flows" / "__init__.py").is_file():
        return package.parent
    folder = Path(tempfile.mkdtemp(prefix="steplabel-worker-path-"))
    (folder / "steplabel").symlink_to(package, target_is_directory=True)
    return folder


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    root = str(worker_pythonpath())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    # the main venv's activation must not leak into the other interpreter's view of itself
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONHOME", None)
    env.update(extra or {})
    return env


def _tail(path: Path | None, max_lines: int = 25, max_bytes: int = 8192) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = data.splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line is probably cut
    return "\n".join(lines[-max_lines:])


class VLLMProcessEngine:
    """The :class:`~steplabel.rollouts.engines.base.Engine` on a :class:`~steplabel.rollouts.engines.vllm_engine.VLLMEngine`
    hosted by a worker process started with ``python``.

    ``vllm_kwargs`` are :class:`VLLMEngine`'s keyword arguments (``seed``, ``dtype``,
    ``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size``, ``enable_prefix_caching``,
    ``tokenizer``, ``engine_kwargs``, ``use_tqdm``); they must be JSON-serialisable (paths are turned into
    strings). ``engine_class`` (``"module:Class"``) replaces ``VLLMEngine`` in the worker, for tests.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        python: str | Path | None = None,
        startup_timeout_s: float = 900,
        request_timeout_s: float = 3600,
        max_restarts: int = 3,
        log_dir: str | Path | None = None,
        engine_class: str = DEFAULT_ENGINE,
        env: dict[str, str] | None = None,
        **vllm_kwargs: Any,
    ) -> None:
        self.model = str(model)
        self.model_name = self.model
        self.python = str(python) if python else sys.executable
        self.startup_timeout_s = float(startup_timeout_s)
        self.request_timeout_s = float(request_timeout_s)
        self.max_restarts = int(max_restarts)
        self.engine_class = engine_class
        self._kwargs = {k: str(v) if isinstance(v, Path) else v for k, v in vllm_kwargs.items()}
        try:
            json.dumps(self._kwargs)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"VLLMProcessEngine keyword arguments must be JSON-serialisable: {exc}") from exc
        self._env = worker_env(env)
        if log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="steplabel-vllm-"))
            self._own_log_dir = True
        else:
            self._log_dir = Path(log_dir)
            self._log_dir.mkdir(parents=True, exist_ok=True)
            self._own_log_dir = False
        self.log_path: Path | None = None
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._replies: queue.Queue | None = None
        self._next_id = 0
        self._closed = False
        self._had_failure = False
        self.starts = 0
        self.restarts = 0
        with self._lock:
            self._start()

    # --- process management --------------------------------------------------------------------------

    def _start(self) -> None:
        self.starts += 1
        self.log_path = self._log_dir / f"worker-{self.starts}.log"
        log_file = open(self.log_path, "wb")
        cmd = [self.python, "-m", WORKER_MODULE]
        log.info("starting vLLM worker for %s: %s (log: %s)", self.model, " ".join(cmd), self.log_path)
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                env=self._env,  # cwd is inherited: a relative model path means the same in the worker
                start_new_session=True,  # its own process group: a kill also reaches vLLM's engine process
            )
        except OSError as exc:
            self._had_failure = True
            raise EngineError(f"could not start the vLLM worker for {self.model} with {self.python}: {exc}") from exc
        finally:
            log_file.close()
        self._proc = proc
        replies: queue.Queue = queue.Queue()
        self._replies = replies
        threading.Thread(target=self._read_replies, args=(proc, replies), daemon=True,
                         name=f"vllm-worker-{proc.pid}-reader").start()
        t0 = time.monotonic()
        try:
            self._send({"op": "init", "model": self.model, "kwargs": self._kwargs, "engine": self.engine_class})
            reply = self._receive(self.startup_timeout_s, "start")
        except EngineError:
            self._had_failure = True
            self._kill()
            raise
        if reply.get("op") != "ready":
            self._had_failure = True
            self._kill()
            raise EngineError(self._message(f"the vLLM worker could not start {self.model}: "
                                             f"{reply.get('error', reply)}"))
        self.model_name = str(reply.get("model_name") or self.model)
        log.info("vLLM worker %s ready for %s in %.1fs", proc.pid, self.model, time.monotonic() - t0)

    @staticmethod
    def _read_replies(proc: subprocess.Popen, replies: queue.Queue) -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.strip()
                if not line:
                    continue
                try:
                    replies.put(json.loads(line))
                except ValueError:
                    replies.put({"op": "garbage", "line": line[:500].decode("utf-8", "replace")})
        except (OSError, ValueError):
            pass
        finally:
            replies.put(_EOF)

    def _message(self, text: str) -> str:
        tail = _tail(self.log_path)
        msg = f"{text} (worker log: {self.log_path})"
        if tail:
            msg += "\n--- worker log tail ---\n" + tail
        return msg

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(message, ensure_ascii=True).encode() + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            self._wait_exit(5)
            raise EngineError(self._message(
                f"the vLLM worker for {self.model} is gone ({self._exit_text()}): {type(exc).__name__}")) from exc

    def _receive(self, timeout_s: float, what: str) -> dict[str, Any]:
        proc, replies = self._proc, self._replies
        assert proc is not None and replies is not None
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise EngineError(self._message(
                    f"the vLLM worker for {self.model} did not answer {what} within {timeout_s:g}s (killed)"))
            try:
                reply = replies.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                # the reader sees EOF when the worker dies; this also covers a child holding the pipe
                if proc.poll() is not None:
                    try:  # a last reply may still sit in the pipe
                        reply = replies.get(timeout=1.0)
                    except queue.Empty:
                        reply = _EOF
                else:
                    continue
            if reply is _EOF:
                self._wait_exit(5)
                raise EngineError(self._message(
                    f"the vLLM worker for {self.model} died during {what} ({self._exit_text()})"))
            if reply.get("op") == "garbage":
                log.warning("vLLM worker wrote a non-protocol line: %s", reply["line"])
                continue
            return reply

    def _wait_exit(self, timeout_s: float) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass

    def _exit_text(self) -> str:
        proc = self._proc
        code = proc.poll() if proc is not None else None
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def _kill(self) -> None:
        """Kill the worker's process group (the worker and the engine process vLLM spawned)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:  # SIGKILL what is left of the group (vLLM's engine process may outlive the worker)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable
            log.error("vLLM worker %s did not die", proc.pid)
        self._close_pipes(proc)

    @staticmethod
    def _close_pipes(proc: subprocess.Popen) -> None:
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- Engine ----------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._alive() else None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        requests = list(requests)
        with self._lock:
            if self._closed:
                raise EngineError(f"VLLMProcessEngine for {self.model} is closed")
            if not requests:
                return []
            if not self._alive():
                if self.restarts >= self.max_restarts:
                    raise EngineError(self._message(
                        f"the vLLM worker for {self.model} is not running and was restarted "
                        f"{self.restarts} times already"))
                self.restarts += 1
                log.warning("restarting the vLLM worker for %s (restart %d)", self.model, self.restarts)
                self._kill()  # reap the old one and whatever it left behind
                self._start()
            self._next_id += 1
            call_id = self._next_id
            self._send({"op": "generate", "id": call_id, "requests": [request_to_dict(r) for r in requests]})
            try:
                reply = self._receive(self.request_timeout_s, f"a generate call of {len(requests)} requests")
            except EngineError:
                self._had_failure = True
                self._kill()
                raise
            if reply.get("op") == "error":
                text = f"vLLM worker for {self.model}: generate failed: {reply.get('error')}"
                if reply.get("fatal"):
                    self._had_failure = True
                    self._wait_exit(30)
                    self._kill()  # the next call starts a fresh worker
                    text += " (engine unusable; the worker exited)"
                raise EngineError(self._message(text))
            if reply.get("op") != "result" or reply.get("id") != call_id:
                self._had_failure = True
                self._kill()
                raise EngineError(self._message(
                    f"the vLLM worker for {self.model} answered out of protocol: {str(reply)[:300]}"))
            results = [result_from_dict(r) for r in reply["results"]]
            if len(results) != len(requests):
                raise EngineError(f"the vLLM worker returned {len(results)} results for {len(requests)} requests")
            return results

    def close(self, timeout_s: float = 60) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            proc = self._proc
            clean = False
            if proc is not None and proc.poll() is None:
                try:
                    self._send({"op": "close"})
                    reply = self._receive(timeout_s, "close")
                    clean = reply.get("op") == "closed"
                    proc.wait(timeout=timeout_s)
                except (EngineError, subprocess.TimeoutExpired):
                    clean = False
            if proc is not None:
                if clean:
                    self._close_pipes(proc)
                else:
                    self._kill()  # the worker and whatever vLLM left in its process group
            if clean and not self._had_failure and self._own_log_dir:
                shutil.rmtree(self._log_dir, ignore_errors=True)
            elif self.log_path is not None:
                log.info("vLLM worker log kept at %s", self.log_path)

    def __enter__(self) -> VLLMProcessEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - a safety net; close() is the API
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None and not getattr(self, "_closed", True):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except Exception:
                pass


# --- GGUF conversion in the other interpreter ---------------------------------------------------------

_CONVERT_SCRIPT = """
import json, sys
from steplabel.rollouts.engines.gguf_to_hf import convert_gguf_to_hf
args = json.loads(sys.argv[1])
out = convert_gguf_to_hf(args.pop("gguf_path"), args.pop("out_dir"), **args)
print("STEPLABEL_HF_DIR=" + str(out))
"""


def convert_gguf_to_hf_in(python: str | Path, gguf_path: str | Path, out_dir: str | Path, *,
                          dtype: str = "float32", add_bos_token: bool | None = None, overwrite: bool = False,
                          timeout_s: float = 3600) -> Path:
    """Run :func:`~steplabel.rollouts.engines.gguf_to_hf.convert_gguf_to_hf` with another interpreter (one with
    transformers, torch and gguf, e.g. the vLLM one) and return the HF folder."""
    args = {"gguf_path": str(gguf_path), "out_dir": str(out_dir), "dtype": dtype,
            "add_bos_token": add_bos_token, "overwrite": overwrite}
    try:
        proc = subprocess.run([str(python), "-c", _CONVERT_SCRIPT, json.dumps(args)], env=worker_env(),
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"GGUF -> HF conversion with {python} took more than {timeout_s:g}s") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"GGUF -> HF conversion with {python} failed (exit {proc.returncode}):\n{tail}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("STEPLABEL_HF_DIR=")]
    if not lines:
        raise RuntimeError(f"GGUF -> HF conversion with {python} printed no output folder: {proc.stdout[-500:]}")
    return Path(lines[-1].split("=", 1)[1])
