"""The one home of the statistics of a committed version (pure polars, no CLI).

``steplabel run`` (its summary), ``steplabel inspect``, ``steplabel report`` and the dataset card of
``steplabel publish`` all print what :func:`version_stats` computes; nothing else recomputes it. Which
rows to look at (filters, a seeded sample, diffs) is in :mod:`steplabel.storage.selection`::

    from steplabel.storage.store import ShardStore
    from steplabel.storage.inspection import version_stats

    store = ShardStore("steplabel-data")
    stats = version_stats(store)                        # latest version
    mine = version_stats(store, "v3", run_id="run-1")   # what one run contributed to v3
"""

from __future__ import annotations

from typing import Any

import polars as pl

from steplabel.storage.schema import REJECTS, STEP_LABELS

__all__ = ["MC_BINS", "PASS_RATE_BINS", "STAGE_ORDER", "verification_stats", "version_stats"]

#: number of equal-width bins over [0, 1] of the MC score histogram (the last bin includes 1.0)
MC_BINS = 10
#: per-problem pass-rate buckets: (name, low, high), low inclusive, high exclusive except for "100%"
PASS_RATE_BINS = (("0%", 0.0, 1e-9), ("1-24%", 1e-9, 0.25), ("25-49%", 0.25, 0.5), ("50-74%", 0.5, 0.75),
                  ("75-99%", 0.75, 1.0 - 1e-9), ("100%", 1.0 - 1e-9, 2.0))
#: pipeline order of the ``rejects.stage`` values (unknown stages are listed after these, sorted)
STAGE_ORDER = ("source", "sampling", "labeling", "verification", "judge")
#: how many tool/labeler conflicts ``verification_stats`` and rejected items ``version_stats`` list
CONFLICT_EXAMPLES = 10
#: characters of a reject's ``detail`` kept in the examples
DETAIL_CHARS = 200

_STREAMING = "streaming"


def _collect_all(frames: list[pl.LazyFrame]) -> list[pl.DataFrame]:
    """Collect several queries together with the streaming engine (bounded memory on big versions)."""
    return pl.collect_all(frames, engine=_STREAMING)


def _mc_bin_edges() -> list[list[float]]:
    return [[round(i / MC_BINS, 10), round((i + 1) / MC_BINS, 10)] for i in range(MC_BINS)]


def _ordered_stages(stages: set[str]) -> list[str]:
    known = [s for s in STAGE_ORDER if s in stages]
    return known + sorted(stages - set(STAGE_ORDER))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def version_stats(store: Any, version: str | None = None, *, run_id: str | None = None) -> dict[str, Any]:
    """Statistics of one version (default: latest) computed from the data (streaming polars scans);
    with ``run_id``, of the rows and rejects that run contributed to the version.

    Returns a JSON-serialisable dict (histogram keys are ints in Python, strings once dumped to JSON)::

        version, run_id, solutions, steps (= total length of the labels lists)
        label_balance:   {positive, negative, unlabelled (null label entries), steps, positive_fraction}
        first_error:     {index -> solutions}, -1 = no error (sorted by index)
        steps_per_solution: {histogram: {steps -> solutions}, mean}
        mc_scores:       {bins: [[lo, hi], ...10], counts: [...10], total, nulls, mean}
                         (every step's MC score; bin i is [i/10, (i+1)/10), the last one includes 1.0)
        mc_by_step:      {step index -> {steps, mc_mean, positive_fraction}}: MC and labels by position
        answers:         {graded, correct, accuracy, ungraded, by_grader_layer: {layer: {solutions, correct}}}
                         final-answer accuracy of the policy's solutions (accuracy = correct / graded)
        problems:        {problems, solutions_per_problem, mean_pass_rate, pass_rate_histogram: {bucket -> n}}
                         pass rate of a problem = its correct solutions / its solutions (ungraded = wrong)
        models:          {policy, completer, judge}: the distinct model names in the rows
        retention:       {sampled, labelled, rejected_total, rejected: {stage: {reason: n}},
                          rejected_by_stage: {stage: n}, retention, examples: [first 10 rejects:
                          item_id, stage, reason, detail]}
                         sampled = labelled solutions + rejected items; retention = labelled / sampled
        judge_agreement: {judged, agree, judge_earlier, judge_later, fraction, consensus_kept, judged_out,
                          consensus_retention}
                         over rows with a non-null judge_first_error; fraction = agree / judged; earlier /
                         later: judge's index vs MC first_error (-1 counts as "after every step");
                         consensus_retention = rows kept by consensus / (those + judge-stage rejects)
        cost:            {rollouts, tokens (all spent, rejects included), rollouts_labelled, tokens_labelled,
                          rollouts_rejected, tokens_rejected, rollouts_per_label, tokens_per_label (all spent
                          per labelled step), rollouts_per_solution, tokens_per_solution,
                          by_labeler: {labeler: {solutions, steps, rollouts, tokens, rollouts_per_step,
                                                 tokens_per_step}}}
                         by_labeler counts labelled rows only (rejects carry no labeler), hence its own names
        labelers:        {labeler -> solutions}
        verification:    :func:`verification_stats` (tool verdicts vs labels, good_but_refuted, conflicts)
    """
    manifest = store.manifest(version)
    name = manifest.version
    labels = store.scan(STEP_LABELS, name)
    rejects = store.scan(REJECTS, name)
    if run_id is not None:
        labels = labels.filter(pl.col("run_id") == run_id)
        rejects = rejects.filter(pl.col("run_id") == run_id)

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
        consensus_kept=pl.col("consensus").fill_null(False).sum(),
    )
    first_error_q = labels.group_by("first_error").agg(n=pl.len())
    length_q = labels.group_by(length=pl.col("labels").list.len().fill_null(0)).agg(n=pl.len())
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
    positions = pl.int_ranges(pl.col("labels").list.len())
    by_step_q = (
        labels.filter(pl.col("labels").list.len() > 0)
        .select(
            step=positions,
            label=pl.col("labels"),
            mc=pl.col("mc_scores").fill_null(pl.lit([], dtype=pl.List(pl.Float32)))
            .list.gather(positions, null_on_oob=True),
        )
        .explode("step", "label", "mc")
        .group_by("step")
        .agg(n=pl.len(), mc_mean=pl.col("mc").cast(pl.Float64).mean(), positive=pl.col("label").cast(pl.Int64).sum(),
             labelled=pl.col("label").is_not_null().sum())
        .sort("step")
    )
    answers_q = labels.group_by("grader_layer").agg(
        n=pl.len(), graded=pl.col("final_correct").is_not_null().sum(), correct=pl.col("final_correct").sum()
    )
    problems_q = (
        labels.group_by("problem_id")
        .agg(n=pl.len(), correct=pl.col("final_correct").fill_null(False).sum())
        .select(rate=pl.col("correct") / pl.col("n"))
    )
    models_q = labels.select(
        *(pl.col(f"{role}_model").drop_nulls().unique().sort().implode().alias(role)
          for role in ("policy", "completer", "judge"))
    )
    rejects_q = rejects.group_by("stage", "reason").agg(
        n=pl.len(),
        rollouts=pl.col("rollouts_used").cast(pl.Int64).sum(),
        tokens=pl.col("tokens_generated").cast(pl.Int64).sum(),
    )
    reject_examples_q = rejects.head(CONFLICT_EXAMPLES).select(
        "item_id", "stage", "reason", detail=pl.col("detail").str.slice(0, DETAIL_CHARS)
    )
    (totals, first_errors, lengths, labelers, mc_bins, by_step, answers, problems, models, rej,
     reject_examples) = _collect_all(
        [totals_q, first_error_q, length_q, labeler_q, mc_q, by_step_q, answers_q, problems_q, models_q,
         rejects_q, reject_examples_q]
    )
    t = {k: int(v or 0) for k, v in totals.row(0, named=True).items()}

    positive = t["positive"]
    label_balance = {
        "positive": positive,
        "negative": t["nonnull_labels"] - positive,
        "unlabelled": t["steps"] - t["nonnull_labels"],  # null entries in labels
        "steps": t["steps"],
        "positive_fraction": _ratio(positive, t["nonnull_labels"]),
    }
    first_error = {
        (int(k) if k is not None else None): int(n)
        for k, n in sorted(first_errors.iter_rows(), key=lambda kv: (kv[0] is None, kv[0] if kv[0] is not None else 0))
    }
    steps_per_solution = {
        "histogram": {int(k): int(n) for k, n in sorted(lengths.iter_rows())},
        "mean": _ratio(t["steps"], t["solutions"]),
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
    mc_scores = {"bins": _mc_bin_edges(), "counts": counts, "total": mc_total, "nulls": nulls,
                 "mean": _ratio(mc_sum, mc_total)}
    mc_by_step = {
        int(row["step"]): {"steps": int(row["n"]), "mc_mean": row["mc_mean"],
                           "positive_fraction": _ratio(int(row["positive"]), int(row["labelled"]))}
        for row in by_step.iter_rows(named=True)
    }

    graded = int(answers["graded"].sum() or 0)
    correct = int(answers["correct"].sum() or 0)
    answer_stats = {
        "graded": graded,
        "correct": correct,
        "accuracy": _ratio(correct, graded),
        "ungraded": t["solutions"] - graded,
        "by_grader_layer": {
            str(row["grader_layer"]): {"solutions": int(row["n"]), "correct": int(row["correct"] or 0)}
            for row in sorted(answers.iter_rows(named=True), key=lambda r: (-r["n"], str(r["grader_layer"])))
        },
    }
    rates = problems["rate"]
    problem_stats = {
        "problems": problems.height,
        "solutions_per_problem": _ratio(t["solutions"], problems.height),
        "mean_pass_rate": float(rates.mean()) if problems.height else None,
        "pass_rate_histogram": {name: int(((rates >= lo) & (rates < hi)).sum()) for name, lo, hi in PASS_RATE_BINS},
    }

    rejected: dict[str, dict[str, int]] = {}
    by_stage: dict[str, int] = {}
    for stage in _ordered_stages({str(s) for s in rej["stage"].to_list()}):
        part = rej.filter(pl.col("stage") == stage).sort("reason")
        rejected[stage] = {str(r): int(n) for r, n in zip(part["reason"], part["n"])}
        by_stage[stage] = int(part["n"].sum())
    rej_rollouts = int(rej["rollouts"].sum() or 0)
    rej_tokens = int(rej["tokens"].sum() or 0)
    rejected_total = sum(by_stage.values())
    sampled = t["solutions"] + rejected_total
    retention = {
        "sampled": sampled,
        "labelled": t["solutions"],
        "rejected_total": rejected_total,
        "rejected": rejected,
        "rejected_by_stage": by_stage,
        "retention": _ratio(t["solutions"], sampled),
        "examples": reject_examples.to_dicts(),
    }

    judged_out = by_stage.get("judge", 0)
    judge = {
        "judged": t["judged"],
        "agree": t["agree"],
        "judge_earlier": t["judge_earlier"],
        "judge_later": t["judge_later"],
        "fraction": _ratio(t["agree"], t["judged"]),
        "consensus_kept": t["consensus_kept"],
        "judged_out": judged_out,
        "consensus_retention": _ratio(t["consensus_kept"], t["consensus_kept"] + judged_out),
    }

    rollouts = t["rollouts"] + rej_rollouts
    tokens = t["tokens"] + rej_tokens
    steps = t["steps"]
    by_labeler = sorted(labelers.iter_rows(named=True), key=lambda r: str(r["labeler"]))
    cost = {
        "rollouts": rollouts,
        "tokens": tokens,
        "rollouts_labelled": t["rollouts"],
        "tokens_labelled": t["tokens"],
        "rollouts_rejected": rej_rollouts,
        "tokens_rejected": rej_tokens,
        "rollouts_per_label": _ratio(rollouts, steps),
        "tokens_per_label": _ratio(tokens, steps),
        "rollouts_per_solution": _ratio(rollouts, t["solutions"]),
        "tokens_per_solution": _ratio(tokens, t["solutions"]),
        "by_labeler": {
            str(row["labeler"]): {
                "solutions": int(row["n"]),
                "steps": int(row["steps"] or 0),
                "rollouts": int(row["rollouts"] or 0),
                "tokens": int(row["tokens"] or 0),
                "rollouts_per_step": _ratio(int(row["rollouts"] or 0), int(row["steps"] or 0)),
                "tokens_per_step": _ratio(int(row["tokens"] or 0), int(row["steps"] or 0)),
            }
            for row in by_labeler
        },
    }

    return {
        "version": name,
        "run_id": run_id,
        "solutions": t["solutions"],
        "steps": steps,
        "label_balance": label_balance,
        "first_error": first_error,
        "steps_per_solution": steps_per_solution,
        "mc_scores": mc_scores,
        "mc_by_step": mc_by_step,
        "answers": answer_stats,
        "problems": problem_stats,
        "models": models.row(0, named=True),
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
