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
from steplabel.cli.doctor import doctor_command
from steplabel.cli.export import export_command, publish_command
from steplabel.cli.inspect_cmd import inspect_command
from steplabel.cli.report_cmd import report_command
from steplabel.cli.sandbox_exec import sandbox_exec_command
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
    from steplabel.storage.store import RunLockedError, StoreError

    try:
        with RunProgress(console):
            result = flow_for(run_config)(config=run_config.model_dump(mode="json"), out=str(out), run_id=run_id)
    except RunLockedError as error:
        fail(str(error), code=1)
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


def _print_run_summary(out: str, result: dict[str, Any], wall: float) -> None:
    from steplabel.storage.inspection import version_stats
    from steplabel.storage.store import ShardStore

    stats = version_stats(ShardStore(out), result["version"], run_id=result["run_id"])  # what this run added
    balance, verification, judge = stats["label_balance"], stats["verification"], stats["judge_agreement"]
    rejects = [f"{stage}/{reason}: {n}" for stage, reasons in stats["retention"]["rejected"].items()
               for reason, n in reasons.items()]
    table = Table(title=f"run {result['run_id']} -> version {result['version']}", show_header=False)
    rows = [
        ("dataset", _where(out)),
        ("version", f"{result['version']}" + ("" if result["created"] else " (nothing new: already committed)")),
        ("problems", str(result["problems"])),
        ("shards", f"{result['shards']} ({result['shards_skipped']} already done: cached or staged)"),
        ("labelled solutions", str(stats["solutions"])),
        ("steps", str(stats["steps"])),
        ("label balance", f"{balance['positive']} good / {balance['negative']} bad"
                          f" ({100 * (balance['positive_fraction'] or 0):.1f}% good)"),
        ("final answers", "none graded" if stats["answers"]["accuracy"] is None
                          else f"{stats['answers']['correct']} of {stats['answers']['graded']} correct"),
        ("rejects", ", ".join(rejects) or "0"),
        ("tool verification", f"{verification['verified']} steps verified, {verification['refuted']} refuted "
                              f"(in {verification['refuted_solutions']} solutions), the rest unknown"),
        ("judge retention", "judge off" if judge["consensus_retention"] is None
                            else f"{100 * judge['consensus_retention']:.1f}% kept by consensus"),
        ("rollouts", str(stats["cost"]["rollouts"])),
        ("tokens generated", str(stats["cost"]["tokens"])),
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
    with Grader(timeout_s=timeout) as grader, file.open("rb") as handle:  # bytes: a non-UTF-8 line is one error
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
        evaluate_files,
        load_benchmark,
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
        sink = out.open("w", encoding="utf-8") if out else None
        try:
            report = evaluate_files(files, method, engine, grader, run_config, sink)
        except ValueError as error:
            fail(str(error))
        finally:
            if sink:
                sink.close()
    if as_json:
        sys.stdout.write(json.dumps(_nan_to_none(report)) + "\n")
        return
    table = Table(title=f"ProcessBench-style evaluation of {method}")
    for column in ("file", "n", "dropped", "acc_err", "acc_cor", "F1"):
        table.add_column(column)
    rows = [*report["files"].items(), ("overall (mean of files)", report["overall"]), ("pooled", report["pooled"])]
    for name, metrics in rows:
        table.add_row(name, str(metrics["n"]), str(metrics["n_dropped"]), f"{100 * metrics['acc_err']:.1f}",
                      f"{100 * metrics['acc_cor']:.1f}", f"{100 * metrics['f1']:.1f}")
    console.print(table)


app.command("inspect")(inspect_command)
app.command("serve")(serve_command)
app.command("report")(report_command)
app.command("export")(export_command)
app.command("publish")(publish_command)
app.command("doctor")(doctor_command)
app.command("sandbox-exec")(sandbox_exec_command)

if __name__ == "__main__":
    app()
