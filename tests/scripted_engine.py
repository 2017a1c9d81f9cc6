"""A scripted engine for tests: answers come from a function of (prompt, sample index, seed).

It lets tests plant exact rollout outcomes (e.g. 3 of 4 samples from this prefix reach the answer) and
check the labelers' MC arithmetic against hand-computed values. ``truncate_when(request, index)`` plants
a sample cut off by ``max_tokens`` (``finish_reason="length"``). Never used by the product.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from steplabel.rollouts.engines.base import (
    Completion,
    GenerationRequest,
    GenerationResult,
    sample_seed,
)

Script = Callable[[GenerationRequest, int], str]


class ScriptedEngine:
    def __init__(self, script: Script, model_name: str = "scripted",
                 fail_when: Callable[[GenerationRequest], str | None] | None = None,
                 truncate_when: Callable[[GenerationRequest, int], bool] | None = None) -> None:
        self.script = script
        self.model_name = model_name
        self.fail_when = fail_when
        self.truncate_when = truncate_when
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(list(requests))
        results = []
        for request in requests:
            error = self.fail_when(request) if self.fail_when else None
            if error:
                results.append(GenerationResult(error=error))
                continue
            completions = []
            for index in range(request.n):
                text = self.script(request, index)
                cut = self.truncate_when is not None and self.truncate_when(request, index)
                completions.append(Completion(text=text, finish_reason="length" if cut else "stop",
                                              tokens=len(text.split())))
            results.append(GenerationResult(completions=completions, prompt_tokens=len(request.prompt.split())))
        return results

    @property
    def samples(self) -> int:
        return sum(r.n for call in self.calls for r in call)

    def close(self) -> None:
        pass


def seeded_index(request: GenerationRequest, index: int) -> int:
    """The per-sample seed, handy for scripts that want reproducible pseudo-randomness."""
    return sample_seed(request.seed, index)
