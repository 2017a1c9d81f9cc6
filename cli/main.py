"""The ``steplabel`` command line: run, inspect, grade."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from steplabel.flows.config import ConfigError, load_config, parse_config
from steplabel.cli.common import console, err_console, fail
from steplabel.cli.export import export_command, publish_command
from steplabel.cli.inspect_cmd import inspect_command
from steplabel.cli.report_cmd import report_command
from steplabel.cli.serve import serve_command

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Process-supervision (step-label) data for PRMs.")

DEFAULT_OUT = "steplabel-data"


def _prefect_defaults() -> None:
    """No server needed: Prefect's ephemeral mode, without telemetry (it fails with no network)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML run config; default: the embedded quick-start")] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="dataset directory or object-store URL (s3://...)")] = DEFAULT_OUT,
    resume: Annotated[Optional[str], typer.Option("--resume", help="continue an interrupted run by its id, with its recorded config")] = None,
) -> None:
    """Run the whole pipeline and commit a new version of the dataset at OUT."""
    try:
        run_config = _resumed_config(out, resume) if resume else load_config(config)
        if resume and config and load_config(config).hash() != run_config.hash():
            fail(f"--resume {resume}: {config} is not the config this run was started with; drop --config")
    except ConfigError as error:
        fail(str(error))
    _prefect_defaults()
    from steplabel.flows.pipeline import flow_for, run_id_for
    from steplabel.cli.progress_view import RunProgress

    started = time.monotonic()
    run_id = resume or run_id_for(run_config)
    console.print(f"steplabel run [bold]{run_id}[/] -> {_where(out)}  (config hash {run_config.hash()[:12]})")
    from steplabel.rollouts.engines.base import EngineError
    from steplabel.storage.store import StoreError

    try:
        with RunProgress(console):
            result = flow_for(run_config)(config=run_config.model_dump(mode="json"), out=str(out), run_id=run_id)
    except (OSError, ValueError, EngineError, StoreError) as error:
        fail(f"run {run_id} stopped: {type(error).__name__}: {error}\n"
             f"finished shards are staged; fix the cause and rerun the same command to resume")
    wall = time.monotonic() - started
    _print_run_summary(out, result, wall)


def _nan_to_none(value: Any) -> Any:
    """An empty subset gives NaN metrics; JSON has no NaN, so they are written as null."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


def _resumed_config(out: str, run_id: str):
    """The config recorded when ``run_id`` started; a clear error when there is nothing to resume."""
    from steplabel.storage.store import ShardStore

    store = ShardStore(out)
    recorded = store.staged_run_config(run_id)
    if recorded is not None:
        return parse_config(recorded, origin=f"{out}/staging/{run_id}/run.json")
    if run_id in store.committed_run_ids():
        fail(f"--resume {run_id}: that run is already committed in {out} (see `steplabel inspect {out}`)", code=1)
    staged = ", ".join(store.staged_runs()) or "none"
    fail(f"--resume {run_id}: no interrupted run with that id in {out} (interrupted runs: {staged})")


def _where(out: str) -> str:
    return out if "://" in out else str(Path(out).resolve())


def run_summary(out: str, run_id: str, version: str) -> dict[str, Any]:
    """Counts of what one run contributed to a version (a version may hold several runs)."""
    import polars as pl

    from steplabel.storage.store import ShardStore

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
            verified_steps=pl.col("tool_verdicts").list.eval(pl.element() == "verified").list.sum().sum(),
            refuted_steps=pl.col("tool_verdicts").list.eval(pl.element() == "refuted").list.sum().sum(),
            refuted_solutions=(pl.col("tool_first_error") >= 0).sum(),
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
    judged_out = rejects.filter(pl.col("stage") == "judge").height
    consensus_kept = store.scan("step_labels", version).filter(mine & pl.col("consensus")).select(pl.len()).collect().item()
    summary["judge_retention"] = consensus_kept / (consensus_kept + judged_out) if consensus_kept + judged_out else None
    return summary


def _print_run_summary(out: str, result: dict[str, Any], wall: float) -> None:
    summary = run_summary(out, result["run_id"], result["version"])
    table = Table(title=f"run {result['run_id']} -> version {result['version']}", show_header=False)
    rows = [
        ("dataset", _where(out)),
        ("version", f"{result['version']}" + ("" if result["created"] else " (nothing new: already committed)")),
        ("problems", str(result["problems"])),
        ("shards", f"{result['shards']} ({result['shards_skipped']} already done: cached or staged)"),
        ("labelled solutions", str(summary["solutions"])),
        ("steps", str(summary["steps"])),
        ("label balance", f"{summary['positive_steps']} good / {summary['negative_steps']} bad"
                          f" ({100 * summary['positive_steps'] / max(summary['steps'], 1):.1f}% good)"),
        ("rejects", ", ".join(f"{k}: {v}" for k, v in summary["rejects_by_reason"].items()) or "0"),
        ("tool verification", f"{summary['verified_steps']} steps verified, {summary['refuted_steps']} refuted "
                              f"(in {summary['refuted_solutions']} solutions), the rest unknown"),
        ("judge retention", "judge off" if summary["judge_retention"] is None
                            else f"{100 * summary['judge_retention']:.1f}% kept by consensus"),
        ("rollouts", str(summary["rollouts"])),
        ("tokens generated", str(summary["tokens"])),
        ("wall time", f"{wall:.1f} s"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    console.print(f"inspect it with: steplabel inspect {out}")


@app.command()
def grade(
    file: Annotated[Path, typer.Argument(help="JSONL with `response` and `reference` per line")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="write one verdict per line here")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds per Math-Verify call")] = 5.0,
) -> None:
    """Extract each response's final answer and grade it against the reference."""
    from steplabel.rollouts.grading import Grader
    from steplabel.rollouts.grade_file import grade_lines

    if not file.is_file():
        fail(f"{file}: no such file")
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


@app.command()
def evaluate(
    benchmark: Annotated[list[Path], typer.Option("--benchmark", "-b", help="ProcessBench-format file (JSON list or JSONL); repeatable")],
    method: Annotated[str, typer.Option("--method", "-m", help="math_shepherd | omegaprm | scan | rpe | judge | sympy | hybrid")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="run config for the engine and labeler settings")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object: per file and overall metrics")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="write one prediction per record (id, label, predicted)")] = None,
) -> None:
    """Predict each record's first error with METHOD and score it the ProcessBench way (acc_err, acc_cor, F1)."""
    from steplabel.labelling.evaluate import (
        BenchmarkError,
        load_benchmark,
        predict_first_errors,
        processbench_metrics,
    )

    try:
        run_config = load_config(config)
        files = {str(path): load_benchmark(path) for path in benchmark}
    except (ConfigError, BenchmarkError, OSError) as error:
        fail(str(error))
    from steplabel.flows import resources
    from steplabel.labelling.evaluate import methods

    if method not in methods():
        fail(f"--method {method!r}: choose one of {', '.join(methods())}")
    with resources.held():  # the engine and grader close when evaluation ends
        engine_config = (run_config.judge_engine if method == "judge" else None) or run_config.completer_engine
        engine = None if method == "sympy" else resources.engine_for(engine_config)
        grader = resources.grader_for(run_config.grading)
        report: dict[str, Any] = {"method": method, "files": {}}
        all_labels: list[int] = []
        all_predictions: list[int] = []
        sink = out.open("w", encoding="utf-8") if out else None
        try:
            for name, records in files.items():
                try:
                    predictions = predict_first_errors(records, method, engine, grader, run_config)
                except (ValueError, RuntimeError) as error:
                    fail(f"{name}: {error}")
                labels = [int(r["label"]) for r in records]
                report["files"][name] = processbench_metrics(labels, predictions)
                all_labels += labels
                all_predictions += predictions
                for index, (record, predicted) in enumerate(zip(records, predictions, strict=True)):
                    if sink:
                        sink.write(json.dumps({"id": record.get("id", f"{name}:{index}"), "label": record["label"], "predicted": predicted}) + "\n")
        finally:
            if sink:
                sink.close()
    report["overall"] = processbench_metrics(all_labels, all_predictions)
    if as_json:
        sys.stdout.write(json.dumps(_nan_to_none(report)) + "\n")
        return
    table = Table(title=f"ProcessBench-style evaluation of {method}")
    for column in ("file", "n", "acc_err", "acc_cor", "F1"):
        table.add_column(column)
    for name, metrics in [*report["files"].items(), ("overall", report["overall"])]:
        table.add_row(name, str(metrics["n"]), f"{100 * metrics['acc_err']:.1f}", f"{100 * metrics['acc_cor']:.1f}", f"{100 * metrics['f1']:.1f}")
    console.print(table)


app.command("inspect")(inspect_command)
app.command("serve")(serve_command)
app.command("report")(report_command)
app.command("export")(export_command)
app.command("publish")(publish_command)

if __name__ == "__main__":
    app()
