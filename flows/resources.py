"""Long-lived objects a run shares across its shard tasks: engines and the grader.

A model is loaded once per process and reused by every shard; the policy and the completer share one
engine when their configs are equal. Users hold them with :func:`held`; the last holder out closes them,
so one flow finishing does not pull the model from under another flow in the same process (``serve``).
A process where no flow runs (a Dask or Ray worker) keeps them until it exits (:func:`hold_for_worker`).

Engines are built from their config by name, never shipped as live objects, so every worker process can
build its own: ``STEPLABEL_ENGINE_FACTORY=module:function`` replaces the built-in kinds with
``function(engine_config) -> Engine`` (how the tests run a scripted engine on Dask workers).
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from steplabel.rollouts.engines.base import Engine
from steplabel.rollouts.engines.registry import EngineConfig, build_engine
from steplabel.rollouts.grading import Grader, GradingConfig

log = logging.getLogger(__name__)
_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_graders: dict[float, Grader] = {}
_holders = 0
ENGINE_FACTORY_ENV = "STEPLABEL_ENGINE_FACTORY"


def engine_for(config: EngineConfig) -> Engine:
    key = config.model_dump_json()
    with _lock:
        if key not in _engines:
            factory = os.environ.get(ENGINE_FACTORY_ENV)
            _engines[key] = named_factory(factory)(config) if factory else build_engine(config)
        return _engines[key]


def named_factory(name: str) -> Callable[[EngineConfig], Engine]:
    """``module:function`` imported by name: a worker process builds its engine from the name alone."""
    module, _, attribute = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"{ENGINE_FACTORY_ENV}={name!r}: cannot import it ({error}); expected module:function") from None


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


def hold_for_worker() -> None:
    """Where no flow holds the resources (a Dask or Ray worker process runs only tasks), keep them until
    the process exits: each worker loads its model once instead of once per shard."""
    global _holders
    with _lock:
        if _holders:
            return
        _holders = 1
    atexit.register(_release_worker_hold)


def _release_worker_hold() -> None:
    global _holders
    with _lock:
        _holders = 0
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
