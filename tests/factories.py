"""Builders of small, valid, deterministic ``step_labels`` / ``rejects`` tables for tests.

Known answers, for ``make_step_label_rows(n, steps_per_solution=k)`` (row ``i`` = 0..n-1):
* ``first_error = -1`` when ``i % 3 == 0`` (all k steps positive), else ``i % k`` (steps before it positive,
  the step at ``first_error`` and after it negative);
* ``rollouts_used = k * 4``; ``tokens_generated = 100 + i``.
For ``make_reject_rows(n)``: ``rollouts_used = 2``, ``tokens_generated = 10``.
Use :func:`expected_stats` for the exact counts of a combination.
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa

from steplabel.storage.schema import REJECTS, REJECTS_SCHEMA, STEP_LABELS, STEP_LABELS_SCHEMA
from steplabel.storage.store import Manifest, ShardStore

_T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def _first_error(i: int, k: int) -> int:
    return -1 if i % 3 == 0 else i % k


def _labels(i: int, k: int) -> list[bool]:
    fe = _first_error(i, k)
    return [True] * k if fe < 0 else [j < fe for j in range(k)]


def make_step_label_rows(
    n: int,
    *,
    run_id: str = "run-test",
    shard_id: str = "shard-0000",
    steps_per_solution: int = 3,
    config_hash: str = "cfg-test",
    start: int = 0,
) -> pa.Table:
    """``n`` valid step_labels rows (solution ids ``<shard_id>-sol<i>`` for i in start..start+n-1)."""
    k = steps_per_solution
    rows = []
    for i in range(start, start + n):
        labels = _labels(i, k)
        mc_total = [8] * k
        mc_correct = [8 if lab else (i + j) % 3 for j, lab in enumerate(labels)]
        rows.append(
            {
                "problem_id": f"{shard_id}-p{i // 2}",
                "solution_id": f"{shard_id}-sol{i}",
                "shard_id": shard_id,
                "run_id": run_id,
                "prompt": f"Problem {i}: what is {i} + {i}?",
                "completions": [f"Step {j + 1} of solution {i}: compute {i} + {j}." for j in range(k)],
                "labels": labels,
                "mc_scores": [c / t for c, t in zip(mc_correct, mc_total)],
                "mc_correct": mc_correct,
                "mc_total": mc_total,
                "first_error": _first_error(i, k),
                "labeler": "hard_mc",
                "soft_labels": [c / t for c, t in zip(mc_correct, mc_total)],
                "tool_verdicts": ["unknown"] * k,
                "tool_first_error": -1,
                "judge_first_error": None,
                "judge_rationale": None,
                "consensus": None,
                "final_answer": str(2 * i),
                "reference_answer": str(2 * i),
                "final_correct": _first_error(i, k) < 0,
                "grader_layer": "exact",
                "policy_model": "policy-test",
                "completer_model": "completer-test",
                "judge_model": None,
                "sampling": json.dumps({"temperature": 0.7, "n": 8}),
                "seed": i,
                "config_hash": config_hash,
                "code_version": "test",
                "created_at": _T0,
                "rollouts_used": k * 4,
                "tokens_generated": 100 + i,
            }
        )
    return pa.Table.from_pylist(rows, schema=STEP_LABELS_SCHEMA)


def make_reject_rows(
    n: int,
    *,
    run_id: str = "run-test",
    shard_id: str = "shard-0000",
    stage: str = "sampling",
    reason: str = "engine_error",
    config_hash: str = "cfg-test",
    start: int = 0,
) -> pa.Table:
    """``n`` valid rejects rows (item ids ``<shard_id>-rej<i>``)."""
    rows = [
        {
            "item_id": f"{shard_id}-rej{i}",
            "problem_id": f"{shard_id}-rp{i}",
            "solution_id": None,
            "shard_id": shard_id,
            "run_id": run_id,
            "stage": stage,
            "reason": reason,
            "detail": f"test reject {i} in {shard_id}",
            "payload": json.dumps({"i": i}),
            "config_hash": config_hash,
            "created_at": _T0,
            "rollouts_used": 2,
            "tokens_generated": 10,
        }
        for i in range(start, start + n)
    ]
    return pa.Table.from_pylist(rows, schema=REJECTS_SCHEMA)


def expected_stats(
    solutions: list[tuple[int, int]] | None = None, rejects: int = 0, *, start: int = 0
) -> dict[str, int]:
    """Exact stats for step_labels built as ``[(n, steps_per_solution), ...]`` (each from ``start``) plus
    ``rejects`` reject rows, computed from the rules above (independently of the store)."""
    out = dict(solutions=0, steps=0, positive_steps=0, negative_steps=0, rejects=rejects, rollouts=0, tokens=0)
    for n, k in solutions or []:
        for i in range(start, start + n):
            labs = _labels(i, k)
            out["solutions"] += 1
            out["steps"] += k
            out["positive_steps"] += sum(labs)
            out["negative_steps"] += k - sum(labs)
            out["rollouts"] += k * 4
            out["tokens"] += 100 + i
    out["rollouts"] += 2 * rejects
    out["tokens"] += 10 * rejects
    return out


# ---- store helpers shared by the store tests ---------------------------------------------------------
STORE_CONFIG = {"labeler": "hard_mc", "n_rollouts": 8}


def commit_run(store: ShardStore, run_id: str, **kw) -> Manifest:
    return store.commit(run_id, config=STORE_CONFIG, config_hash="cfg-test", code_version="test", **kw)


def stage_shard(store: ShardStore, run_id: str, shard_id: str, n: int = 5, k: int = 3, rejects: int = 2) -> None:
    """Stage ``n`` solutions of ``k`` steps and ``rejects`` reject rows (stats: ``expected_stats([(n, k)], rejects)``)."""
    store.stage(
        run_id,
        shard_id,
        {
            STEP_LABELS: make_step_label_rows(n, run_id=run_id, shard_id=shard_id, steps_per_solution=k),
            REJECTS: make_reject_rows(rejects, run_id=run_id, shard_id=shard_id),
        },
    )


def manifest_stats(m: Manifest) -> dict:
    """The manifest's statistics, keyed like :func:`expected_stats`."""
    return {k: m.stats[k] for k in expected_stats()}



def two_version_store(root) -> ShardStore:
    """A store with v0001 (run r1: shards a0, a1) and v0002 (+ run r2: shard b0), 5 solutions per shard."""
    store = ShardStore(root)
    for run_id, shards in (("r1", ("a0", "a1")), ("r2", ("b0",))):
        for shard_id in shards:
            stage_shard(store, run_id, shard_id)
        commit_run(store, run_id)
    return store
