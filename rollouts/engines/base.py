"""The one engine interface every backend implements.

A request is a raw text prefix to continue. Each request carries its own seed, derived from
(base seed, problem, prefix) by :func:`derive_seed`; sample ``i`` of a request uses ``seed + i``, which is
what vLLM does for the children of an ``n > 1`` request. One seed broadcast over a batch would give
correlated samples (vLLM issue 50440), so nothing here ever does that.

Scheduling capability: an engine that serves requests one by one as they arrive (a server doing
continuous batching behind the ``openai`` engine) implements :class:`ContinuousEngine`; the driver then
sends each solution's next query as soon as its own results are back. Engines that batch synchronously
(llama.cpp in-process, the vLLM worker) implement only ``generate`` and get whole waves or micro-batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

SEED_MODULUS = 2**31 - 1  # llama.cpp and vLLM both accept 32-bit seeds


def derive_seed(base_seed: int, *parts: object) -> int:
    """A stable seed for one request from the run's base seed and what identifies the request."""
    digest = hashlib.blake2b(repr((base_seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SEED_MODULUS


def sample_seed(request_seed: int, index: int) -> int:
    """Seed of sample ``index`` of a request (vLLM V1 gives n>1 children ``seed + index``)."""
    return (request_seed + index) % SEED_MODULUS


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length" | engine specific
    tokens: int


@dataclass
class GenerationResult:
    """The n completions of one request, or the error that stopped it after the engine's retries."""

    completions: list[Completion] = field(default_factory=list)
    prompt_tokens: int = 0
    error: str | None = None

    @property
    def tokens_generated(self) -> int:
        return sum(c.tokens for c in self.completions)


class EngineError(RuntimeError):
    """An engine could not be started or used at all (as opposed to one failed request)."""


@runtime_checkable
class Engine(Protocol):
    """``generate`` returns one result per request, in order; a failed request carries ``error``."""

    model_name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]: ...

    def close(self) -> None: ...


@runtime_checkable
class ContinuousEngine(Engine, Protocol):
    """An engine that accepts work continuously: ``submit`` is thread-safe, returns at once, and the
    future resolves to the request's result (a failed request carries ``error``, like ``generate``)."""

    def submit(self, request: GenerationRequest) -> Future[GenerationResult]: ...
