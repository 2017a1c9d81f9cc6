"""Scripted engines built by name, so that worker processes (Dask, Ray) build their own:
``STEPLABEL_ENGINE_FACTORY=tests.scripted_factory:arithmetic_engine``.

The script is the one of ``tests/run_pipeline_script.py`` (built-in problems solved right on even samples,
off by one on odd ones). Two switches, read from the environment so that spawned workers see them:
``STEPLABEL_TEST_SLEEP_S`` seconds per sample, and ``STEPLABEL_TEST_KILL_ONCE=PATH``: the first process
to generate while PATH is absent creates it and dies with ``os._exit`` (a worker killed mid-shard, once).
"""

from __future__ import annotations

import os
from functools import cache

from steplabel.rollouts.engines.base import GenerationRequest
from tests.run_pipeline_script import arithmetic_script_factory
from tests.scripted_engine import ScriptedEngine

KILL_ONCE_ENV = "STEPLABEL_TEST_KILL_ONCE"
SLEEP_ENV = "STEPLABEL_TEST_SLEEP_S"
FACTORY = "tests.scripted_factory:arithmetic_engine"


@cache
def _script():
    # generate_problems is prefix-stable: the first 1,000 built-in problems cover every test config
    return arithmetic_script_factory(1000, 0, float(os.environ.get(SLEEP_ENV, "0")))


def _kill_once(request: GenerationRequest) -> None:
    marker = os.environ.get(KILL_ONCE_ENV)
    if marker:
        try:
            with open(marker, "x"):
                pass
        except FileExistsError:
            return None
        os._exit(1)
    return None


def arithmetic_engine(config: object) -> ScriptedEngine:
    """The engine factory (any engine config gives the same scripted engine)."""
    return ScriptedEngine(_script(), fail_when=_kill_once)
