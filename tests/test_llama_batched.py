"""The batched in-process llama.cpp engine: scheduling helpers, and the real model (slow)."""

from __future__ import annotations

import pytest

from steplabel.rollouts.engines.base import GenerationRequest
from steplabel.rollouts.engines.llama_cpp_engine import (
    KV_WINDOWS,
    MAX_PARALLEL,
    BatchPlan,
    common_prefix,
    FreeCores,
    first_stop,
)

STOP = ("\n\n", "\nQuestion:")
QUESTIONS = (
    "Mia has 4 apples and buys 3 more. How many apples does she have?",
    "Tom has 12 pens. He gives 5 away and buys 7. How many pens does he have now?",
    "A box holds 6 eggs. How many eggs are in 5 boxes?",
)


def test_first_stop_finds_the_earliest_stop_string():
    assert first_stop("Step 1: 3\nQuestion: x\n\ny", STOP) == 9
    assert first_stop("a\n\nb\nQuestion:", STOP) == 1
    assert first_stop("no stop here", STOP) == -1
    assert first_stop("empty stops are ignored", ("",)) == -1


def test_common_prefix_counts_shared_leading_tokens():
    assert common_prefix([1, 2, 3, 4], [1, 2, 9]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5, 6], [5, 6, 7]) == 2


def test_batch_plan_follows_from_n_ctx():
    plan = BatchPlan.from_n_ctx(2048)
    assert plan.kv_cells == 2048 * KV_WINDOWS
    assert plan.n_seq == MAX_PARALLEL + 1  # sequence 0 holds the shared prefix
    assert plan.n_batch >= plan.n_seq  # one decoding step of every sequence fits one batch


def test_free_cores_runs_one_thread_fewer_per_busy_neighbour_core(monkeypatch):
    """The busy ticks of /proc/stat that are not this process family's are a neighbour's: 1 busy core of 2
    leaves 1 thread, an idle machine gets both, and a window too short to tell keeps the last answer."""
    from steplabel.rollouts.engines import llama_cpp_engine as engine

    clock = {"elapsed": 100.0, "machine": 0, "family": 0}
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(engine, "available_cores", lambda: 2)
    monkeypatch.setattr(engine.os, "times", lambda: type("T", (), {"elapsed": clock["elapsed"]})())
    monkeypatch.setattr(engine, "_jiffies", lambda cores: clock["machine"])
    monkeypatch.setattr(engine, "_family_jiffies", lambda: clock["family"])
    monkeypatch.setattr(engine.os, "sysconf", lambda name: 100)
    free = FreeCores()
    assert free.ceiling == 2

    clock.update(elapsed=102.0, machine=400, family=400)  # 2 s, both cores ours: idle neighbours
    assert free.threads() == 2
    clock.update(elapsed=104.0, machine=800, family=600)  # 2 s, a neighbour took 200 ticks = 1 core
    assert free.threads() == 1
    clock.update(elapsed=104.1, machine=805, family=805)  # 0.1 s: too short, keep 1
    assert free.threads() == 1
    clock.update(elapsed=106.0, machine=1200, family=1200 - 90)  # 0.45 of a core busy: rounds to 0
    assert free.threads() == 2
    clock.update(elapsed=108.0, machine=1600, family=1110)  # both cores a neighbour's: still one thread
    assert free.threads() == 1


# ---------------------------------------------------------------------------------------- the real model


def request(question: str, *, n: int = 2, seed: int = 7, max_tokens: int = 48, temperature: float = 0.8,
            prompt: str | None = None) -> GenerationRequest:
    from steplabel.rollouts.prompts import FEWSHOT_STEPS_TEMPLATE

    text = prompt if prompt is not None else FEWSHOT_STEPS_TEMPLATE.replace("{question}", question)
    return GenerationRequest(text, n=n, max_tokens=max_tokens, temperature=temperature, top_p=1.0, stop=STOP,
                             seed=seed)


def texts(results) -> list[list[str]]:
    return [[c.text for c in r.completions] for r in results]


@pytest.mark.slow
def test_a_call_depends_only_on_its_requests(llama_engine):
    """Same config, same labels run to run: a fresh engine and one that served other calls (so its cache
    holds another prefix) give identical samples for the same call."""
    from steplabel.rollouts.engines.llama_cpp_engine import LlamaCppEngine

    call = [request(q, n=3, seed=20 + i) for i, q in enumerate(QUESTIONS)]
    llama_engine.generate([request("Ann reads 9 pages a day. How many pages in 4 days?", n=4, seed=1)])
    llama_engine.generate([request("", prompt="Question: unrelated text that shares no prefix\nStep 1:", n=2)])
    used = llama_engine.generate(call)
    fresh_engine = LlamaCppEngine(n_ctx=1024)
    try:
        fresh = fresh_engine.generate(call)
    finally:
        fresh_engine.close()
    assert texts(used) == texts(fresh)
    assert [[c.tokens for c in r.completions] for r in used] == [[c.tokens for c in r.completions] for r in fresh]
    assert all(len(r.completions) == 3 and r.error is None for r in used)
    assert len({t for r in used for t in texts([r])[0]}) > 3  # per-sample seeds: the samples differ


@pytest.mark.slow
def test_finish_reasons_stop_strings_and_token_counts(llama_engine):
    short, normal = llama_engine.generate([request(QUESTIONS[0], n=2, max_tokens=5), request(QUESTIONS[1], n=4, max_tokens=96)])
    assert [c.finish_reason for c in short.completions] == ["length", "length"]
    assert [c.tokens for c in short.completions] == [5, 5]
    assert short.prompt_tokens == len(llama_engine.tokenize(request(QUESTIONS[0]).prompt)) > 200
    for completion in normal.completions:
        assert not any(s in completion.text for s in STOP)  # cut at the stop string, which is not kept
        assert completion.finish_reason in ("stop", "length") and 0 < completion.tokens <= 96
        if completion.finish_reason == "length":
            assert completion.tokens == 96
    assert any(c.finish_reason == "stop" for c in normal.completions)


@pytest.mark.slow
def test_a_prompt_that_does_not_fit_is_an_error_and_the_others_still_run(llama_engine):
    too_long = request("", prompt="one two three " * 400)
    fits, failed, empty = llama_engine.generate([request(QUESTIONS[2]), too_long, request(QUESTIONS[0], n=0)])
    assert failed.error is not None and "does not fit the context window of 1024 tokens" in failed.error
    assert not failed.completions
    assert fits.error is None and len(fits.completions) == 2
    assert empty.error is None and empty.completions == [] and empty.prompt_tokens > 0
    # max_tokens is cut to the window: a prompt of ~1000 tokens leaves room for a few only
    near = llama_engine.generate([request("", prompt="one two three " * 333, n=1, max_tokens=200)])[0]
    room = 1024 - len(llama_engine.tokenize("one two three " * 333))
    assert near.error is None and 0 < room < 200 and near.completions[0].tokens <= room


@pytest.mark.slow
def test_more_samples_than_parallel_sequences_are_decoded_in_parts(llama_engine):
    n = MAX_PARALLEL + 4
    (result,) = llama_engine.generate([request(QUESTIONS[0], n=n, max_tokens=12, seed=3)])
    assert result.error is None and len(result.completions) == n
    assert len({c.text for c in result.completions}) > 1
    again = llama_engine.generate([request(QUESTIONS[0], n=n, max_tokens=12, seed=3)])
    assert texts(again) == texts([result])


@pytest.mark.slow
def test_greedy_samples_follow_the_most_likely_tokens(llama_engine):
    """Temperature 0 is greedy decoding: the same request twice gives the same text, and the few-shot
    format is followed."""
    first = llama_engine.generate([request(QUESTIONS[0], n=1, temperature=0.0)])[0].completions[0]
    again = llama_engine.generate([request(QUESTIONS[0], n=1, temperature=0.0, seed=99)])[0].completions[0]
    assert first.text == again.text  # the seed does not matter to greedy decoding
    assert first.text.startswith("Step 1:")
