"""Derived views of the stored tables (computed on read, never a second copy on disk)."""

from __future__ import annotations

import polars as pl

__all__ = ["STEP_VIEW_COLUMNS", "explode_steps"]

#: list column of ``step_labels`` -> column name in the per-step view
_PER_STEP = {
    "completions": "step",
    "labels": "label",
    "mc_scores": "mc_score",
    "mc_correct": "mc_correct",
    "mc_total": "mc_total",
    "soft_labels": "soft_label",
}
STEP_VIEW_COLUMNS = ["solution_id", "step_index", *_PER_STEP.values()]


def explode_steps(df: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """One row per step of each ``step_labels`` row: solution_id, step_index (0-based), step, label,
    mc_score, mc_correct, mc_total, soft_label.

    Steps are counted by ``completions``; a per-step list that is null or shorter than ``completions``
    (e.g. ``soft_labels`` when the labeler produced none) gives nulls, never an error. Solutions with no
    steps produce no rows. Works on a DataFrame or, lazily, on a LazyFrame (e.g. ``ShardStore.scan()``).
    """
    lf = df.lazy() if isinstance(df, pl.DataFrame) else df
    n = pl.col("completions").list.len()
    out = (
        lf.select("solution_id", *_PER_STEP)
        .filter(n > 0)
        .with_columns(step_index=pl.int_ranges(0, n, dtype=pl.Int32))
        .explode("completions", "step_index")
        .select(
            "solution_id",
            "step_index",
            *[
                pl.col(src).alias(dst)
                if src == "completions"
                else pl.col(src).list.get(pl.col("step_index"), null_on_oob=True).alias(dst)
                for src, dst in _PER_STEP.items()
            ],
        )
    )
    return out.collect() if isinstance(df, pl.DataFrame) else out
