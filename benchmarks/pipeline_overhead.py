"""CPU cost the pipeline adds per rollout (scheduling, grading, row building, storage).

The engine is an instant scripted one, so every microsecond measured is the pipeline's own. Each shard
is timed separately (sample -> label with the wave driver -> stage Parquet) and the commit once at the
end; the table shows the median and p90 per-rollout cost over shards. Target: median <= 1 ms.

    python benchmarks/pipeline_overhead.py [--problems 200] [--shard-size 20] [--k 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from benchmarks.reporting import show_and_save  # noqa: E402
from steplabel.flows.config import parse_config  # noqa: E402
from steplabel.labelling.shard import RunContext, label_shard, plan_shards  # noqa: E402
from steplabel.rollouts.builtin_problems import generate_problems  # noqa: E402
from steplabel.rollouts.engines.base import GenerationRequest, sample_seed  # noqa: E402
from steplabel.rollouts.grading import Grader  # noqa: E402
from steplabel.rollouts.sources import load_problems  # noqa: E402
from steplabel.storage.store import ShardStore  # noqa: E402
from tests.scripted_engine import ScriptedEngine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--shard-size", type=int, default=20)
    parser.add_argument("--solutions", type=int, default=4)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pipeline_overhead.json")
    args = parser.parse_args()

    config = parse_config({
        "source": {"kind": "builtin", "num_problems": args.problems},
        "sampling": {"num_solutions": args.solutions},
        "labeler": {"name": "math_shepherd", "k": args.k},
        "shard_size": args.shard_size,
    })
    answers = {p.question: p.answer for p in generate_problems(args.problems)}

    def script(request: GenerationRequest, index: int) -> str:
        """Four-step solutions; answers right or off by a little, pseudo-randomly per sample seed."""
        question = request.prompt.split("Question:")[-1].split("\n")[0].strip()
        answer = answers[question] + sample_seed(request.seed, index) % 3 - 1
        if "\nStep 1:" in request.prompt.split("Question:")[-1]:
            return f"Step 8: we get {answer}.\nThe answer is {answer}."
        return (f"Step 1: read the numbers.\nStep 2: combine them.\nStep 3: check the total.\n"
                f"Step 4: the total is {answer}.\nThe answer is {answer}.")

    engine = ScriptedEngine(script)
    problems, _ = load_problems(config.source)
    plans = plan_shards(problems, config.shard_size, config.hash())
    per_rollout_ms, total_rollouts = [], 0
    with tempfile.TemporaryDirectory() as root, Grader() as grader:
        store = ShardStore(root)
        ctx = RunContext.now("bench", config.hash())
        started = time.perf_counter()
        for plan in plans:
            t0 = time.perf_counter()
            tables, report = label_shard(plan, config, ctx, policy=engine, completer=engine, grader=grader)
            store.stage("bench", plan.shard_id, tables)
            elapsed = time.perf_counter() - t0
            per_rollout_ms.append(1000 * elapsed / max(report.rollouts, 1))
            total_rollouts += report.rollouts
        t0 = time.perf_counter()
        manifest = store.commit("bench", config={}, config_hash=config.hash(), code_version="bench")
        commit_s = time.perf_counter() - t0
        total_s = time.perf_counter() - started

    result = {
        "problems": args.problems, "shards": len(plans), "k": args.k, "rollouts": total_rollouts,
        "solutions": manifest.stats["solutions"], "commit_s": round(commit_s, 4), "total_s": round(total_s, 3),
        "median_ms_per_rollout": round(statistics.median(per_rollout_ms), 4),
        "p90_ms_per_rollout": round(sorted(per_rollout_ms)[int(0.9 * (len(per_rollout_ms) - 1))], 4),
        "overall_ms_per_rollout": round(1000 * total_s / max(total_rollouts, 1), 4),
    }
    verdict = "OK" if result["median_ms_per_rollout"] <= 1.0 else "OVER TARGET"
    show_and_save("pipeline CPU overhead per rollout (instant scripted engine)", result,
           f"median per-rollout overhead: {result['median_ms_per_rollout']} ms (target <= 1 ms) {verdict}", args.out)


if __name__ == "__main__":
    main()
