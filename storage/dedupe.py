"""One solution, one row: what a commit does with a solution the version already holds."""

from __future__ import annotations

import datetime as _dt
import json

import pyarrow as pa
import pyarrow.compute as pc


def split_duplicates(labels: pa.Table, seen: set[str], where: str) -> tuple[pa.Table, pa.Table | None]:
    """Split a ``step_labels`` table into the rows of new solutions and ``rejects`` rows for the others.

    ``seen`` holds the solution ids already in the version (updated in place, so later shards of the same
    commit see this one's). A repeated solution becomes a ``duplicate_solution`` reject at stage ``commit``
    whose payload keeps its steps; ``None`` when nothing repeats.
    """
    dup = []
    for solution_id in labels.column("solution_id").to_pylist():
        dup.append(solution_id in seen)
        seen.add(solution_id)
    if not any(dup):
        return labels, None
    mask = pa.array(dup)
    dropped = labels.filter(mask)
    n = len(dropped)
    ids = dropped.column("solution_id")
    rejects = pa.table({
        "item_id": ids,
        "problem_id": dropped.column("problem_id"),
        "solution_id": ids,
        "shard_id": dropped.column("shard_id"),
        "run_id": dropped.column("run_id"),
        "stage": pa.array(["commit"] * n),
        "reason": pa.array(["duplicate_solution"] * n),
        "detail": pa.array([f"solution {sid} is already labelled in {where}" for sid in ids.to_pylist()]),
        "payload": pa.array([json.dumps({"completions": steps}, ensure_ascii=False)[:2000]
                             for steps in dropped.column("completions").to_pylist()]),
        "config_hash": dropped.column("config_hash"),
        "created_at": pa.array([_dt.datetime.now(_dt.timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
        "rollouts_used": dropped.column("rollouts_used"),
        "tokens_generated": dropped.column("tokens_generated"),
    })
    return labels.filter(pc.invert(mask)), rejects
