"""Which rows to look at: SQL row filters, a seeded sample that spans problems, and version diffs.

The statistics of what is selected live in :mod:`steplabel.storage.inspection`. ``where`` is a **SQL
expression** (polars' ``pl.sql_expr``: ``=``, ``<>``, ``AND``/``OR``/``NOT``, ``IN``, ``LIKE``,
``IS NULL``, functions such as ``array_length``); it is parsed, never evaluated as Python.
"""

from __future__ import annotations

import hashlib
from typing import Any

import polars as pl

from steplabel.storage.schema import STEP_LABELS

__all__ = ["DIFF_EXAMPLES", "InspectionError", "diff_versions", "filter_rows", "parse_where", "sample_rows",
           "tool_conflict_rows"]

#: how many example ids ``diff_versions`` lists per category
DIFF_EXAMPLES = 20


class InspectionError(ValueError):
    """A bad filter (unparseable ``where``, unknown column) or an unusable argument; one-line message."""


def parse_where(where: str, columns: list[str] | None = None) -> pl.Expr:
    """Parse a SQL boolean expression (``pl.sql_expr``) into a polars expression, checking that every
    column it names exists (when ``columns`` is given). Raises :class:`InspectionError` with one line."""
    text = where.strip()
    if not text:
        raise InspectionError("--where is empty (expected a SQL expression, e.g. \"first_error = 0 AND final_correct\")")
    try:
        expr = pl.sql_expr(text)
    except Exception as error:  # polars raises SQLInterfaceError / SQLSyntaxError / ComputeError
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InspectionError(
            f"--where {where!r} is not a valid SQL expression: {message} "
            "(example: \"first_error = 0 AND NOT final_correct\")"
        ) from None
    if columns is not None:
        try:
            names = expr.meta.root_names()
        except Exception:  # pragma: no cover - defensive: meta on unusual expressions
            names = []
        unknown = [n for n in names if n not in columns]
        if unknown:
            raise InspectionError(
                f"--where {where!r}: unknown column(s) {', '.join(unknown)}; columns: {', '.join(columns)}"
            )
    return expr


def tool_conflict_rows(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Rows where a tool verdict contradicts the labeler's own (MC) label of the same step: a refuted step
    the labeler called good, or a verified step it called bad (``labeler_labels``, else ``labels``)."""
    own = pl.coalesce(pl.col("labeler_labels"), pl.col("labels"))
    steps = (
        lf.with_row_index("_row")
        .filter((pl.col("tool_verdicts").list.len() > 0) & (own.list.len() == pl.col("tool_verdicts").list.len()))
        .select("_row", own=own, verdict=pl.col("tool_verdicts"))
        .explode("own", "verdict")
    )
    rows = steps.filter(
        ((pl.col("verdict") == "refuted") & pl.col("own").fill_null(False))
        | ((pl.col("verdict") == "verified") & ~pl.col("own").fill_null(True))
    ).select("_row").unique()
    return lf.with_row_index("_row").join(rows, on="_row", how="semi", maintain_order="left").drop("_row")


def filter_rows(
    lf: pl.LazyFrame,
    where: str | None = None,
    first_error: int | None = None,
    labeler: str | None = None,
    disagree: bool = False,
    tool_disagree: bool = False,
) -> pl.LazyFrame:
    """``lf`` (a ``step_labels`` scan) restricted to the rows matching every given filter.

    * ``where``: a SQL boolean expression over the columns (``pl.sql_expr``; never ``eval``-ed), e.g.
      ``"first_error = 0 AND final_correct"``, ``"labeler IN ('omegaprm', 'hard_mc')"``,
      ``"array_length(completions) > 5"``; a bad expression or unknown column raises
      :class:`InspectionError` here, before any data is read.
    * ``first_error``: exact first-error index (-1 = solutions with no error).
    * ``labeler``: exact labeler name.
    * ``disagree``: only rows the judge labelled differently (``judge_first_error`` not null and
      != ``first_error``).
    * ``tool_disagree``: only rows where a tool verdict contradicts the labeler (:func:`tool_conflict_rows`).
    """
    columns = lf.collect_schema().names()
    if where is not None:
        lf = lf.filter(parse_where(where, columns))
    if first_error is not None:
        lf = lf.filter(pl.col("first_error") == int(first_error))
    if labeler is not None:
        lf = lf.filter(pl.col("labeler") == labeler)
    if disagree:
        lf = lf.filter(
            pl.col("judge_first_error").is_not_null() & (pl.col("judge_first_error") != pl.col("first_error"))
        )
    if tool_disagree:
        lf = tool_conflict_rows(lf)
    return lf


def _key(seed: int, text: Any) -> str:
    """A stable pseudo-random sort key (sha256; polars' hash is not stable across versions)."""
    return hashlib.sha256(f"{seed}\x00{text}".encode()).hexdigest()


def sample_rows(lf: pl.LazyFrame, k: int, seed: int = 0) -> pl.DataFrame:
    """``k`` rows of ``lf`` drawn with ``seed``, spread over problems: problems are visited in a seeded
    random order and each gives one solution per round (seeded too), so ``k`` samples come from
    ``min(k, problems)`` different problems. The same data and seed always give the same rows."""
    if k <= 0:
        return lf.head(0).collect()
    ids = lf.select("problem_id", "solution_id").with_row_index("_row").collect()
    rounds: dict[Any, int] = {}
    order = []
    for row, problem, solution in sorted(ids.iter_rows(), key=lambda r: (_key(seed, r[1]), _key(seed, (r[2], r[0])))):
        rounds[problem] = rounds.get(problem, -1) + 1
        order.append((rounds[problem], _key(seed, problem), row))
    chosen = [row for _, _, row in sorted(order)[:k]]
    rank = pl.DataFrame({"_row": chosen, "_rank": range(len(chosen))}, schema={"_row": pl.UInt32, "_rank": pl.Int64})
    return (
        lf.with_row_index("_row").join(rank.lazy(), on="_row", how="inner").sort("_rank").drop("_row", "_rank")
        .collect()
    )


# --------------------------------------------------------------------------------------------------------
# diff
# --------------------------------------------------------------------------------------------------------
_DELTA_KEYS = ("solutions", "steps", "positive_steps", "negative_steps", "rejects", "rollouts", "tokens")


def diff_versions(store: Any, va: str, vb: str) -> dict[str, Any]:
    """What changed from version ``va`` to ``vb`` (order matters: "added" = in vb, not in va).

    Rows are matched by ``solution_id`` and occurrence (the 2nd row with an id matches the 2nd row with it
    in the other version), so a run that re-adds solutions under ids already present counts as added rows.
    Returns::

        from, to
        shards:    {added: [shard_id...], removed: [...], common: n}
        solutions: {added, removed, changed, common (row counts), duplicate_ids (ids on several rows of vb),
                    added_ids, removed_ids, changed_ids (first 20 of each, sorted)}
                   "changed" = a matched row with different labels or first_error
        stats:     {key: {from, to, delta}} for solutions, steps, positive_steps, negative_steps, rejects,
                   rollouts, tokens and label_balance (manifest statistics)
        config_changed: whether the two versions' config hashes differ
    """
    ma, mb = store.manifest(va), store.manifest(vb)
    shards_a, shards_b = set(ma.shards), set(mb.shards)

    def rows(version: str) -> pl.LazyFrame:
        return (
            store.scan(STEP_LABELS, version)
            .select("solution_id", "labels", "first_error")
            .with_columns(occurrence=pl.int_range(pl.len()).over("solution_id"))
        )

    a, b = rows(ma.version), rows(mb.version)
    key = ["solution_id", "occurrence"]
    added_q = b.join(a, on=key, how="anti").select("solution_id").sort("solution_id")
    removed_q = a.join(b, on=key, how="anti").select("solution_id").sort("solution_id")
    joined = a.join(b, on=key, how="inner", suffix="_b")
    changed_q = (
        joined.filter(
            pl.col("labels").ne_missing(pl.col("labels_b"))
            | pl.col("first_error").ne_missing(pl.col("first_error_b"))
        )
        .select("solution_id")
        .sort("solution_id")
    )
    common_q = joined.select(n=pl.len())
    duplicates_q = b.filter(pl.col("occurrence") == 1).select(n=pl.len())
    added, removed, changed, common, duplicates = pl.collect_all(
        [added_q, removed_q, changed_q, common_q, duplicates_q]
    )

    def _stat(m: Any, name: str) -> Any:
        value = m.stats.get(name)
        if name == "label_balance" and value is None:
            steps = m.stats.get("steps") or 0
            return (m.stats.get("positive_steps", 0) / steps) if steps else None
        return value if value is not None else 0

    stats: dict[str, Any] = {}
    for name in (*_DELTA_KEYS, "label_balance"):
        x, y = _stat(ma, name), _stat(mb, name)
        stats[name] = {"from": x, "to": y, "delta": (y - x) if x is not None and y is not None else None}

    def _ids(frame: pl.DataFrame) -> list[str]:
        return [str(s) for s in frame["solution_id"].head(DIFF_EXAMPLES).to_list()]

    return {
        "from": ma.version,
        "to": mb.version,
        "shards": {
            "added": sorted(shards_b - shards_a),
            "removed": sorted(shards_a - shards_b),
            "common": len(shards_a & shards_b),
        },
        "solutions": {
            "added": added.height,
            "removed": removed.height,
            "changed": changed.height,
            "common": int(common["n"][0]),
            "duplicate_ids": int(duplicates["n"][0]),
            "added_ids": _ids(added),
            "removed_ids": _ids(removed),
            "changed_ids": _ids(changed),
        },
        "stats": stats,
        "config_changed": ma.config_hash != mb.config_hash,
    }
