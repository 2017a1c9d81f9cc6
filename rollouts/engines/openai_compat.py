"""Engine for any OpenAI-compatible ``/v1/completions`` server (vLLM serve, llama.cpp server, SGLang).

Requests run concurrently on an ``httpx.AsyncClient`` that lives on the engine's own event loop, in a
daemon thread the engine owns. ``generate`` is synchronous and hands the batch to that loop, so it works
the same from the main thread, from a worker thread with no event loop, from a Prefect task thread, and
from code that is itself inside a running event loop (that loop is merely blocked while it waits). The
client, and so its connection pool, lives as long as the engine; call :meth:`close` at the end.

The engine is a :class:`~steplabel.rollouts.engines.base.ContinuousEngine`: :meth:`submit` queues one
request on the loop and returns a future at once, thread-safely, so drivers of several shards can keep
the servers busy from their own threads without waiting for each other's batches.

Per endpoint, at most ``max_concurrency`` requests are in flight (an ``asyncio.Semaphore`` each); every
HTTP request goes to the least-loaded endpoint that is not cooling down after a connection failure, ties
broken round-robin, so a retry after a dead endpoint fails over to a live one.

Retries (tenacity, exponential backoff with jitter) cover connection errors, timeouts, HTTP 5xx and 429;
any other 4xx is final at once. A request that still fails gives ``GenerationResult(error=...)`` naming
the URL, the status and the server's message; one bad request never raises out of ``generate`` and never
yields a placeholder completion.

Seeds: with ``split_n=True`` (the default) a request with ``n`` samples is sent as ``n`` HTTP requests with
``n=1`` and ``seed=sample_seed(request.seed, i)``, because several servers (llama.cpp among them) ignore
``n`` or share one seed between choices. With ``split_n=False`` one HTTP request carries ``n`` and
``seed=request.seed`` (vLLM gives the children ``seed + i``, the same seeds as :func:`sample_seed`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from steplabel.rollouts.engines.base import (
    Completion,
    EngineError,
    GenerationRequest,
    GenerationResult,
    sample_seed,
)

log = logging.getLogger(__name__)

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
_MAX_MESSAGE_CHARS = 500


class _RequestFailed(Exception):
    """One HTTP attempt failed; ``retryable`` says whether another attempt may help."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass
class _Endpoint:
    base_url: str
    url: str
    semaphore: asyncio.Semaphore | None = None
    assigned: int = 0  # requests routed here that have not finished (waiting or in flight)
    down_until: float = 0.0  # monotonic time until which a connection failure keeps it out of rotation
    failures: int = 0
    sent: int = 0


@dataclass
class _SampleOutcome:
    choices: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None


def _normalize_base_url(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + "..."


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return _short(response.text) or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return _short(str(err["message"]))
        if isinstance(err, str):
            return _short(err)
        for key in ("message", "detail"):
            if body.get(key):
                return _short(str(body[key]))
    return _short(str(body))


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _split_tokens(total: int, k: int) -> list[int]:
    """``total`` completion tokens spread over ``k`` choices (the sum is kept exact)."""
    if k <= 0:
        return []
    base, rest = divmod(max(total, 0), k)
    return [base + (1 if i < rest else 0) for i in range(k)]


class OpenAICompatEngine:
    """The :class:`~steplabel.rollouts.engines.base.Engine` for OpenAI-compatible ``/v1/completions`` servers.

    Counters for cost accounting (cumulative over the engine's life):
    ``requests_sent`` HTTP requests sent (retries included), ``retries`` attempts that were retried,
    ``requests_failed`` HTTP requests (one per sample with ``split_n``) that failed after all retries,
    ``prompt_tokens`` / ``completion_tokens`` as reported by the servers.
    """

    def __init__(
        self,
        base_urls: Sequence[str] | str,
        model: str,
        *,
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        api_key: str | None = None,
        api_key_env: str | None = DEFAULT_API_KEY_ENV,
        split_n: bool = True,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        endpoint_cooldown_s: float = 30.0,
        extra_body: dict[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if isinstance(base_urls, str):
            base_urls = [base_urls]
        if not base_urls:
            raise EngineError("OpenAICompatEngine needs at least one base URL")
        if max_concurrency < 1:
            raise EngineError("max_concurrency must be >= 1")
        if max_retries < 0:
            raise EngineError("max_retries must be >= 0")
        self.model_name = model
        self.model = model
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.split_n = split_n
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._backoff = wait_exponential_jitter(multiplier=backoff_initial_s, max=backoff_max_s, jitter=backoff_initial_s)
        self.endpoint_cooldown_s = endpoint_cooldown_s
        self.extra_body = dict(extra_body or {})
        self._api_key = api_key if api_key is not None else (os.environ.get(api_key_env) if api_key_env else None)

        self.requests_sent = 0
        self.requests_failed = 0
        self.retries = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

        self._endpoints = []
        for raw in base_urls:
            base = _normalize_base_url(raw)
            self._endpoints.append(_Endpoint(base_url=base, url=f"{base}/v1/completions"))
        self._rr = itertools.count()

        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._headers = headers
        self._transport = transport

        self._closed = False
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._client: httpx.AsyncClient | None = None
        self._thread = threading.Thread(target=self._run_loop, name=f"openai-compat-{id(self):x}", daemon=True)
        self._thread.start()
        self._submit(self._setup()).result()

    # -- event loop plumbing ---------------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _setup(self) -> None:
        n = len(self._endpoints)
        for ep in self._endpoints:
            ep.semaphore = asyncio.Semaphore(self.max_concurrency)
        self._client = httpx.AsyncClient(
            headers=self._headers,
            timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
            limits=httpx.Limits(
                max_connections=self.max_concurrency * n,
                max_keepalive_connections=self.max_concurrency * n,
            ),
            transport=self._transport,
        )

    def __repr__(self) -> str:  # never shows the API key
        urls = [ep.base_url for ep in self._endpoints]
        return f"OpenAICompatEngine(base_urls={urls!r}, model={self.model_name!r}, split_n={self.split_n})"

    # -- public API ------------------------------------------------------------------------------------

    @property
    def base_urls(self) -> list[str]:
        return [ep.base_url for ep in self._endpoints]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, in order; a request that failed after retries carries ``error``."""
        requests = list(requests)
        if not requests:
            return []
        self._check_usable("generate")
        return self._submit(self._generate_all(requests)).result()

    def submit(self, request: GenerationRequest) -> concurrent.futures.Future[GenerationResult]:
        """Send one request now (it waits for a free slot of its endpoint); the future gives its result."""
        self._check_usable("submit")
        return self._submit(self._generate_one(request))

    def _check_usable(self, method: str) -> None:
        if self._closed:
            raise EngineError("OpenAICompatEngine is closed")
        if threading.current_thread() is self._thread:
            raise EngineError(f"{method}() called from the engine's own loop; use `await agenerate(...)`")

    async def agenerate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Async form of :meth:`generate` for callers that run their own event loop."""
        requests = list(requests)
        if not requests:
            return []
        if self._closed:
            raise EngineError("OpenAICompatEngine is closed")
        if asyncio.get_running_loop() is self._loop:
            return await self._generate_all(requests)
        return await asyncio.wrap_future(self._submit(self._generate_all(requests)))

    def stats(self) -> dict[str, int]:
        return {
            "requests_sent": self.requests_sent,
            "requests_failed": self.requests_failed,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._client is not None:
                self._submit(self._client.aclose()).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> OpenAICompatEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- request handling ------------------------------------------------------------------------------

    async def _generate_all(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return list(await asyncio.gather(*(self._generate_one(r) for r in requests)))

    def _body(self, request: GenerationRequest, *, n: int, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_name,
            "prompt": request.prompt,
            "n": n,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": seed,
            "stream": False,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        body.update(self.extra_body)
        return body

    async def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        if request.n < 1:
            return GenerationResult(error=f"invalid request: n={request.n} (must be >= 1)")
        if self.split_n:
            bodies = [self._body(request, n=1, seed=sample_seed(request.seed, i)) for i in range(request.n)]
        else:
            bodies = [self._body(request, n=request.n, seed=request.seed)]
        outcomes = await asyncio.gather(*(self._post_with_retries(b) for b in bodies), return_exceptions=True)

        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            first = errors[0]
            msg = first.message if isinstance(first, _RequestFailed) else f"{type(first).__name__}: {first}"
            if len(bodies) > 1:
                msg = f"{len(errors)} of {len(bodies)} samples failed; first: {msg}"
            return GenerationResult(error=msg)

        completions: list[Completion] = []
        prompt_tokens = 0
        for outcome in outcomes:
            assert isinstance(outcome, _SampleOutcome)
            try:
                part, p_tokens = self._parse(outcome)
            except (KeyError, TypeError, ValueError) as exc:
                return GenerationResult(error=f"malformed response from server: {type(exc).__name__}: {exc}")
            completions.extend(part)
            prompt_tokens = max(prompt_tokens, p_tokens)
        expected = request.n
        if len(completions) != expected:
            return GenerationResult(
                error=f"server returned {len(completions)} choices for n={expected} "
                f"(it may ignore `n`; use split_n=True)"
            )
        return GenerationResult(completions=completions, prompt_tokens=prompt_tokens)

    @staticmethod
    def _parse(outcome: _SampleOutcome) -> tuple[list[Completion], int]:
        choices = sorted(outcome.choices, key=lambda c: c.get("index", 0) or 0)
        usage = outcome.usage or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_total = usage.get("completion_tokens")
        if completion_total is None and usage.get("total_tokens") is not None:
            completion_total = int(usage["total_tokens"]) - prompt_tokens
        texts = [str(c["text"]) for c in choices]
        if completion_total is not None:
            counts = _split_tokens(int(completion_total), len(choices))
        else:  # no usage at all: a rough estimate so cost accounting does not read zero
            counts = [max(1, len(t) // 4) if t else 0 for t in texts]
        out = [
            Completion(text=t, finish_reason=str(c.get("finish_reason") or "unknown"), tokens=k)
            for t, c, k in zip(texts, choices, counts)
        ]
        return out, prompt_tokens

    def _pick_endpoint(self, avoid: _Endpoint | None) -> _Endpoint:
        now = time.monotonic()
        candidates = [ep for ep in self._endpoints if ep.down_until <= now] or list(self._endpoints)
        if avoid is not None and len(candidates) > 1:
            candidates = [ep for ep in candidates if ep is not avoid] or candidates
        start = next(self._rr) % len(self._endpoints)
        order = {id(ep): (i - start) % len(self._endpoints) for i, ep in enumerate(self._endpoints)}
        return min(candidates, key=lambda ep: (ep.assigned, order[id(ep)]))

    def _wait(self, state: RetryCallState) -> float:
        """tenacity's exponential backoff with jitter, stretched to the server's ``Retry-After`` (capped)."""
        base = self._backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RequestFailed) and exc.retry_after is not None:
            return max(base, min(exc.retry_after, self.backoff_max_s * 3))
        return base

    def _before_sleep(self, state: RetryCallState) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "retrying completion request (attempt %d/%d): %s",
            state.attempt_number,
            self.max_retries + 1,
            getattr(exc, "message", exc),
        )

    async def _post_with_retries(self, body: dict[str, Any]) -> _SampleOutcome:
        last: list[_Endpoint | None] = [None]

        async def attempt() -> _SampleOutcome:
            ep = self._pick_endpoint(avoid=last[0])
            last[0] = ep
            return await self._post_once(ep, body)

        try:
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.max_retries + 1),
                wait=self._wait,
                retry=retry_if_exception(lambda e: isinstance(e, _RequestFailed) and e.retryable),
                before_sleep=self._before_sleep,
                reraise=True,
            )
            return await retrying(attempt)
        except _RequestFailed as exc:
            self.requests_failed += 1
            if exc.retryable and self.max_retries:
                exc.message = f"{exc.message} (after {self.max_retries + 1} attempts)"
            raise

    async def _post_once(self, ep: _Endpoint, body: dict[str, Any]) -> _SampleOutcome:
        assert self._client is not None and ep.semaphore is not None
        ep.assigned += 1
        try:
            async with ep.semaphore:
                self.requests_sent += 1
                ep.sent += 1
                try:
                    response = await self._client.post(ep.url, json=body)
                except httpx.TimeoutException as exc:
                    raise _RequestFailed(
                        f"POST {ep.url}: timeout after {self.timeout_s:g}s ({type(exc).__name__})", retryable=True
                    ) from exc
                except (httpx.TransportError, OSError) as exc:
                    ep.failures += 1
                    ep.down_until = time.monotonic() + self.endpoint_cooldown_s
                    raise _RequestFailed(
                        f"POST {ep.url}: {type(exc).__name__}: {_short(str(exc)) or 'connection failed'}",
                        retryable=True,
                    ) from exc
        finally:
            ep.assigned -= 1

        status = response.status_code
        if status >= 400:
            message = f"POST {ep.url} -> HTTP {status}: {_server_message(response)}"
            retryable = status == 429 or status >= 500
            raise _RequestFailed(message, retryable=retryable, retry_after=_retry_after_seconds(response))
        ep.down_until = 0.0
        try:
            data = response.json()
        except ValueError as exc:
            raise _RequestFailed(
                f"POST {ep.url} -> HTTP {status}: response is not JSON: {_short(response.text)}", retryable=False
            ) from exc
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise _RequestFailed(
                f"POST {ep.url} -> HTTP {status}: no `choices` in response: {_short(str(data))}", retryable=False
            )
        for choice in data["choices"]:
            if not isinstance(choice, dict) or "text" not in choice:
                raise _RequestFailed(
                    f"POST {ep.url} -> HTTP {status}: a choice has no `text`: {_short(str(choice))}",
                    retryable=False,
                )
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        if usage:
            self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.completion_tokens += int(usage.get("completion_tokens") or 0)
        return _SampleOutcome(choices=data["choices"], usage=usage)
