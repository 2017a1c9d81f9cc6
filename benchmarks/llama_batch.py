"""Raw llama.cpp speed: one stream vs the batched engine vs the quick start's labelling phase, in one run.

1. single stream: ``Llama.create_completion``, one sample after another (what the engine did before it
   batched), on the quick-start prompts;
2. batched: one ``LlamaCppEngine.generate`` call with the same samples;
3. quick-start labelling: the quick-start config's shards through ``label_shard`` on the batched engine
   (sampling, rollouts, sympy checks), generated tokens over the phase's wall time;
4. the same labelling beside one busy core (a spinning process), to show the default ``n_threads``
   does not collapse when a neighbour takes a core.

Targets: labelling tokens/s >= 2x the single-stream rate; beside a busy core, within 2x of the idle time.
Needs an idle machine for meaningful numbers.

    python benchmarks/llama_batch.py [--problems 8] [--samples 16] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reporting import show_and_save  # noqa: E402
from steplabel.flows.config import parse_config  # noqa: E402
from steplabel.labelling.shard import RunContext, label_shard, plan_shards  # noqa: E402
from steplabel.rollouts.engines.base import GenerationRequest, derive_seed, sample_seed  # noqa: E402
from steplabel.rollouts.engines.llama_cpp_engine import (  # noqa: E402
    LlamaCppEngine,
    default_model_path,
    available_cores,
)
from steplabel.rollouts.grading import Grader  # noqa: E402
from steplabel.rollouts.prompts import FEWSHOT_STEPS_TEMPLATE  # noqa: E402
from steplabel.rollouts.sources import load_problems  # noqa: E402
from steplabel.storage.store import ShardStore  # noqa: E402


class TimedEngine:
    """Counts the tokens the pipeline asked for and the seconds spent inside ``generate``."""

    def __init__(self, inner: LlamaCppEngine) -> None:
        self.inner, self.model_name = inner, inner.model_name
        self.tokens, self.seconds = 0, 0.0

    def generate(self, requests):
        started = time.perf_counter()
        results = self.inner.generate(requests)
        self.seconds += time.perf_counter() - started
        self.tokens += sum(r.tokens_generated for r in results)
        return results

    def close(self) -> None:  # the benchmark closes the inner engine itself
        pass


def quickstart_requests(config, count: int) -> list[GenerationRequest]:
    """``count`` single-sample solution requests on the quick start's problems and sampling settings."""
    problems, _ = load_problems(config.source)
    s = config.sampling
    picked = [problems[i % len(problems)] for i in range(count)]
    return [GenerationRequest(FEWSHOT_STEPS_TEMPLATE.replace("{question}", p.question), n=1, max_tokens=s.max_tokens,
                              temperature=s.temperature, top_p=s.top_p, stop=tuple(config.prompt.stop),
                              seed=derive_seed(config.seed, p.problem_id, i))
            for i, p in enumerate(picked)]


def single_stream(requests: list[GenerationRequest], threads: int) -> tuple[float, int]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(default_model_path()), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    started, tokens = time.perf_counter(), 0
    for r in requests:
        out = llm.create_completion(r.prompt, max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
                                    stop=list(r.stop), seed=sample_seed(r.seed, 0))
        tokens += out["usage"]["completion_tokens"]
    elapsed = time.perf_counter() - started
    llm.close()
    return elapsed, tokens


def labelling(engine: LlamaCppEngine, config) -> tuple[float, TimedEngine]:
    timed = TimedEngine(engine)
    problems, _ = load_problems(config.source)
    with tempfile.TemporaryDirectory() as root, Grader() as grader:
        store, ctx = ShardStore(root), RunContext.now("bench", config.hash())
        started = time.perf_counter()
        for plan in plan_shards(problems, config.shard_size, config.hash()):
            tables, _ = label_shard(plan, config, ctx, policy=timed, completer=timed, grader=grader)
            store.stage("bench", plan.shard_id, tables)
        return time.perf_counter() - started, timed


def start_neighbour() -> int:
    """A busy process that is not ours: double-forked, so it is no descendant of this one (the engine counts its
    own descendants as its own work, as they are in a real run). Returns its pid."""
    out = subprocess.run(["sh", "-c", f"'{sys.executable}' -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8, help="quick-start problems to label (8 = the quick start)")
    parser.add_argument("--samples", type=int, default=16, help="samples for the single-stream vs batched part")
    parser.add_argument("--threads", type=int, default=None,
                        help="fixed threads for the batched engine; default: the engine's own (null: follows the free cores)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "llama_batch.json")
    args = parser.parse_args()
    threads = args.threads  # None: the engine's default, which follows the cores other processes leave free
    single_threads = args.threads or available_cores()  # the single stream gets every core of the idle machine
    config = parse_config({"source": {"kind": "builtin", "num_problems": args.problems}})
    requests = quickstart_requests(config, args.samples)

    single_s, single_tokens = single_stream(requests, single_threads)
    engine = LlamaCppEngine(n_ctx=config.policy.n_ctx, n_threads=threads)
    try:
        started = time.perf_counter()
        batched_tokens = sum(r.tokens_generated for r in engine.generate(requests))
        batched_s = time.perf_counter() - started
        idle_s, idle = labelling(engine, config)
        idle_threads = engine.n_threads
        neighbour = start_neighbour()
        try:
            busy_s, beside = labelling(engine, config)
            busy_threads = engine.n_threads
        finally:
            os.kill(neighbour, signal.SIGKILL)
    finally:
        engine.close()
    single_rate = single_tokens / single_s
    label_rate = idle.tokens / idle_s
    result = {
        "threads": threads or "null (follows free cores)", "single_stream_threads": single_threads,
        "labelling_threads_at_end": idle_threads, "busy_neighbour_threads_at_end": busy_threads,
        "problems": args.problems, "samples": args.samples,
        "single_stream_tokens": single_tokens, "single_stream_s": round(single_s, 2),
        "single_stream_tokens_per_s": round(single_rate, 1),
        "batched_tokens": batched_tokens, "batched_s": round(batched_s, 2),
        "batched_tokens_per_s": round(batched_tokens / batched_s, 1),
        "labelling_tokens": idle.tokens, "labelling_s": round(idle_s, 2),
        "labelling_engine_s": round(idle.seconds, 2), "labelling_tokens_per_s": round(label_rate, 1),
        "labelling_vs_single": round(label_rate / single_rate, 2),
        "busy_neighbour_labelling_s": round(busy_s, 2), "busy_neighbour_tokens": beside.tokens,
        "busy_vs_idle_time": round(busy_s / idle_s, 2),
    }
    ok = label_rate >= 2 * single_rate and busy_s <= 2 * idle_s
    verdict = (f"labelling {label_rate:.1f} tok/s = {label_rate / single_rate:.2f}x single stream (target >= 2x); "
               f"beside a busy core {busy_s / idle_s:.2f}x the idle time (target <= 2x): "
               f"{'OK' if ok else 'UNDER TARGET'}")
    show_and_save(f"llama.cpp raw engine, threads: {threads or 'null'}", result, verdict, args.out)


if __name__ == "__main__":
    main()
