"""The one sampling-parameters type: the policy's solutions (``sampling:``) and the completer's rollouts
(``rollout:``) both use it, and every rollout or solution request is built from it."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from steplabel.rollouts.engines.base import GenerationRequest
from steplabel.storage.strict import StrictConfig


class SamplingParams(StrictConfig):
    """How a model samples (the run's ``rollout:`` section); the stop strings belong to the prompt format."""

    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(128, ge=1)

    def request(self, prompt: str, *, n: int, stop: Sequence[str], seed: int) -> GenerationRequest:
        """``n`` samples continuing ``prompt``; sample i uses ``seed + i``."""
        return GenerationRequest(prompt=prompt, n=n, max_tokens=self.max_tokens, temperature=self.temperature,
                                 top_p=self.top_p, stop=tuple(stop), seed=seed)


class SamplingConfig(SamplingParams):
    """Sampling of the policy's solutions, N per problem (the run's ``sampling:`` section)."""

    num_solutions: int = Field(4, ge=1)
    max_tokens: int = Field(160, ge=1)
