"""Shared engines stay open while any flow in the process holds them; the last holder closes them."""

from __future__ import annotations

import pytest

from steplabel.flows import resources
from steplabel.rollouts.engines.llama_cpp_config import LlamaCppEngineConfig
from steplabel.rollouts.grading import GradingConfig


class CountingEngine:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def built(monkeypatch):
    engines: list[CountingEngine] = []

    def build(config):
        engines.append(CountingEngine())
        return engines[-1]

    monkeypatch.setattr(resources, "build_engine", build)
    return engines


def test_engine_is_shared_and_closed_by_the_last_holder(built):
    config = LlamaCppEngineConfig()
    with resources.held():
        engine = resources.engine_for(config)
        with resources.held():  # a second flow in the same process (e.g. under `steplabel serve`)
            assert resources.engine_for(config) is engine
        assert engine.closed == 0, "the first flow's engine was closed under it"
    assert engine.closed == 1 and len(built) == 1
    with resources.held():
        assert resources.engine_for(config) is not engine  # a fresh one after everything closed


def test_a_failing_holder_still_releases(built):
    with pytest.raises(RuntimeError), resources.held():
        resources.engine_for(LlamaCppEngineConfig())
        raise RuntimeError("flow failed")
    assert built[0].closed == 1


def test_a_failing_close_does_not_hide_the_error_or_keep_a_closed_engine(built):
    with pytest.raises(RuntimeError, match="flow failed"), resources.held():
        engine = resources.engine_for(LlamaCppEngineConfig())
        engine.close = lambda: (_ for _ in ()).throw(TimeoutError("server went away"))
        grader = resources.grader_for(GradingConfig())
        raise RuntimeError("flow failed")  # the caller sees its own error, not the close's
    assert grader._closed  # the others still closed
    with resources.held():
        assert resources.engine_for(LlamaCppEngineConfig()) is not engine  # the failed one is not handed out
