"""Config of the OpenAI-compatible client engine (:mod:`steplabel.rollouts.engines.openai_compat`)."""

from __future__ import annotations

import os
from typing import ClassVar, Literal

from pydantic import Field

from steplabel.rollouts.engines.base import Engine
from steplabel.rollouts.engines.config_base import EngineConfigBase


class OpenAIEngineConfig(EngineConfigBase):
    """Any OpenAI-compatible /v1/completions server (vLLM serve, llama.cpp server, SGLang)."""

    speed_fields: ClassVar[frozenset[str]] = frozenset({"max_concurrency", "timeout_s", "max_retries"})
    kind: Literal["openai"] = "openai"
    base_urls: list[str] = Field(min_length=1)
    model: str
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0)
    api_key_env: str | None = "OPENAI_API_KEY"
    split_n: bool = True


def build(config: OpenAIEngineConfig) -> Engine:
    """The API key is read from the environment here, so it never enters the config or its hash."""
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
