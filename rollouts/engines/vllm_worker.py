"""A worker process that hosts one :class:`~steplabel.rollouts.engines.vllm_engine.VLLMEngine` behind JSON lines.

vLLM and Prefect cannot share one environment (their fastapi pins conflict), so the flow runs vLLM in a
separate interpreter: :class:`~steplabel.rollouts.engines.vllm_process.VLLMProcessEngine` starts
``[python, "-m", "steplabel.rollouts.engines.vllm_worker"]`` with ``PYTHONPATH`` pointing at the repository root and
talks to it over stdin/stdout. This module imports nothing of vLLM itself (the engine class does, lazily),
so it also runs in an interpreter without vLLM when the engine class is a test double.

Protocol: one JSON object per line, each way, strictly request -> reply.

- ``{"op": "init", "model": ..., "kwargs": {...}, "engine": "module:Class"}`` -> ``{"op": "ready",
  "model_name": ..., "pid": ...}`` or ``{"op": "error", "error": <last traceback line>, "traceback": ...}``
  (after which the worker exits). ``engine`` defaults to ``VLLMEngine``; the class is called as
  ``Class(model, **kwargs)``.
- ``{"op": "generate", "id": n, "requests": [GenerationRequest as dict, ...]}`` -> ``{"op": "result",
  "id": n, "results": [GenerationResult as dict, ...]}`` or ``{"op": "error", "id": n, "fatal": bool, ...}``;
  ``fatal`` (the engine raised :class:`~steplabel.rollouts.engines.base.EngineError`) means the worker exits next.
- ``{"op": "close"}`` -> the engine is closed, ``{"op": "closed"}``, exit. End of input closes as well.

The real stdout is moved aside first: the protocol writes to a private duplicate of fd 1 and fd 1 itself
becomes stderr, so whatever vLLM (or a library, or a child process) prints cannot corrupt the protocol.
stdin is moved aside the same way and fd 0 becomes ``/dev/null``.

vLLM spawns its engine process, hence the ``if __name__ == "__main__":`` guard below.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback
from dataclasses import asdict
from typing import Any, BinaryIO, TextIO

from steplabel.rollouts.engines.base import (
    Completion,
    EngineError,
    GenerationRequest,
    GenerationResult,
)

DEFAULT_ENGINE = "steplabel.rollouts.engines.vllm_engine:VLLMEngine"

log = logging.getLogger("steplabel.rollouts.engines.vllm_worker")


# --- (de)serialisation, shared with the client -------------------------------------------------------


def request_to_dict(request: GenerationRequest) -> dict[str, Any]:
    data = asdict(request)
    data["stop"] = list(request.stop)
    return data


def request_from_dict(data: dict[str, Any]) -> GenerationRequest:
    return GenerationRequest(
        prompt=data["prompt"],
        n=int(data["n"]),
        max_tokens=int(data["max_tokens"]),
        temperature=float(data["temperature"]),
        top_p=float(data["top_p"]),
        stop=tuple(data.get("stop") or ()),
        seed=int(data["seed"]),
    )


def result_to_dict(result: GenerationResult) -> dict[str, Any]:
    return {
        "completions": [asdict(c) for c in result.completions],
        "prompt_tokens": result.prompt_tokens,
        "error": result.error,
    }


def result_from_dict(data: dict[str, Any]) -> GenerationResult:
    return GenerationResult(
        completions=[
            Completion(text=c["text"], finish_reason=c["finish_reason"], tokens=int(c["tokens"]))
            for c in data.get("completions") or []
        ],
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        error=data.get("error"),
    )


def load_engine_class(spec: str) -> type:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"engine class must be 'module:Class', got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


# --- the worker --------------------------------------------------------------------------------------


def _last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


class _Channel:
    def __init__(self, reader: BinaryIO, writer: TextIO) -> None:
        self.reader = reader
        self.writer = writer

    def receive(self) -> dict[str, Any] | None:
        """The next message, or None at end of input."""
        while True:
            line = self.reader.readline()
            if not line:
                return None
            line = line.strip()
            if line:
                return json.loads(line)

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(json.dumps(message, ensure_ascii=True) + "\n")
        self.writer.flush()


def _take_stdio() -> _Channel:
    """Move the real stdin/stdout aside for the protocol; fd 1 becomes stderr, fd 0 becomes /dev/null."""
    sys.stdout.flush()
    proto_out = os.dup(1)  # os.dup makes non-inheritable fds: vLLM's children never see the protocol
    proto_in = os.dup(0)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    writer = os.fdopen(proto_out, "w", encoding="utf-8", newline="\n")
    reader = os.fdopen(proto_in, "rb")
    return _Channel(reader, writer)


def serve(channel: _Channel) -> int:
    message = channel.receive()
    if message is None:
        return 0
    if message.get("op") != "init":
        channel.send({"op": "error", "error": f"expected an init message, got {message.get('op')!r}"})
        return 2
    try:
        engine_cls = load_engine_class(message.get("engine") or DEFAULT_ENGINE)
        engine = engine_cls(message["model"], **(message.get("kwargs") or {}))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        log.error("engine failed to start", exc_info=True)
        channel.send({"op": "error", "error": _last_line(exc), "traceback": traceback.format_exc()})
        return 1
    channel.send({"op": "ready", "model_name": str(getattr(engine, "model_name", message["model"])),
                  "pid": os.getpid()})

    try:
        while True:
            message = channel.receive()
            if message is None:
                log.info("end of input: closing")
                return 0
            op = message.get("op")
            if op == "close":
                engine.close()
                engine = None
                channel.send({"op": "closed"})
                return 0
            if op != "generate":
                channel.send({"op": "error", "id": message.get("id"), "error": f"unknown op {op!r}"})
                continue
            fatal = False
            try:
                requests = [request_from_dict(r) for r in message["requests"]]
                results = engine.generate(requests)
                if len(results) != len(requests):
                    raise RuntimeError(f"engine returned {len(results)} results for {len(requests)} requests")
                payload = {"op": "result", "id": message.get("id"),
                           "results": [result_to_dict(r) for r in results]}
            except Exception as exc:  # noqa: BLE001 - the parent turns it into an EngineError
                log.error("generate failed", exc_info=True)
                # an EngineError means the engine itself is unusable (e.g. vLLM's engine process died):
                # the worker exits and the parent starts a fresh one on its next call
                fatal = isinstance(exc, EngineError)
                payload = {"op": "error", "id": message.get("id"), "error": _last_line(exc),
                           "traceback": traceback.format_exc(), "fatal": fatal}
            channel.send(payload)
            if fatal:
                return 3
    finally:
        if engine is not None:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.debug("engine close raised", exc_info=True)


def main() -> int:
    channel = _take_stdio()
    logging.basicConfig(level=os.environ.get("STEPLABEL_WORKER_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.info("vLLM worker %d started with %s", os.getpid(), sys.executable)
    try:
        return serve(channel)
    except BrokenPipeError:
        log.error("the parent went away")
        return 1


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # skip interpreter teardown: vLLM's atexit hooks and lingering threads can hang a clean exit
    os._exit(code)
