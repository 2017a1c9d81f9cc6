"""Shared fixtures. Prefect gets a temporary home and no telemetry before it is imported anywhere."""

from __future__ import annotations

import os
import tempfile

_PREFECT_HOME = tempfile.mkdtemp(prefix="steplabel-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def llama_engine():
    """The embedded real model on llama.cpp, loaded once per test module that asks for it (slow tests)."""
    pytest.importorskip("llama_cpp")
    from steplabel.rollouts.engines.llama_cpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(n_ctx=1024)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (starting one costs ~10-20 s here)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
