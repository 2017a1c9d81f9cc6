"""Inspection of a committed version: statistics, row filters and version diffs (pure polars, no CLI).

Used by ``steplabel inspect`` (:mod:`steplabel.cli.inspect_cmd`) and ``steplabel report``
(:mod:`steplabel.storage.html_report`); usable directly from Python::

    from steplabel.storage.store import ShardStore
    from steplabel.storage.inspection import version_stats, filter_rows, diff_versions

    store = ShardStore("steplabel-data")
    stats = version_stats(store)                                   # latest version
    bad_first = filter_rows(store.scan(), where="first_error = 0 AND NOT final_correct").collect()
    delta = diff_versions(store, "v1", "v2")

``where`` is a **SQL expression** (polars' ``pl.sql_expr``: ``=``, ``<>``, ``AND``/``OR``/``NOT``, ``IN``,
``LIKE``, ``IS NULL``, functions such as ``array_length``); it is parsed, never evaluated as Python.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from steplabel.storage.schema import REJECTS, STEP_LABELS

__all__ = [
    "MC_BINS",
    "STAGE_ORDER",
    "InspectionError",
    "diff_versions",
    "filter_rows",
    "parse_where",
    "verification_stats",
    "version_stats",
]

#: number of equal-width bins over [0, 1] of the MC score histogram (the last bin includes 1.0)
MC_BINS = 10
#: pipeline order of the ``rejects.stage`` values (unknown stages are listed after these, sorted)
STAGE_ORDER = ("source", "sampling", "labeling", "verification", "judge")
#: how many example ids ``diff_versions`` lists per category
DIFF_EXAMPLES = 20
#: how many tool/labeler conflicts ``verification_stats`` lists as examples
CONFLICT_EXAMPLES = 10

_STREAMING = "streaming"


class InspectionError(ValueError):
    """A bad filter (unparseable ``where``, unknown column) or an unusable argument; one-line message."""


def _collect_all(frames: list[pl.LazyFrame]) -> list[pl.DataFrame]:
    """Collect several queries together with the streaming engine (bounded memory on big versions)."""
    try:
        return pl.collect_all(frames, engine=_STREAMING)
    except TypeError:  # pragma: no cover - polars without the ``engine`` argument
        return pl.collect_all(frames)


# --------------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------------
def _mc_bin_edges() -> list[list[float]]:
    return [[round(i / MC_BINS, 10), round((i + 1) / MC_BINS, 10)] for i in range(MC_BINS)]


def _ordered_stages(stages: set[str]) -> list[str]:
    known = [s for s in STAGE_ORDER if s in stages]
    return known + sorted(stages - set(STAGE_ORDER))


def version_stats(store: Any, version: str | None = None) -> dict[str, Any]:
    """Statistics of one version (default: latest) computed from the data (streaming polars scans).

    Returns a JSON-serialisable dict (histogram keys are ints in Python, strings once dumped to JSON)::

        version, solutions, steps (= total length of the labels lists)
        label_balance:   {positive, negative, unlabelled (null label entries), steps, positive_fraction}
        first_error:     {index -> solutions}, -1 = no error (sorted by index)
        mc_scores:       {bins: [[lo, hi], ...10], counts: [...10], total, nulls, mean}
                         (every step's MC score; bin i is [i/10, (i+1)/10), the last one includes 1.0)
        retention:       {sampled, labelled, rejected_total, rejected: {stage: {reason: n}},
                          rejected_by_stage: {stage: n}, retention}
                         sampled = labelled solutions + rejected items; retention = labelled / sampled
        judge_agreement: {judged, agree, judge_earlier, judge_later, fraction}
                         over rows with a non-null judge_first_error; fraction = agree / judged
                         (None when no row was judged); earlier/later: judge's index vs MC first_error,
                         with -1 (no error) counting as "after every step"
        cost:            {rollouts, tokens, rollouts_labelled, tokens_labelled, rollouts_rejected,
                          tokens_rejected, rollouts_per_label, tokens_per_label,
                          rollouts_per_solution, tokens_per_solution,
                          by_labeler: {labeler: {solutions, steps, rollouts, tokens, rollouts_per_label,
                                                 tokens_per_label}}}
                         totals include what was spent on rejected items; "per label" = per labelled step;
                         by_labeler counts labelled rows only (rejects carry no labeler)
        labelers:        {labeler -> solutions}
        verification:    :func:`verification_stats` (tool verdicts vs labels, good_but_refuted, conflicts)
    """
    manifest = store.manifest(version)
    name = manifest.version
    labels = store.scan(STEP_LABELS, name)
    rejects = store.scan(REJECTS, name)

    flat_labels = pl.col("labels").list.eval(pl.element().cast(pl.Int64))
    # judge's first error vs MC's, with -1 = "no error" mapped after every step for the ordering
    big = pl.lit(2**31 - 1, dtype=pl.Int64)
    judge_pos = pl.when(pl.col("judge_first_error") < 0).then(big).otherwise(pl.col("judge_first_error").cast(pl.Int64))
    mc_pos = pl.when(pl.col("first_error") < 0).then(big).otherwise(pl.col("first_error").cast(pl.Int64))
    judged = pl.col("judge_first_error").is_not_null()

    totals_q = labels.select(
        solutions=pl.len(),
        steps=pl.col("labels").list.len().sum(),  # = completions' length by contract; reads no text
        positive=flat_labels.list.sum().sum(),
        nonnull_labels=pl.col("labels").list.eval(pl.element().is_not_null().cast(pl.Int64)).list.sum().sum(),
        rollouts=pl.col("rollouts_used").cast(pl.Int64).sum(),
        tokens=pl.col("tokens_generated").cast(pl.Int64).sum(),
        judged=judged.sum(),
        agree=(judged & (pl.col("judge_first_error") == pl.col("first_error"))).sum(),
        judge_earlier=(judged & (judge_pos < mc_pos)).sum(),
        judge_later=(judged & (judge_pos > mc_pos)).sum(),
    )
    first_error_q = labels.group_by("first_error").agg(n=pl.len())
    labeler_q = labels.group_by("labeler").agg(
        n=pl.len(),
        steps=pl.col("labels").list.len().sum(),
        rollouts=pl.col("rollouts_used").cast(pl.Int64).sum(),
        tokens=pl.col("tokens_generated").cast(pl.Int64).sum(),
    )
    # bin index of every step's MC score (a null score goes to a null bin; a null or empty list gives no
    # row); the epsilon absorbs float32 error (0.7f * 10 = 6.99999..)
    mc_q = (
        labels.filter(pl.col("mc_scores").list.len() > 0)
        .select(mc=pl.col("mc_scores").explode().cast(pl.Float64))
        .select(
            bin=(pl.col("mc") * MC_BINS + 1e-6).floor().clip(0, MC_BINS - 1).cast(pl.Int32),
            mc=pl.col("mc"),
        )
        .group_by("bin")
        .agg(n=pl.len(), total=pl.col("mc").sum())
    )
    rejects_q = rejects.group_by("stage", "reason").agg(
        n=pl.len(),
        rollouts=pl.col("rollouts_used").cast(pl.Int64).sum(),
        tokens=pl.col("tokens_generated").cast(pl.Int64).sum(),
    )
    totals, first_errors, labelers, mc_bins, rej = _collect_all(
        [totals_q, first_error_q, labeler_q, mc_q, rejects_q]
    )
    t = {k: int(v or 0) for k, v in totals.row(0, named=True).items()}

    positive = t["positive"]
    negative = t["nonnull_labels"] - positive
    label_balance = {
        "positive": positive,
        "negative": negative,
        "unlabelled": t["steps"] - t["nonnull_labels"],  # null entries in labels
        "steps": t["steps"],
        "positive_fraction": (positive / t["nonnull_labels"]) if t["nonnull_labels"] else None,
    }

    first_error = {
        (int(k) if k is not None else None): int(n)
        for k, n in sorted(first_errors.iter_rows(), key=lambda kv: (kv[0] is None, kv[0] if kv[0] is not None else 0))
    }

    counts = [0] * MC_BINS
    nulls = 0
    mc_sum = 0.0
    for b, n, total in mc_bins.iter_rows():
        if b is None:
            nulls += int(n)
        else:
            counts[int(b)] += int(n)
            mc_sum += float(total or 0.0)
    mc_total = sum(counts)
    mc_scores = {
        "bins": _mc_bin_edges(),
        "counts": counts,
        "total": mc_total,
        "nulls": nulls,
        "mean": (mc_sum / mc_total) if mc_total else None,
    }

    rejected: dict[str, dict[str, int]] = {}
    by_stage: dict[str, int] = {}
    rej_rollouts = rej_tokens = 0
    stages = {str(s) for s in rej["stage"].to_list()}
    for stage in _ordered_stages(stages):
        part = rej.filter(pl.col("stage") == stage).sort("reason")
        rejected[stage] = {str(r): int(n) for r, n in zip(part["reason"], part["n"])}
        by_stage[stage] = int(part["n"].sum())
    for row in rej.iter_rows(named=True):
        rej_rollouts += int(row["rollouts"] or 0)
        rej_tokens += int(row["tokens"] or 0)
    rejected_total = sum(by_stage.values())
    sampled = t["solutions"] + rejected_total
    retention = {
        "sampled": sampled,
        "labelled": t["solutions"],
        "rejected_total": rejected_total,
        "rejected": rejected,
        "rejected_by_stage": by_stage,
        "retention": (t["solutions"] / sampled) if sampled else None,
    }

    judge = {
        "judged": t["judged"],
        "agree": t["agree"],
        "judge_earlier": t["judge_earlier"],
        "judge_later": t["judge_later"],
        "fraction": (t["agree"] / t["judged"]) if t["judged"] else None,
    }

    rollouts = t["rollouts"] + rej_rollouts
    tokens = t["tokens"] + rej_tokens
    steps = t["steps"]
    cost = {
        "rollouts": rollouts,
        "tokens": tokens,
        "rollouts_labelled": t["rollouts"],
        "tokens_labelled": t["tokens"],
        "rollouts_rejected": rej_rollouts,
        "tokens_rejected": rej_tokens,
        "rollouts_per_label": (rollouts / steps) if steps else None,
        "tokens_per_label": (tokens / steps) if steps else None,
        "rollouts_per_solution": (rollouts / t["solutions"]) if t["solutions"] else None,
        "tokens_per_solution": (tokens / t["solutions"]) if t["solutions"] else None,
        "by_labeler": {},
    }
    by_labeler = sorted(labelers.iter_rows(named=True), key=lambda r: str(r["labeler"]))
    for row in by_labeler:
        n_steps = int(row["steps"] or 0)
        cost["by_labeler"][str(row["labeler"])] = {
            "solutions": int(row["n"]),
            "steps": n_steps,
            "rollouts": int(row["rollouts"] or 0),
            "tokens": int(row["tokens"] or 0),
            "rollouts_per_label": (int(row["rollouts"] or 0) / n_steps) if n_steps else None,
            "tokens_per_label": (int(row["tokens"] or 0) / n_steps) if n_steps else None,
        }

    return {
        "version": name,
        "solutions": t["solutions"],
        "steps": steps,
        "label_balance": label_balance,
        "first_error": first_error,
        "mc_scores": mc_scores,
        "retention": retention,
        "judge_agreement": judge,
        "cost": cost,
        "labelers": {str(r["labeler"]): int(r["n"]) for r in by_labeler},
        "verification": verification_stats(labels),
    }


def verification_stats(labels: pl.LazyFrame) -> dict[str, Any]:
    """Tool verification of ``step_labels`` rows against their labels (a JSON-serialisable dict)::

        solutions_checked, steps_checked   rows with tool verdicts, and their steps
        verified, refuted, unknown         steps by verdict; refuted_solutions: rows with a refuted step
        good_but_refuted                   exported label good while the tool refuted the step (0 under the
                                           default hybrid rule); good_but_refuted_solutions: rows with one
        agreement                          {decisive, agree, fraction}: over verified/refuted steps, whether the
                                           labeler's own (MC) label agrees (verified & good, refuted & bad)
        conflicts                          {refuted_but_labeler_good, verified_but_labeler_bad} steps, with
                                           ``*_solutions`` counts, and ``examples`` (first 10 refuted-but-good:
                                           solution_id, step, mc, labeler_label, label, evidence)
        relabelled_steps, relabelled_solutions   exported label differs from the labeler's own

    The labeler's own label is ``labeler_labels``; shards written before that column existed fall back to
    ``labels``. Rows with no verdicts (verification off) are not counted.
    """
    verdict = pl.col("verdict")
    own = pl.col("own").fill_null(False)
    good = pl.col("good").fill_null(False)
    refuted, verified = verdict == "refuted", verdict == "verified"
    flags = {
        "verified": verified,
        "refuted": refuted,
        "good_but_refuted": good & refuted,
        "refuted_but_labeler_good": own & refuted,
        "verified_but_labeler_bad": ~own & verified,
        "agree": (verified & own) | (refuted & ~own),
        "relabelled": pl.col("good").ne_missing(pl.col("own")),
    }
    # one row per checked step; evidence and MC stay lists (they may be null as a whole) until an example needs them
    steps = (
        labels.filter(
            (pl.col("tool_verdicts").list.len() > 0)
            # a row whose per-step lists disagree in length cannot be read step by step; it is left out
            & (pl.col("labels").list.len() == pl.col("tool_verdicts").list.len())
            & (pl.col("labeler_labels").list.len().fill_null(pl.col("labels").list.len())
               == pl.col("labels").list.len())
        )
        .with_row_index("row")
        .select(
            "row",
            "solution_id",
            "tool_evidence",
            "mc_scores",
            good=pl.col("labels"),
            own=pl.coalesce(pl.col("labeler_labels"), pl.col("labels")),
            verdict=pl.col("tool_verdicts"),
            step=pl.int_ranges(pl.col("tool_verdicts").list.len()),
        )
        .explode("good", "own", "verdict", "step")
    )
    per_row = steps.group_by("row").agg(n=pl.len(), **{name: flag.sum() for name, flag in flags.items()})
    totals_q = per_row.select(
        solutions=pl.len(),
        steps=pl.col("n").sum(),
        **{name: pl.col(name).sum() for name in flags},
        **{f"{name}_solutions": (pl.col(name) > 0).sum() for name in flags},
    )
    examples_q = (
        steps.filter(own & refuted)
        .sort("row", "step")
        .head(CONFLICT_EXAMPLES)
        .select(
            "solution_id",
            "step",
            mc=pl.col("mc_scores").list.get(pl.col("step"), null_on_oob=True),
            labeler_label=pl.col("own"),
            label=pl.col("good"),
            evidence=pl.col("tool_evidence").list.get(pl.col("step"), null_on_oob=True),
        )
    )
    totals, examples = _collect_all([totals_q, examples_q])
    t = {k: int(v or 0) for k, v in totals.row(0, named=True).items()}
    decisive = t["verified"] + t["refuted"]
    return {
        "solutions_checked": t["solutions"],
        "steps_checked": t["steps"],
        "verified": t["verified"],
        "refuted": t["refuted"],
        "unknown": t["steps"] - decisive,
        "refuted_solutions": t["refuted_solutions"],
        "good_but_refuted": t["good_but_refuted"],
        "good_but_refuted_solutions": t["good_but_refuted_solutions"],
        "agreement": {"decisive": decisive, "agree": t["agree"],
                      "fraction": (t["agree"] / decisive) if decisive else None},
        "conflicts": {
            "refuted_but_labeler_good": t["refuted_but_labeler_good"],
            "refuted_but_labeler_good_solutions": t["refuted_but_labeler_good_solutions"],
            "verified_but_labeler_bad": t["verified_but_labeler_bad"],
            "verified_but_labeler_bad_solutions": t["verified_but_labeler_bad_solutions"],
            "examples": [{**row, "mc": None if row["mc"] is None else round(float(row["mc"]), 4)}
                         for row in examples.to_dicts()],
        },
        "relabelled_steps": t["relabelled"],
        "relabelled_solutions": t["relabelled_solutions"],
    }


# --------------------------------------------------------------------------------------------------------
# filters
# --------------------------------------------------------------------------------------------------------
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


def filter_rows(
    lf: pl.LazyFrame,
    where: str | None = None,
    first_error: int | None = None,
    labeler: str | None = None,
    disagree: bool = False,
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
    """
    columns = lf.collect_schema().names()
    if where is not None:
        expr = parse_where(where, columns)
        lf = lf.filter(expr)
    if first_error is not None:
        lf = lf.filter(pl.col("first_error") == int(first_error))
    if labeler is not None:
        lf = lf.filter(pl.col("labeler") == labeler)
    if disagree:
        lf = lf.filter(
            pl.col("judge_first_error").is_not_null() & (pl.col("judge_first_error") != pl.col("first_error"))
        )
    return lf


# --------------------------------------------------------------------------------------------------------
# diff
# --------------------------------------------------------------------------------------------------------
_DELTA_KEYS = ("solutions", "steps", "positive_steps", "negative_steps", "rejects", "rollouts", "tokens")


def diff_versions(store: Any, va: str, vb: str) -> dict[str, Any]:
    """What changed from version ``va`` to ``vb`` (order matters: "added" = in vb, not in va).

    Returns::

        from, to
        shards:    {added: [shard_id...], removed: [...], common: n}
        solutions: {added, removed, changed, common (counts), added_ids, removed_ids, changed_ids
                    (first 20 of each, sorted)}
                   matched by solution_id; "changed" = same solution_id, different labels or first_error
        stats:     {key: {from, to, delta}} for solutions, steps, positive_steps, negative_steps, rejects,
                   rollouts, tokens and label_balance (manifest statistics)
        config_changed: whether the two versions' config hashes differ
    """
    ma, mb = store.manifest(va), store.manifest(vb)
    shards_a, shards_b = set(ma.shards), set(mb.shards)

    def ids(version: str) -> pl.LazyFrame:
        return (
            store.scan(STEP_LABELS, version)
            .select("solution_id", "labels", "first_error")
            .unique(subset="solution_id", keep="first", maintain_order=True)
        )

    a, b = ids(ma.version), ids(mb.version)
    added_q = b.join(a, on="solution_id", how="anti").select("solution_id").sort("solution_id")
    removed_q = a.join(b, on="solution_id", how="anti").select("solution_id").sort("solution_id")
    joined = a.join(b, on="solution_id", how="inner", suffix="_b")
    changed_q = (
        joined.filter(
            pl.col("labels").ne_missing(pl.col("labels_b"))
            | pl.col("first_error").ne_missing(pl.col("first_error_b"))
        )
        .select("solution_id")
        .sort("solution_id")
    )
    common_q = joined.select(n=pl.len())
    added, removed, changed, common = _collect_all([added_q, removed_q, changed_q, common_q])

    def _stat(m: Any, key: str) -> Any:
        value = m.stats.get(key)
        if key == "label_balance" and value is None:
            steps = m.stats.get("steps") or 0
            return (m.stats.get("positive_steps", 0) / steps) if steps else None
        return value if value is not None else 0

    stats: dict[str, Any] = {}
    for key in (*_DELTA_KEYS, "label_balance"):
        x, y = _stat(ma, key), _stat(mb, key)
        stats[key] = {"from": x, "to": y, "delta": (y - x) if x is not None and y is not None else None}

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
            "added_ids": _ids(added),
            "removed_ids": _ids(removed),
            "changed_ids": _ids(changed),
        },
        "stats": stats,
        "config_changed": ma.config_hash != mb.config_hash,
    }
