"""Engine kinds by name -> (config class, factory). Adding an engine is its module, its config module and
one line here; the run config's ``EngineConfig`` union and the config hash's speed fields follow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import Field

from steplabel.rollouts.engines import llama_cpp_config, openai_config, vllm_config
from steplabel.rollouts.engines.base import Engine
from steplabel.rollouts.engines.config_base import EngineConfigBase

ENGINES: dict[str, tuple[type[EngineConfigBase], Callable[[Any], Engine]]] = {
    "llama_cpp": (llama_cpp_config.LlamaCppEngineConfig, llama_cpp_config.build),
    "openai": (openai_config.OpenAIEngineConfig, openai_config.build),
    "vllm": (vllm_config.VLLMEngineConfig, vllm_config.build),
}

# A union built from the registry: pydantic picks the member by ``kind``.
EngineConfig = Annotated[Union[tuple(config for config, _ in ENGINES.values())], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007


def build_engine(config: EngineConfigBase) -> Engine:
    """A new engine for ``config`` (callers that share engines go through ``flows.resources``)."""
    return ENGINES[config.kind][1](config)
