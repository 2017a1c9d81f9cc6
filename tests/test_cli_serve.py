"""``steplabel serve``: validation and the call to ``pipeline_flow.serve`` (never a real serve)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from steplabel.flows.config import load_config
from steplabel.flows.pipeline import pipeline_flow, run_id_for
from steplabel.cli.serve import check_cron, deployment_name, serve_command

CONFIG = {
    "name": "nightly",
    "source": {"kind": "builtin", "num_problems": 3},
    "sampling": {"num_solutions": 2},
    "labeler": {"name": "math_shepherd", "k": 2},
}


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("serve")(serve_command)  # as steplabel/cli.py registers it
    app.command("noop")(lambda: None)  # two commands: typer keeps "serve" as a subcommand
    return app


@pytest.fixture
def served(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    monkeypatch.setattr(pipeline_flow, "serve", lambda **kwargs: calls.append(kwargs))
    return calls


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(CONFIG))
    return path


def test_serve_calls_flow_serve_with_the_run_parameters(app, served, config_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", "--cron", "0 2 * * *", "--config", str(config_file), "--out", "data"])
    assert result.exit_code == 0, result.output
    (call,) = served
    config = load_config(config_file)
    assert call["cron"] == "0 2 * * *" and call["name"] == deployment_name(config) and call["limit"] == 1
    assert call["parameters"] == {
        "config": config.model_dump(mode="json"),
        "out": str(tmp_path / "data"),  # absolute: scheduled runs start elsewhere
        "run_id": run_id_for(config),
    }
    assert "steplabel" in call["tags"]


def test_serve_keeps_urls_and_takes_a_timezone(app, served, config_file):
    result = CliRunner().invoke(app, ["serve", "--cron", "30 3 * * 1", "-c", str(config_file), "-o", "s3://bucket/prm",
                                      "--name", "weekly", "--timezone", "Europe/Paris"])
    assert result.exit_code == 0, result.output
    (call,) = served
    assert call["name"] == "weekly" and call["parameters"]["out"] == "s3://bucket/prm" and "cron" not in call
    (schedule,) = call["schedules"]
    assert schedule.cron == "30 3 * * 1" and schedule.timezone == "Europe/Paris"


@pytest.mark.parametrize("cron", ["61 2 * * *", "0 2 * *", "every night", "0 2 30 2 *"])
def test_bad_cron_is_a_one_line_error(app, served, config_file, cron):
    result = CliRunner().invoke(app, ["serve", "--cron", cron, "--config", str(config_file)])
    assert result.exit_code == 2 and not served
    assert "cron" in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_bad_config_is_a_one_line_error(app, served, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling: {num_solutions: -1}\n")
    result = CliRunner().invoke(app, ["serve", "--cron", "0 2 * * *", "--config", str(bad)])
    assert result.exit_code == 2 and not served
    assert "error:" in result.output and len(result.output.strip().splitlines()) == 1, result.output
    missing = CliRunner().invoke(app, ["serve", "--cron", "0 2 * * *", "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and not served


def test_bad_timezone(app, served, config_file):
    result = CliRunner().invoke(app, ["serve", "--cron", "0 2 * * *", "-c", str(config_file), "--timezone", "Mars/Base"])
    assert result.exit_code == 2 and not served and "time zone" in result.output


def test_check_cron_agrees_with_prefects_schedule():
    from prefect.client.schemas.schedules import CronSchedule

    for expression in ("0 2 * * *", "*/15 * * * 1-5", "0 0 1 * *"):
        assert check_cron(expression) == CronSchedule(cron=expression).cron
    with pytest.raises(ValueError, match="5 fields"):
        check_cron("0 0 2 * * *")


def test_registered_in_the_real_cli():
    from steplabel.cli.main import app as real_app

    names = {c.name or c.callback.__name__ for c in real_app.registered_commands}
    assert {"run", "inspect", "report", "export", "publish", "grade", "evaluate", "serve"} <= names
    result = CliRunner().invoke(real_app, ["serve", "--help"])
    assert result.exit_code == 0 and "--cron" in result.output
