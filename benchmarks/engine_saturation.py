"""Does the pipeline keep a real OpenAI-compatible server busy? Pipeline vs a plain client, same run.

Starts a real `python -m llama_cpp.server` on the embedded GGUF, runs the pipeline's shard function
(sampling + labelling through the `openai` engine) while recording every request it sends, then replays
exactly those requests with a plain async httpx client at the same concurrency. Passes alternate
(pipeline, plain, pipeline, plain) so drift hits both. Target: pipeline rollouts/s >= 0.85 x plain.

    python benchmarks/engine_saturation.py [--problems 4] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from steplabel.flows.config import parse_config  # noqa: E402
from steplabel.labelling.shard import RunContext, label_shard, plan_shards  # noqa: E402
from steplabel.rollouts.engines.base import GenerationRequest, sample_seed  # noqa: E402
from steplabel.rollouts.engines.llama_cpp_engine import available_cores, default_model_path  # noqa: E402
from steplabel.rollouts.engines.openai_compat import OpenAICompatEngine  # noqa: E402
from steplabel.rollouts.grading import Grader  # noqa: E402
from steplabel.rollouts.sources import load_problems  # noqa: E402
from steplabel.storage.store import ShardStore  # noqa: E402
from tests.test_openai_compat import llama_server  # noqa: E402


class RecordingEngine:
    """Passes requests through and keeps them, so the plain client can replay the same work."""

    def __init__(self, inner: OpenAICompatEngine) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.requests: list[GenerationRequest] = []
        self.samples = 0
        self.tokens = 0

    def generate(self, requests):
        self.requests.extend(requests)
        results = self.inner.generate(requests)
        self.samples += sum(len(r.completions) for r in results)
        self.tokens += sum(r.tokens_generated for r in results)
        return results

    def close(self) -> None:
        self.inner.close()


def run_pipeline(base_url: str, config, concurrency: int) -> tuple[float, RecordingEngine]:
    engine = RecordingEngine(OpenAICompatEngine([base_url], model="gemma", max_concurrency=concurrency))
    problems, _ = load_problems(config.source)
    with tempfile.TemporaryDirectory() as root, Grader() as grader:
        store = ShardStore(root)
        ctx = RunContext.now("bench", config.hash())
        started = time.perf_counter()
        for plan in plan_shards(problems, config.shard_size, config.hash()):
            tables, _ = label_shard(plan, config, ctx, policy=engine, completer=engine, grader=grader)
            store.stage("bench", plan.shard_id, tables)
        store.commit("bench", config={}, config_hash=config.hash(), code_version="bench")
        elapsed = time.perf_counter() - started
    engine.close()
    return elapsed, engine


async def _replay(base_url: str, requests: list[GenerationRequest], concurrency: int) -> tuple[int, int]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300) as client:

        async def one(request: GenerationRequest, index: int) -> int:
            body = {"model": "gemma", "prompt": request.prompt, "n": 1, "max_tokens": request.max_tokens,
                    "temperature": request.temperature, "top_p": request.top_p, "stop": list(request.stop),
                    "seed": sample_seed(request.seed, index)}
            async with limit:
                response = await client.post(f"{base_url}/v1/completions", json=body)
            response.raise_for_status()
            return response.json()["usage"]["completion_tokens"]

        tokens = await asyncio.gather(*(one(r, i) for r in requests for i in range(r.n)))
    return len(tokens), sum(tokens)


def run_plain(base_url: str, requests: list[GenerationRequest], concurrency: int) -> tuple[float, int, int]:
    started = time.perf_counter()
    samples, tokens = asyncio.run(_replay(base_url, requests, concurrency))
    return time.perf_counter() - started, samples, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "engine_saturation.json")
    args = parser.parse_args()
    config = parse_config({
        "source": {"kind": "builtin", "num_problems": args.problems},
        "sampling": {"num_solutions": 2, "max_tokens": 96},
        "rollout": {"max_tokens": 48},
        "labeler": {"name": "math_shepherd", "k": 4},
        "shard_size": 2,
    })
    rows = []
    with llama_server(default_model_path(), n_threads=available_cores()) as base_url:
        for round_index in range(args.rounds):
            pipe_s, recorded = run_pipeline(base_url, config, args.concurrency)
            plain_s, plain_samples, plain_tokens = run_plain(base_url, recorded.requests, args.concurrency)
            rows.append({
                "round": round_index, "samples": recorded.samples,
                "pipeline_s": round(pipe_s, 2), "pipeline_rollouts_per_s": round(recorded.samples / pipe_s, 3),
                "pipeline_tokens_per_s": round(recorded.tokens / pipe_s, 1),
                "plain_s": round(plain_s, 2), "plain_rollouts_per_s": round(plain_samples / plain_s, 3),
                "plain_tokens_per_s": round(plain_tokens / plain_s, 1),
            })
    ratio = statistics.mean(r["pipeline_rollouts_per_s"] / r["plain_rollouts_per_s"] for r in rows)
    token_ratio = statistics.mean(r["pipeline_tokens_per_s"] / r["plain_tokens_per_s"] for r in rows)
    table = Table(title=f"engine saturation: llama_cpp.server, concurrency {args.concurrency}")
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)
    verdict = "OK" if ratio >= 0.85 else "UNDER TARGET"
    print(f"pipeline / plain rollouts per second: {ratio:.3f} (tokens/s ratio {token_ratio:.3f}); target >= 0.85 {verdict}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": rows, "ratio": round(ratio, 3), "token_ratio": round(token_ratio, 3),
                                    "concurrency": args.concurrency}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
