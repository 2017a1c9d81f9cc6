"""``steplabel inspect``: versions, statistics, filtered step-by-step views and diffs of a dataset.

Registered in :mod:`steplabel.cli.main` as ``app.command("inspect")(inspect_command)``.

The statistics are those of the whole version (or, with ``--run``, of what one run contributed);
the filters (combined with AND) select the rows ``--show K`` draws from, and ``--json`` reports
``matched``. ``--show K`` draws a seeded sample (``--seed``) that spreads over problems: at most one
solution per problem until every matching problem has given one.

* ``--where EXPR``: a **SQL expression** over the ``step_labels`` columns, parsed by polars' SQL
  engine (``pl.sql_expr``), never evaluated as Python, e.g. ``--where "first_error = 0 AND final_correct"``,
  ``--where "labeler IN ('omegaprm', 'hard_mc') AND judge_first_error IS NOT NULL"``.
* ``--first-error N`` (``-1`` = solutions with no error; write ``--first-error=-1`` or ``--first-error -1``),
  ``--labeler NAME``, ``--disagree`` (judge and MC disagree on the first error), ``--tool-disagree`` (a tool
  verdict contradicts the labeler's own label of a step).

``--diff vA:vB`` (or ``--diff vA --diff vB``) compares two versions instead of summarising one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from steplabel.cli.common import console, fail, first_line, open_store

_BAR = "█"
_BAR_WIDTH = 32


def _parse_diff(diff: list[str]) -> tuple[str, str]:
    parts: list[str] = []
    for item in diff:
        parts.extend(p.strip() for p in item.split(":"))
    if len(parts) != 2 or not all(parts):
        fail(f"--diff needs exactly two versions (--diff vA:vB or --diff vA --diff vB), got {diff!r}")
    return parts[0], parts[1]


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _filters_given(where: str | None, first_error: int | None, labeler: str | None, disagree: bool,
                   tool_disagree: bool) -> dict:
    given = {"where": where, "first_error": first_error, "labeler": labeler, "disagree": disagree or None,
             "tool_disagree": tool_disagree or None}
    return {k: v for k, v in given.items() if v is not None}


# --------------------------------------------------------------------------------------------------------
# terminal charts
# --------------------------------------------------------------------------------------------------------
def bar_chart(title: str, items: list[tuple[str, int | float]], *, style: str = "cyan", fmt: str = "{:d}",
              share: bool = True) -> Table:
    """A small horizontal bar chart (one row per item, bars scaled to the largest value); ``share`` adds
    each item's percentage of the total (meaningless for means, so off for them)."""
    table = Table(title=title, show_header=False, box=None, padding=(0, 1), title_justify="left")
    table.add_column(justify="right", style="bold")
    table.add_column()
    table.add_column(justify="right")
    table.add_column(justify="right", style="dim")
    top = max((v for _, v in items), default=0) or 1
    total = sum(v for _, v in items) or 1
    for label, value in items:
        length = int(round(_BAR_WIDTH * value / top))
        bar = Text(_BAR * length if value else "", style=style)
        if value and not length:
            bar = Text("▏", style=style)
        table.add_row(Text(str(label)), bar, fmt.format(value), f"{100 * value / total:.1f}%" if share else "")
    return table


def _fmt_num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _print_versions(store: Any, directory: Path) -> None:
    table = Table(title=f"versions of {directory}")
    for column in ("version", "created", "rows", "rejects", "steps", "runs", "config hash"):
        table.add_column(column, justify="right" if column in ("rows", "rejects", "steps") else "left")
    from steplabel.storage.store import StoreError

    for name in store.versions():
        try:
            manifest = store.manifest(name)
        except StoreError as error:  # one damaged manifest must not hide the other versions
            table.add_row(name, Text(f"unreadable: {first_line(error)}"))
            continue
        stats = manifest.stats
        table.add_row(
            name,
            str(manifest.created_at or "")[:16].replace("T", " "),
            str(stats.get("solutions", 0)),
            str(stats.get("rejects", 0)),
            str(stats.get("steps", 0)),
            Text(", ".join(manifest.run_ids)),
            Text((manifest.config_hash or "-")[:12]),
        )
    console.print(table)


def _answer_line(stats: dict[str, Any]) -> str:
    """Final-answer accuracy and per-problem pass rate in one line."""
    answers, problems = stats["answers"], stats["problems"]
    accuracy = ("no graded answer" if answers["accuracy"] is None
                else f"{answers['accuracy']:.3f} ({answers['correct']}/{answers['graded']} correct"
                     + (f", {answers['ungraded']} ungraded)" if answers["ungraded"] else ")"))
    return (f"{accuracy}; {problems['problems']} problems, {_fmt_num(problems['solutions_per_problem'], 1)} "
            f"solutions each, mean pass rate {_fmt_num(problems['mean_pass_rate'], 3)}")


def _print_summary(summary: dict[str, Any], stats: dict[str, Any], scope: str) -> None:
    details = Table(title=f"summary of {summary['version']} ({scope})", show_header=False)
    for key in ("solutions", "steps", "positive_steps", "negative_steps", "rejects", "rollouts", "tokens"):
        details.add_row(key, _fmt_num(summary[key]))
    balance = stats["label_balance"]
    details.add_row("label balance", f"{_fmt_num(balance['positive_fraction'], 3)} good")
    details.add_row("final answers", _answer_line(stats))
    details.add_row("steps per solution", _fmt_num(stats["steps_per_solution"]["mean"], 2))
    retention = stats["retention"]
    details.add_row("retention", f"{_fmt_num(retention['retention'], 3)} "
                                 f"({retention['labelled']} labelled of {retention['sampled']} items)")
    judge = stats["judge_agreement"]
    details.add_row("judge vs MC agreement",
                    "no judged rows" if judge["fraction"] is None
                    else f"{judge['fraction']:.3f} ({judge['agree']}/{judge['judged']}; judge earlier "
                         f"{judge['judge_earlier']}, later {judge['judge_later']})")
    cost = stats["cost"]
    details.add_row("cost per label", f"{_fmt_num(cost['rollouts_per_label'])} rollouts, "
                                      f"{_fmt_num(cost['tokens_per_label'], 1)} tokens per labelled step "
                                      "(rejects included)")
    details.add_row("labelers", Text(", ".join(f"{k}: {v}" for k, v in stats["labelers"].items()) or "-"))
    details.add_row("models", Text("; ".join(f"{role}: {', '.join(names)}" for role, names in stats["models"].items()
                                             if names) or "-"))
    details.add_row("config hash", Text(str(summary.get("config_hash") or "-")))
    console.print(details)

    console.print(bar_chart("label balance (steps)",
                            [("good", balance["positive"]), ("bad", balance["negative"])]
                            + ([("unlabelled", balance["unlabelled"])] if balance["unlabelled"] else []),
                            style="green"))
    first = [("none" if k == -1 else str(k), v) for k, v in stats["first_error"].items()]
    console.print(bar_chart("first-error position (solutions; none = no error)", first, style="red"))
    console.print(bar_chart("steps per solution (solutions)",
                            [(str(k), v) for k, v in stats["steps_per_solution"]["histogram"].items()], style="cyan"))
    mc = stats["mc_scores"]
    console.print(bar_chart("MC score distribution (steps)",
                            [(f"{lo:.1f}-{hi:.1f}", n) for (lo, hi), n in zip(mc["bins"], mc["counts"])],
                            style="yellow"))
    console.print(bar_chart("mean MC score by step index", [(f"step {k}", v["mc_mean"] or 0.0)
                                                             for k, v in stats["mc_by_step"].items()],
                            style="yellow", fmt="{:.3f}", share=False))
    console.print(bar_chart("per-problem pass rate (problems)",
                            list(stats["problems"]["pass_rate_histogram"].items()), style="green"))
    console.print(bar_chart("grader layer (solutions)", [(layer, v["solutions"]) for layer, v
                                                         in stats["answers"]["by_grader_layer"].items()]))
    stages = [("labelled", retention["labelled"])] + [
        (f"rejected: {stage}", n) for stage, n in retention["rejected_by_stage"].items()
    ]
    console.print(bar_chart("retention by stage (items)", stages, style="blue"))
    if retention["rejected"]:
        reasons = Table(title="rejects by stage and reason", title_justify="left")
        for column in ("stage", "reason", "items"):
            reasons.add_column(column, justify="right" if column == "items" else "left")
        for stage, by_reason in retention["rejected"].items():
            for reason, n in by_reason.items():
                reasons.add_row(Text(stage), Text(reason), str(n))
        console.print(reasons)
        examples = Table(title="rejected items (examples)", title_justify="left")
        for column in ("item", "stage", "reason", "detail"):
            examples.add_column(column)
        for ex in retention["examples"]:
            examples.add_row(*(Text(str(ex[k] or "-")) for k in ("item_id", "stage", "reason", "detail")))
        console.print(examples)
    _print_verification(stats["verification"])
    if judge["judged"]:
        console.print(bar_chart("judge vs MC first error (judged solutions)",
                                [("agree", judge["agree"]), ("judge earlier", judge["judge_earlier"]),
                                 ("judge later", judge["judge_later"])], style="magenta"))


def verification_line(verification: dict[str, Any]) -> str:
    """One line on tool verification: verdicts, agreement with the labeler's MC labels, what was exported."""
    v = verification
    if not v["solutions_checked"]:
        return "no tool verdicts (verification off)"
    agreement = v["agreement"]
    agree = ("-" if agreement["fraction"] is None
             else f"{agreement['fraction']:.3f} ({agreement['agree']}/{agreement['decisive']})")
    return (f"{v['verified']} steps verified, {v['refuted']} refuted (in {v['refuted_solutions']} solutions), "
            f"{v['unknown']} unknown; labeler agrees on {agree} decided steps; "
            f"{v['good_but_refuted']} exported good but refuted")


def _print_verification(verification: dict[str, Any]) -> None:
    v, conflicts = verification, verification["conflicts"]
    table = Table(title="tool verification (steps)", show_header=False, title_justify="left")
    table.add_row("verdicts", verification_line(v))
    if v["solutions_checked"]:
        table.add_row("conflicts", f"{conflicts['refuted_but_labeler_good']} refuted steps the labeler called good "
                                   f"(in {conflicts['refuted_but_labeler_good_solutions']} solutions), "
                                   f"{conflicts['verified_but_labeler_bad']} verified steps it called bad")
        table.add_row("relabelled by the tools", f"{v['relabelled_steps']} steps in {v['relabelled_solutions']} "
                                                 "solutions (labels vs labeler_labels)")
        table.add_row("good but refuted", Text(str(v["good_but_refuted"]), style="bold red" if v["good_but_refuted"]
                                               else "green"))
    console.print(table)
    if conflicts["examples"]:
        examples = Table(title="refuted steps the labeler called good (examples)", title_justify="left")
        for column in ("solution", "step", "mc", "exported", "refuted claim"):
            examples.add_column(column)
        for ex in conflicts["examples"]:
            examples.add_row(Text(str(ex["solution_id"])), str(ex["step"]), _fmt_num(ex["mc"]),
                             "GOOD" if ex["label"] else "BAD", Text(str(ex["evidence"] or "-")))
        console.print(examples)


def _print_diff(diff: dict[str, Any]) -> None:
    table = Table(title=f"diff {diff['from']} -> {diff['to']}", show_header=False)
    shards, sols = diff["shards"], diff["solutions"]
    table.add_row("shards", f"+{len(shards['added'])} / -{len(shards['removed'])} ({shards['common']} common)")
    table.add_row("solutions", f"+{sols['added']} / -{sols['removed']}, {sols['changed']} relabelled "
                               f"({sols['common']} common)"
                               + (f"; {sols['duplicate_ids']} ids on several rows in {diff['to']}"
                                  if sols["duplicate_ids"] else ""))
    table.add_row("config changed", "yes" if diff["config_changed"] else "no")
    for key, value in diff["stats"].items():
        delta = value["delta"]
        sign = "" if delta is None or delta < 0 else "+"
        table.add_row(key, f"{_fmt_num(value['from'], 4)} -> {_fmt_num(value['to'], 4)} "
                           f"({sign}{_fmt_num(delta, 4)})")
    for label, key in (("added", "added"), ("removed", "removed"), ("relabelled", "changed")):
        examples = sols[f"{key}_ids"]
        if examples:
            more = sols[key] - len(examples)
            table.add_row(f"{label} (examples)", Text(", ".join(examples) + (f" ... (+{more})" if more > 0 else "")))
    if shards["added"] or shards["removed"]:
        table.add_row("shards added", Text(", ".join(shards["added"]) or "-"))
        table.add_row("shards removed", Text(", ".join(shards["removed"]) or "-"))
    console.print(table)


# --------------------------------------------------------------------------------------------------------
# command
# --------------------------------------------------------------------------------------------------------
def inspect_command(
    directory: Annotated[str, typer.Argument(help="dataset directory (or s3://... URL) written by `steplabel run`")],
    version: Annotated[Optional[str], typer.Option("--version", "-v", help="e.g. v3; default: latest")] = None,
    show: Annotated[int, typer.Option(
        "--show", min=0, help="print K (filtered) solutions step by step: a seeded sample spread over problems"
    )] = 0,
    seed: Annotated[int, typer.Option("--seed", help="seed of the --show sample")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object")] = False,
    where: Annotated[Optional[str], typer.Option(
        "--where", help="filter: a SQL expression over the columns, e.g. \"first_error = 0 AND final_correct\""
    )] = None,
    first_error: Annotated[Optional[int], typer.Option(
        "--first-error", help="filter: first error at step N (-1 = no error)"
    )] = None,
    labeler: Annotated[Optional[str], typer.Option("--labeler", help="filter: labeler name, e.g. omegaprm")] = None,
    disagree: Annotated[bool, typer.Option(
        "--disagree", help="filter: judge and MC disagree on the first error"
    )] = False,
    tool_disagree: Annotated[bool, typer.Option(
        "--tool-disagree", help="filter: a tool verdict contradicts the labeler's label of a step"
    )] = False,
    run: Annotated[Optional[str], typer.Option(
        "--run", help="statistics of what one run (by id) contributed to the version"
    )] = None,
    diff: Annotated[Optional[list[str]], typer.Option(
        "--diff", help="compare two versions: --diff vA:vB (or --diff vA --diff vB)"
    )] = None,
) -> None:
    """Show the committed versions and the statistics of one (the latest by default); filter and render
    solutions step by step; or diff two versions."""
    import polars as pl

    from steplabel.storage.inspection import version_stats
    from steplabel.storage.selection import InspectionError, diff_versions, filter_rows, sample_rows
    from steplabel.storage.store import StoreError

    store = open_store(directory, committed=False)

    if diff:
        va, vb = _parse_diff(diff)
        try:
            result = diff_versions(store, va, vb)
        except StoreError as error:
            fail(first_line(error))
        if as_json:
            sys.stdout.write(json.dumps(result, default=_json_default) + "\n")
        else:
            _print_diff(result)
        return

    try:
        summary = store.summary(version)
        damaged = store.verify(summary["version"]) if summary["version"] else []  # every file by its sha256
    except StoreError as error:
        fail(first_line(error))
    if damaged:
        fail(f"{summary['version']}: {len(damaged)} damaged file(s): " + "; ".join(damaged), code=1)
    filters = _filters_given(where, first_error, labeler, disagree, tool_disagree)
    if summary["version"] is None:
        if as_json:
            sys.stdout.write(json.dumps(summary, default=_json_default) + "\n")
            return
        fail(f"{directory}: no committed version yet (write one with `steplabel run --out {directory}`)", code=1)

    name = summary["version"]
    try:
        rows = filter_rows(store.scan("step_labels", name), where=where, first_error=first_error,
                           labeler=labeler, disagree=disagree, tool_disagree=tool_disagree)
        matched = rows.select(n=pl.len()).collect(engine="streaming")["n"][0] if filters else None
        samples = sample_rows(rows, show, seed) if show else None
    except InspectionError as error:
        fail(str(error))
    except pl.exceptions.PolarsError as error:
        fail(f"--where {where!r} cannot be applied: {first_line(error)}" if where else first_line(error))

    try:
        stats = version_stats(store, name, run_id=run)
    except StoreError as error:
        fail(first_line(error))
    scope = f"run {run} only" if run else "whole version"

    if as_json:
        out = dict(summary)
        out["stats"] = stats
        out["stats_scope"] = scope
        out["good_but_refuted"] = stats["verification"]["good_but_refuted"]
        if filters:
            out["filters"] = filters
            out["matched"] = int(matched)
        if samples is not None:
            out["sample_seed"] = seed
            out["samples"] = samples.to_dicts()
        sys.stdout.write(json.dumps(out, default=_json_default) + "\n")
        return

    _print_versions(store, directory)
    _print_summary(summary, stats, scope)
    if filters:
        described = ", ".join(f"{k}={v!r}" for k, v in filters.items())
        console.print(Text(f"{matched} of {summary['solutions']} solutions match {described} (the statistics "
                           f"above are of the {scope}; the filters select what --show draws from)"))
    if samples is not None:
        if samples.height == 0:
            console.print("no solution to show" + (" (nothing matches the filters)" if filters else ""))
        else:
            from steplabel.cli.render import render_solutions

            problems = samples["problem_id"].n_unique()
            console.print(Text(f"{samples.height} solutions from {problems} problems (seed {seed}; --seed N "
                               "draws another sample)"))
            render_solutions(console, samples)
    elif filters:
        console.print("render them with --show K")
