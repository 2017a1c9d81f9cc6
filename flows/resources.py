"""Long-lived objects a run shares across its shard tasks: engines and the grader.

A model is loaded once per process and reused by every shard; the policy and the completer share one
engine when their configs are equal. Users hold them with :func:`held`; the last holder out closes them,
so one flow finishing does not pull the model from under another flow in the same process (``serve``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from steplabel.flows.config import EngineConfig, GradingConfig
from steplabel.rollouts.engines.base import Engine
from steplabel.rollouts.grading import Grader

log = logging.getLogger(__name__)
_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_graders: dict[float, Grader] = {}
_holders = 0


def build_engine(config: EngineConfig) -> Engine:
    if config.kind == "llama_cpp":
        from steplabel.rollouts.engines.llama_cpp_engine import LlamaCppEngine

        return LlamaCppEngine(config.model_path, n_ctx=config.n_ctx, n_threads=config.n_threads)
    if config.kind == "openai":
        from steplabel.rollouts.engines.openai_compat import OpenAICompatEngine

        return OpenAICompatEngine(
            base_urls=config.base_urls,
            model=config.model,
            max_concurrency=config.max_concurrency,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            api_key=os.environ.get(config.api_key_env) if config.api_key_env else None,
            split_n=config.split_n,
        )
    if config.kind == "vllm":
        from steplabel.rollouts.engines.vllm_process import VLLMProcessEngine

        return VLLMProcessEngine(
            config.model,
            python=config.python,
            dtype=config.dtype,
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_model_len=config.max_model_len,
            tensor_parallel_size=config.tensor_parallel_size,
            enable_prefix_caching=config.enable_prefix_caching,
            engine_kwargs=config.engine_kwargs,
        )
    raise ValueError(f"unknown engine kind {config.kind!r}")


def engine_for(config: EngineConfig) -> Engine:
    key = config.model_dump_json()
    with _lock:
        if key not in _engines:
            _engines[key] = build_engine(config)
        return _engines[key]


def grader_for(config: GradingConfig) -> Grader:
    with _lock:
        if config.timeout_s not in _graders:
            _graders[config.timeout_s] = Grader(timeout_s=config.timeout_s)
        return _graders[config.timeout_s]


@contextmanager
def held() -> Iterator[None]:
    """Keep the shared engines and graders open while any caller in this process holds them."""
    global _holders
    with _lock:
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                _close_all()


def _close_all() -> None:
    """Close every engine and grader (the caller holds ``_lock``). Best effort: a resource that fails to
    close is logged, the others still close, and the caller's own error (if any) is not replaced."""
    for resource in [*_engines.values(), *_graders.values()]:
        try:
            resource.close()
        except Exception:  # noqa: BLE001 - the run's result is already decided; keep closing the rest
            log.warning("closing %r failed", resource, exc_info=True)
    _engines.clear()
    _graders.clear()
