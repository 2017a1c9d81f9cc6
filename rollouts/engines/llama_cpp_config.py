"""Config of the llama.cpp engine (:mod:`steplabel.rollouts.engines.llama_cpp_engine`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from steplabel.rollouts.engines.base import Engine
from steplabel.rollouts.engines.config_base import EngineConfigBase


class LlamaCppEngineConfig(EngineConfigBase):
    """llama.cpp on the CPU. ``model_path: null`` uses the embedded Gemma 3 270M base model."""

    speed_fields: ClassVar[frozenset[str]] = frozenset({"n_threads"})
    kind: Literal["llama_cpp"] = "llama_cpp"
    model_path: str | None = None
    n_ctx: int = Field(2048, ge=256)
    n_threads: int | None = Field(
        None, ge=1, description="None: follow the free cores (every core this process may use, one fewer per core "
        "a neighbour keeps busy), re-checked at every call",
    )


def build(config: LlamaCppEngineConfig) -> Engine:
    """Imported on use: llama-cpp-python loads its native library at import."""
    from steplabel.rollouts.engines.llama_cpp_engine import LlamaCppEngine

    return LlamaCppEngine(config.model_path, n_ctx=config.n_ctx, n_threads=config.n_threads)
