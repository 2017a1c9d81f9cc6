"""Config of the vLLM engine (:mod:`steplabel.rollouts.engines.vllm_process`)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from steplabel.rollouts.engines.base import Engine
from steplabel.rollouts.engines.config_base import EngineConfigBase


class VLLMEngineConfig(EngineConfigBase):
    """vLLM offline ``LLM.generate`` in a worker process of its own (see docs/configuration.md).

    vLLM pins fastapi < 0.137 while Prefect 3.8.8 needs >= 0.139, so vLLM lives in its own environment:
    ``python`` is that environment's interpreter (null: this one). One model per process also means GPU
    memory is really released when the run ends.
    """

    speed_fields: ClassVar[frozenset[str]] = frozenset({"gpu_memory_utilization"})
    kind: Literal["vllm"] = "vllm"
    model: str
    python: str | None = None
    dtype: str = "auto"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = None
    tensor_parallel_size: int = Field(1, ge=1)
    enable_prefix_caching: bool = True
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="passed on to vllm.LLM(...)")


def build(config: VLLMEngineConfig) -> Engine:
    """The worker process is started here; nothing of vLLM is imported in this process."""
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
