"""Cost vs first-error quality of every labeler on one simulated set, at a few noise levels.

For each labeler: rollouts and tokens per solution, first-error accuracy on erroneous (acc_err) and on
correct (acc_cor) solutions and their harmonic mean F1 (the ProcessBench metric), against the planted
first errors of :mod:`benchmarks.simulated_policy`. ``noise`` is the chance that a continuation of a wrong
prefix still reaches the right answer; a right prefix fails with probability 1 - p (p per problem,
uniform in [0.45, 0.98]). "moderate" noise is 0.1. Every row is scored on the solutions the labeler
kept (``kept`` column): a solution it dropped (SCAN's low-confidence questions and over-estimated wrong
solutions, OmegaPRM tree mode's filtered questions and spent question budgets) is never scored, as the
pipeline sends it to rejects. ``dropped`` in the JSON counts them by reason; cost is over all solutions.

    python benchmarks/labelers.py [--problems 150] [--solutions 8] [--k 8]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.simulated_policy import (  # noqa: E402
    STEP_FORMAT,
    SimulatedPolicy,
    build_prompt,
    judge,
    make_problems,
    sample_solutions,
)
from steplabel.labelers.base import Dropped  # noqa: E402
from steplabel.labelers.driver import WaveDriver  # noqa: E402
from steplabel.labelers.math_shepherd_config import MathShepherdConfig  # noqa: E402
from steplabel.labelers.omegaprm_config import OmegaPRMConfig  # noqa: E402
from steplabel.labelers.registry import make_labeler  # noqa: E402
from steplabel.labelers.rpe_config import RPEConfig  # noqa: E402
from steplabel.labelers.scan_config import ScanConfig  # noqa: E402
from steplabel.labelling.evaluate import processbench_metrics  # noqa: E402
from steplabel.rollouts.sampling_params import SamplingParams  # noqa: E402

NOISE_LEVELS = {"low": 0.03, "moderate": 0.1, "high": 0.2}


def labelers(k: int) -> dict[str, object]:
    return {
        "math_shepherd": MathShepherdConfig(k=k),
        "omegaprm binary_search": OmegaPRMConfig(k=k),
        "omegaprm binary_search mc>0.25": OmegaPRMConfig(k=k, mc_threshold=0.25),
        "omegaprm tree (limit 5)": OmegaPRMConfig(k=k, mode="tree", search_limit=5),
        "scan": ScanConfig(k=k),
        "scan, low-SC scanned too": ScanConfig(k=k, below_threshold="scan"),
        "rpe": RPEConfig(k=k),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=150)
    parser.add_argument("--solutions", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "labelers.json")
    args = parser.parse_args()

    problems = make_problems(args.problems, seed=args.seed)
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=256)
    rows = []
    checks: dict[str, object] = {}
    for level, noise in NOISE_LEVELS.items():
        policy = SimulatedPolicy(problems, noise)
        solutions = sample_solutions(policy, problems, args.solutions, seed=args.seed)
        tasks = [s.task for s in solutions]
        truth = {s.task.solution_id: s.first_error for s in solutions}
        for name, config in labelers(args.k).items():
            started = time.perf_counter()
            result = WaveDriver(policy, build_prompt, judge, sampling, base_seed=args.seed).run(
                tasks, make_labeler(config, step_format=STEP_FORMAT))  # type: ignore[arg-type]
            seconds = time.perf_counter() - started
            assert not result.failures, result.failures
            labels = [result.labels[t.solution_id] for t in tasks]
            dropped = Counter(x.reason for x in labels if isinstance(x, Dropped))
            predictions = [x.reason if isinstance(x, Dropped) else x.first_error for x in labels]
            metrics = processbench_metrics([truth[t.solution_id] for t in tasks], predictions)
            rows.append({
                "noise_level": level, "noise": noise, "labeler": name, "config": config.model_dump(),  # type: ignore[attr-defined]
                "solutions": len(tasks), "kept": len(tasks) - sum(dropped.values()), "dropped": dict(dropped),
                "rollouts_per_solution": sum(x.rollouts_used for x in labels) / len(tasks),
                "tokens_per_solution": sum(x.tokens_generated for x in labels) / len(tasks),
                **metrics, "waves": result.waves, "seconds": round(seconds, 2),
            })
            if name == "omegaprm binary_search":  # at most k * ceil(log2 M) rollouts for every wrong solution
                checks[f"binary_search_bound_{level}"] = all(
                    x.rollouts_used <= args.k * math.ceil(math.log2(len(t.steps)))
                    for t, x in zip(tasks, labels, strict=True) if not t.final_correct)

    console = Console(width=140)
    table = Table(title=f"labelers on the simulated set ({args.problems} problems x {args.solutions} solutions, k={args.k})")
    for column in ("noise", "labeler", "rollouts/sol", "tokens/sol", "% of MS rollouts", "acc_err", "acc_cor", "F1", "kept"):
        table.add_column(column, justify="left" if column == "labeler" else "right")
    baseline = {r["noise_level"]: r for r in rows if r["labeler"] == "math_shepherd"}
    for r in rows:
        share = r["rollouts_per_solution"] / baseline[r["noise_level"]]["rollouts_per_solution"]
        r["share_of_math_shepherd_rollouts"] = share
        table.add_row(f"{r['noise_level']} ({r['noise']})", r["labeler"], f"{r['rollouts_per_solution']:.1f}",
                      f"{r['tokens_per_solution']:.0f}", f"{100 * share:.1f}%", f"{100 * r['acc_err']:.1f}",
                      f"{100 * r['acc_cor']:.1f}", f"{100 * r['f1']:.1f}", f"{r['kept']}/{r['solutions']}")
    console.print(table)

    moderate = {r["labeler"]: r for r in rows if r["noise_level"] == "moderate"}
    ms, bs = moderate["math_shepherd"], moderate["omegaprm binary_search"]
    robust = moderate["omegaprm binary_search mc>0.25"]
    checks.update({
        "binary_search_f1_within_3_points_of_math_shepherd (paper rule MC > 0)": bool(ms["f1"] - bs["f1"] <= 0.03),
        "binary_search_mc>0.25_f1_within_3_points_of_math_shepherd": bool(ms["f1"] - robust["f1"] <= 0.03),
        "binary_search_at_most_40pct_of_math_shepherd_rollouts": bool(bs["share_of_math_shepherd_rollouts"] <= 0.40),
        "binary_search_mc>0.25_at_most_40pct_of_math_shepherd_rollouts":
            bool(robust["share_of_math_shepherd_rollouts"] <= 0.40),
        "scan_at_most_15pct_of_math_shepherd_rollouts": bool(moderate["scan"]["share_of_math_shepherd_rollouts"] <= 0.15),
    })
    for key, ok in checks.items():
        console.print(f"{'PASS' if ok else 'FAIL'}  {key}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "noise_levels": NOISE_LEVELS,
                                    "rows": rows, "checks": checks}, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
