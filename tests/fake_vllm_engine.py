"""A stand-in for VLLMEngine inside the vLLM worker process, to test the worker protocol without vLLM.

Loaded by the worker as ``tests.fake_vllm_engine:EchoEngine`` (the repository root is on its PYTHONPATH).
Special prompts and model names drive the failure paths:

- model ``"fail-init"``: the constructor raises; model ``"sleep-init"``: it sleeps for a minute.
- prompt ``"CRASH"``: the process dies mid-call (exit code 7) after writing to stderr.
- prompt ``"RAISE"``: ``generate`` raises ValueError; ``"DEAD"``: it raises EngineError (engine unusable).
- prompt ``"SLEEP"``: ``generate`` sleeps for a minute.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from steplabel.rollouts.engines.base import (
    Completion,
    EngineError,
    GenerationRequest,
    GenerationResult,
    sample_seed,
)


class EchoEngine:
    def __init__(self, model: str, *, close_marker: str | None = None, suffix: str = "", **kwargs) -> None:
        print("EchoEngine: noise on stdout that must not reach the protocol", flush=True)
        os.write(1, b"raw noise on fd 1\n")
        if model == "fail-init":
            raise RuntimeError(f"cannot load {model}")
        if model == "sleep-init":
            time.sleep(60)
        self.model_name = f"echo:{model}"
        self.close_marker = close_marker
        self.suffix = suffix
        self.kwargs = kwargs

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results = []
        for r in requests:
            if r.prompt == "CRASH":
                sys.stderr.write("EchoEngine: crashing now\n")
                sys.stderr.flush()
                os._exit(7)
            if r.prompt == "RAISE":
                raise ValueError("EchoEngine was asked to raise")
            if r.prompt == "DEAD":
                raise EngineError("EchoEngine's engine died")
            if r.prompt == "SLEEP":
                time.sleep(60)
            if r.n < 1:
                results.append(GenerationResult(error=f"invalid n={r.n}"))
                continue
            completions = [
                Completion(text=f"{r.prompt}|{sample_seed(r.seed, i)}|{','.join(r.stop)}{self.suffix}",
                           finish_reason="stop", tokens=i + 1)
                for i in range(r.n)
            ]
            results.append(GenerationResult(completions=completions, prompt_tokens=len(r.prompt)))
        return results

    def close(self) -> None:
        if self.close_marker:
            Path(self.close_marker).write_text(f"closed {os.getpid()} {sorted(self.kwargs)}")
