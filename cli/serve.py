"""``steplabel serve``: run the pipeline on a cron schedule from this machine (Prefect ``flow.serve``).

Registered in :mod:`steplabel.cli.main` with ``app.command("serve")(serve_command)``. ``serve`` is a long-running
process: it registers a deployment with the Prefect API and starts each scheduled run in a subprocess.
Schedules need a real API (``prefect server start`` and ``PREFECT_API_URL``, or Prefect Cloud): Prefect's
ephemeral mode would forget them when the process ends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from steplabel.flows.config import ConfigError, RunConfig, load_config
from steplabel.cli.common import fail


def check_cron(expression: str) -> str:
    """Return ``expression`` if Prefect's own cron schedule accepts it as 5 fields and it ever fires, else raise
    ``ValueError`` with one line (``0 2 30 2 *``, February 30, is valid cron syntax that never runs)."""
    from prefect.server.schemas.schedules import CronSchedule
    from prefect.utilities.asyncutils import run_coro_as_sync
    from pydantic import ValidationError

    text = " ".join(expression.split())
    if len(text.split(" ")) != 5:
        raise ValueError(f"cron {expression!r}: expected 5 fields (minute hour day month weekday), e.g. '0 2 * * *'")
    try:
        schedule = CronSchedule(cron=text)
    except ValidationError:
        raise ValueError(f"cron {expression!r}: not a valid cron schedule") from None
    try:
        run_coro_as_sync(schedule.get_dates(1))
    except Exception:  # croniter's CroniterBadDateError: no date matches
        raise ValueError(f"cron {expression!r}: this schedule never fires") from None
    return schedule.cron


def _dataset_root(out: str) -> str:
    """URLs (s3://, gs://, file://) are kept as given; plain paths are made absolute, because scheduled
    runs start in a subprocess whose working directory is not necessarily this one."""
    return out if "://" in out else str(Path(out).expanduser().resolve())


def deployment_name(config: RunConfig) -> str:
    return f"{config.name}-{config.hash()[:8]}"


def serve_command(
    cron: Annotated[str, typer.Option("--cron", help="5-field cron schedule, e.g. '0 2 * * *' (02:00 daily)")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML run config; default: the embedded quick-start")] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="dataset root: a directory, or an object-store URL such as s3://bucket/prefix")] = "steplabel-data",
    name: Annotated[Optional[str], typer.Option("--name", help="deployment name; default: <config name>-<config hash>")] = None,
    timezone: Annotated[Optional[str], typer.Option("--timezone", help="IANA time zone of the cron schedule (default UTC)")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="most flow runs this process runs at once")] = 1,
) -> None:
    """Serve the pipeline on a cron schedule. Runs are named by the config, so a run commits only the
    problems not committed yet: point the config at a source that grows (or change its seed) to get new data.

    Needs a Prefect API (`prefect server start` + PREFECT_API_URL, or Prefect Cloud). Stop with Ctrl-C.
    """
    try:
        run_config = load_config(config)
    except ConfigError as error:
        fail(str(error))
    try:
        cron_text = check_cron(cron)
    except ValueError as error:
        fail(str(error))
    if timezone is not None:
        try:
            import zoneinfo

            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            fail(f"--timezone {timezone!r}: not an IANA time zone name (e.g. 'UTC', 'Europe/Paris')")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    from steplabel.flows.pipeline import pipeline_flow, run_id_for

    parameters: dict[str, Any] = {
        "config": run_config.model_dump(mode="json"),
        "out": _dataset_root(out),
        "run_id": run_id_for(run_config),
    }
    schedule_kwargs: dict[str, Any]
    if timezone is None:
        schedule_kwargs = {"cron": cron_text}
    else:
        from prefect.schedules import Cron

        schedule_kwargs = {"schedules": [Cron(cron_text, timezone=timezone)]}
    pipeline_flow.serve(
        name=name or deployment_name(run_config),
        parameters=parameters,
        description=f"steplabel pipeline, config {run_config.name!r} (hash {run_config.hash()[:12]}) -> {parameters['out']}",
        tags=["steplabel"],
        limit=limit,
        **schedule_kwargs,
    )
