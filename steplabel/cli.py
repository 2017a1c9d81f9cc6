"""The ``steplabel`` command line: run, inspect, grade."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from steplabel.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Process-supervision (step-label) data for PRMs.")
console = Console()
err_console = Console(stderr=True)

DEFAULT_OUT = Path("steplabel-data")


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _prefect_defaults() -> None:
    """No server needed: Prefect's ephemeral mode, without telemetry (it fails with no network)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML run config; default: the embedded quick-start")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="dataset directory (the versioned store)")] = DEFAULT_OUT,
) -> None:
    """Run the whole pipeline and commit a new version of the dataset at OUT."""
    try:
        run_config = load_config(config)
    except ConfigError as error:
        _fail(str(error))
    _prefect_defaults()
    from flows.pipeline import pipeline_flow, run_id_for
    from steplabel.progress_view import RunProgress

    started = time.monotonic()
    run_id = run_id_for(run_config)
    console.print(f"steplabel run [bold]{run_id}[/] -> {out.resolve()}  (config hash {run_config.hash()[:12]})")
    with RunProgress(console):
        result = pipeline_flow(config=run_config.model_dump(mode="json"), out=str(out), run_id=run_id)
    wall = time.monotonic() - started
    _print_run_summary(out, result, wall)


def run_summary(out: Path, run_id: str, version: str) -> dict[str, Any]:
    """Counts of what one run contributed to a version (a version may hold several runs)."""
    import polars as pl

    from storage.store import ShardStore

    store = ShardStore(out)
    mine = pl.col("run_id") == run_id
    labels = (
        store.scan("step_labels", version)
        .filter(mine)
        .select(
            solutions=pl.len(),
            steps=pl.col("labels").list.len().sum(),
            positive_steps=pl.col("labels").list.eval(pl.element().cast(pl.Int64)).list.sum().sum(),
            rollouts=pl.col("rollouts_used").cast(pl.Int64).sum(),
            tokens=pl.col("tokens_generated").sum(),
        )
        .collect()
        .row(0, named=True)
    )
    rejects = store.scan("rejects", version).filter(mine).collect()
    by_reason = dict(sorted(rejects.group_by("reason").len().iter_rows()))
    summary = {key: int(value or 0) for key, value in labels.items()}
    summary["negative_steps"] = summary["steps"] - summary["positive_steps"]
    summary["rollouts"] += int(rejects["rollouts_used"].sum() or 0)
    summary["tokens"] += int(rejects["tokens_generated"].sum() or 0)
    summary["rejects"] = rejects.height
    summary["rejects_by_reason"] = by_reason
    return summary


def _print_run_summary(out: Path, result: dict[str, Any], wall: float) -> None:
    summary = run_summary(out, result["run_id"], result["version"])
    table = Table(title=f"run {result['run_id']} -> version {result['version']}", show_header=False)
    rows = [
        ("dataset", str(out.resolve())),
        ("version", f"{result['version']}" + ("" if result["created"] else " (nothing new: already committed)")),
        ("problems", str(result["problems"])),
        ("shards", f"{result['shards']} ({result['shards_skipped']} resumed from staging)"),
        ("labelled solutions", str(summary["solutions"])),
        ("steps", str(summary["steps"])),
        ("label balance", f"{summary['positive_steps']} good / {summary['negative_steps']} bad"
                          f" ({100 * summary['positive_steps'] / max(summary['steps'], 1):.1f}% good)"),
        ("rejects", ", ".join(f"{k}: {v}" for k, v in summary["rejects_by_reason"].items()) or "0"),
        ("rollouts", str(summary["rollouts"])),
        ("tokens generated", str(summary["tokens"])),
        ("wall time", f"{wall:.1f} s"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    console.print(f"inspect it with: steplabel inspect {out}")


@app.command()
def inspect(
    directory: Annotated[Path, typer.Argument(help="dataset directory written by `steplabel run`")],
    version: Annotated[Optional[str], typer.Option("--version", "-v", help="e.g. v3; default: latest")] = None,
    show: Annotated[int, typer.Option("--show", help="print K labelled solutions step by step")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object")] = False,
) -> None:
    """Show the committed versions and the summary of one (the latest by default)."""
    from storage.store import ShardStore, StoreError

    if not directory.is_dir():
        _fail(f"{directory}: no such directory")
    store = ShardStore(directory)
    try:
        summary = store.summary(version)
    except StoreError as error:
        _fail(str(error))
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    if summary["version"] is None:
        _fail(f"{directory}: no committed version yet (write one with `steplabel run --out {directory}`)", code=1)
    versions = Table(title=f"versions of {directory}")
    for column in ("version", "created", "solutions", "steps", "rejects", "runs"):
        versions.add_column(column)
    for name in store.versions():
        manifest = store.manifest(name)
        stats = manifest.stats
        versions.add_row(name, str(manifest.created_at)[:19], str(stats["solutions"]), str(stats["steps"]),
                         str(stats["rejects"]), ", ".join(manifest.run_ids))
    console.print(versions)
    details = Table(title=f"summary of {summary['version']}", show_header=False)
    for key in ("solutions", "steps", "positive_steps", "negative_steps", "rejects", "rollouts", "tokens"):
        details.add_row(key, str(summary[key]))
    console.print(details)
    if show:
        from steplabel.render import render_solutions

        render_solutions(console, store.scan("step_labels", summary["version"]).head(show).collect())


@app.command()
def grade(
    file: Annotated[Path, typer.Argument(help="JSONL with `response` and `reference` per line")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="write one verdict per line here")] = None,
    timeout: Annotated[float, typer.Option(help="seconds per Math-Verify call")] = 5.0,
) -> None:
    """Extract each response's final answer and grade it against the reference."""
    from rollouts.grading import Grader
    from steplabel.grade_file import grade_lines

    if not file.is_file():
        _fail(f"{file}: no such file")
    with Grader(timeout_s=timeout) as grader, file.open(encoding="utf-8") as handle:
        sink = out.open("w", encoding="utf-8") if out else sys.stdout
        try:
            totals = grade_lines(handle, grader, sink, source=str(file))
        finally:
            if out:
                sink.close()
    err_console.print(
        f"{totals['lines']} lines: {totals['correct']} correct, {totals['incorrect']} incorrect, "
        f"{totals['errors']} unreadable; by layer: {json.dumps(totals['layers'], sort_keys=True)}",
        highlight=False,
    )


if __name__ == "__main__":
    app()
