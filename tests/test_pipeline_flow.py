"""End-to-end: the real Prefect flow and the CLI on a scripted engine (one shared Prefect harness)."""

from __future__ import annotations

import functools
import json
import re
import shutil
import threading
import time

import pytest
from typer.testing import CliRunner

import steplabel.labelling.shard
from steplabel.flows import resources
from steplabel.flows.config import RunConfig, parse_config
from steplabel.flows.pipeline import label_shard_task, pipeline_flow, run_id_for, verify_shard_task
from steplabel.rollouts.builtin_problems import generate_problems
from steplabel.rollouts.engines.base import GenerationRequest
from steplabel.cli.main import app
from steplabel.storage.store import ShardStore
from tests.scripted_engine import ScriptedEngine

pytestmark = pytest.mark.flow


ANSWERS = {p.question: p.answer for p in generate_problems(5)}


def arithmetic_script(request: GenerationRequest, index: int) -> str:
    """Solves the built-in problems right on even samples and off by one on odd ones."""
    question = request.prompt.split("Question:")[-1]
    answer = ANSWERS.get(question.split("\n")[0].strip(), 0) + index % 2
    if re.search(r"^Step \d+:", question, flags=re.MULTILINE):
        return f"Step 9: so it is {answer}.\nThe answer is {answer}."
    return f"Step 1: add them up.\nStep 2: that gives {answer}.\nThe answer is {answer}."


@pytest.fixture
def scripted(monkeypatch):
    engine = ScriptedEngine(arithmetic_script)
    monkeypatch.setattr(resources, "build_engine", lambda config: engine)
    return engine


CONFIG = parse_config(
    {
        "source": {"kind": "builtin", "num_problems": 5},
        "sampling": {"num_solutions": 2},
        "labeler": {"name": "math_shepherd", "k": 2},
        "shard_size": 2,
    }
)


# Crash tests count the shards done before the crash: one shard at a time makes that count exact.
ONE_AT_A_TIME = CONFIG.model_copy(update={"orchestration": parse_config(
    {"orchestration": {"max_shards_in_flight": 1}}).orchestration})


def run(config: RunConfig, out) -> dict:
    return pipeline_flow(config=config.model_dump(mode="json"), out=str(out), run_id=run_id_for(config))


def test_flow_commits_a_version_and_rerun_adds_nothing(prefect_harness, scripted, tmp_path):
    result = run(CONFIG, tmp_path)
    assert result["version"] == "v0001" and result["created"] and result["shards"] == 3
    store = ShardStore(tmp_path)
    labels = store.read("step_labels")
    assert labels.height + store.read("rejects").height == 5 * 2
    assert labels["solution_id"].n_unique() == labels.height
    again = run(CONFIG, tmp_path)
    assert again["created"] is False and again["version"] == "v0001"
    assert store.versions() == ["v0001"] and store.read("step_labels").height == labels.height


def test_rerun_is_served_from_prefect_cache_with_json_results(prefect_harness, scripted, tmp_path, monkeypatch):
    first = run(CONFIG, tmp_path)
    calls = len(scripted.calls)
    records = sorted((tmp_path / "prefect-results").iterdir())
    assert [r.name.split("-")[0] for r in records].count("label") == first["shards"]
    labelled = [r for r in records if r.name.startswith("label")]
    reports = [json.loads(json.loads(r.read_text())["result"]) for r in labelled]
    assert all(rep["shard_id"] in r.name and "rollouts" in rep for rep, r in zip(reports, labelled, strict=True))
    assert sorted(rep["problems"] for rep in reports) == [1, 2, 2]  # 5 problems, shard_size 2
    for cached_task in (label_shard_task, verify_shard_task):

        @functools.wraps(cached_task.fn)  # keeps the signature Prefect binds parameters with
        def must_not_run(*args, **kwargs):
            raise AssertionError("a cached shard task ran")

        monkeypatch.setattr(cached_task, "fn", must_not_run)
    again = run(CONFIG, tmp_path)
    assert len(scripted.calls) == calls
    assert again["shards_skipped"] == first["shards"] and again["version"] == "v0001" and not again["created"]


def test_cache_is_ignored_when_the_dataset_lost_the_shards(prefect_harness, scripted, tmp_path):
    """A deleted dataset must be rebuilt, not "skipped" from stale cache records."""
    run(CONFIG, tmp_path)
    rows = ShardStore(tmp_path).read("step_labels").height
    for child in tmp_path.iterdir():
        if child.name != "prefect-results":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    calls = len(scripted.calls)
    rebuilt = run(CONFIG, tmp_path)
    assert len(scripted.calls) > calls and rebuilt["shards_skipped"] == 0 and rebuilt["created"]
    assert ShardStore(tmp_path).read("step_labels").height == rows


def test_crash_mid_run_resumes_to_the_same_rows(prefect_harness, scripted, tmp_path, monkeypatch):
    reference = run(CONFIG, tmp_path / "uninterrupted")
    assert reference["created"]
    real_label_shard = steplabel.labelling.shard.label_shard
    calls = {"n": 0}

    def crash_on_second_shard(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real_label_shard(*args, **kwargs)

    monkeypatch.setattr("steplabel.flows.pipeline.label_shard", crash_on_second_shard)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(ONE_AT_A_TIME, tmp_path / "crashy")
    crashy = ShardStore(tmp_path / "crashy")
    assert crashy.versions() == []  # nothing half-committed is visible
    monkeypatch.setattr("steplabel.flows.pipeline.label_shard", real_label_shard)
    resumed = run(ONE_AT_A_TIME, tmp_path / "crashy")
    assert resumed["shards_skipped"] == 1 and resumed["version"] == "v0001"
    columns = ["solution_id", "completions", "labels", "mc_scores", "first_error"]
    expected = ShardStore(tmp_path / "uninterrupted").read("step_labels").select(columns).sort("solution_id")
    assert crashy.read("step_labels").select(columns).sort("solution_id").equals(expected)


def test_bad_records_end_in_rejects_with_where(prefect_harness, scripted, tmp_path):
    source = tmp_path / "problems.jsonl"
    source.write_text(
        '{"question": "Ann has 2 apples and buys 3. How many?", "answer": "#### 5"}\n'
        "{not json\n"
        '{"question": "", "answer": "3"}\n'
        '{"question": "What is 1 + 1?"}\n'
    )
    config = parse_config({"source": {"kind": "file", "path": str(source)}, "sampling": {"num_solutions": 1},
                           "labeler": {"name": "math_shepherd", "k": 1}})
    result = run(config, tmp_path / "data")
    rejects = ShardStore(tmp_path / "data").read("rejects").filter(stage="source").sort("detail")
    assert result["problems"] == 1
    assert rejects["reason"].to_list() == ["bad_input"] * 3
    details = rejects["detail"].to_list()
    assert any(f"{source}:2: not valid JSON" in d for d in details)
    assert any(f"{source}:3: field 'question' is missing or empty" in d for d in details)
    assert any(f"{source}:4: field 'answer' is missing or empty" in d for d in details)


def test_cli_run_inspect_and_show(prefect_harness, scripted, tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(json.dumps(CONFIG.model_dump(mode="json")))
    runner = CliRunner()
    ran = runner.invoke(app, ["run", "--config", str(config_file), "--out", str(tmp_path / "d")])
    assert ran.exit_code == 0, ran.output
    assert "labelled solutions" in ran.output and "wall time" in ran.output
    shown = runner.invoke(app, ["inspect", str(tmp_path / "d"), "--json"])
    summary = json.loads(shown.stdout)
    for key in ("version", "versions", "solutions", "steps", "positive_steps", "negative_steps", "rejects", "rollouts", "tokens"):
        assert key in summary
    labels = ShardStore(tmp_path / "d").read("step_labels")
    assert summary["solutions"] == labels.height
    assert summary["steps"] == int(labels["labels"].list.len().sum())
    assert summary["positive_steps"] + summary["negative_steps"] == summary["steps"]
    assert summary["rollouts"] == int(labels["rollouts_used"].sum())
    listing = runner.invoke(app, ["inspect", str(tmp_path / "d"), "--show", "2"])
    assert listing.exit_code == 0 and listing.output.count("mc=") >= 2
    assert summary["positive_steps"] > 0 and summary["negative_steps"] > 0


def test_cli_resume_by_run_id_uses_the_recorded_config(prefect_harness, scripted, tmp_path, monkeypatch):
    real_label_shard = steplabel.labelling.shard.label_shard

    def crash_on_second_shard(*args, **kwargs):
        if args[0].shard_id == plan_shards_of(CONFIG)[1]:
            raise RuntimeError("simulated crash")
        return real_label_shard(*args, **kwargs)

    monkeypatch.setattr("steplabel.flows.pipeline.label_shard", crash_on_second_shard)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(ONE_AT_A_TIME, tmp_path)
    monkeypatch.setattr("steplabel.flows.pipeline.label_shard", real_label_shard)
    runner = CliRunner()
    run_id = run_id_for(CONFIG)
    missing = runner.invoke(app, ["run", "--out", str(tmp_path), "--resume", "run-nope"])
    assert missing.exit_code == 2 and f"interrupted runs: {run_id}" in missing.output
    resumed = runner.invoke(app, ["run", "--out", str(tmp_path), "--resume", run_id])
    assert resumed.exit_code == 0, resumed.output
    assert "1 already done: cached or staged" in resumed.output
    store = ShardStore(tmp_path)
    assert store.manifest().run_ids == [run_id] and store.manifest().config_hash == CONFIG.hash()
    again = runner.invoke(app, ["run", "--out", str(tmp_path), "--resume", run_id])
    assert again.exit_code == 1 and "already committed" in again.output


def plan_shards_of(config: RunConfig) -> list[str]:
    from steplabel.labelling.shard import plan_shards
    from steplabel.rollouts.sources import load_problems

    problems, _ = load_problems(config.source)
    return [plan.shard_id for plan in plan_shards(problems, config.shard_size, config.hash())]


def test_source_rejects_of_every_run_are_kept(prefect_harness, scripted, tmp_path):
    totals = []
    for name in ("first", "second"):
        source = tmp_path / f"{name}.jsonl"
        source.write_text(f'{{"question": "{name}: Ann has 2 apples and buys 3. How many?", "answer": "5"}}\n{{broken\n')
        config = parse_config({"source": {"kind": "file", "path": str(source)}, "sampling": {"num_solutions": 1},
                               "labeler": {"name": "math_shepherd", "k": 1}})
        run(config, tmp_path / "data")
        totals.append(ShardStore(tmp_path / "data").read("rejects").filter(stage="source").height)
    assert totals == [1, 2]  # the second run's bad record is not mistaken for the first run's


def test_shards_in_flight_are_bounded_by_the_setting_and_change_no_label(prefect_harness, scripted, tmp_path, monkeypatch):
    real_label_shard = steplabel.labelling.shard.label_shard
    lock, now, peak = threading.Lock(), [0], []

    def counting(*args, **kwargs):
        with lock:
            now[0] += 1
            peak.append(now[0])
        try:
            time.sleep(0.3)  # long enough for the next shard to start if the flow lets it
            return real_label_shard(*args, **kwargs)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr("steplabel.flows.pipeline.label_shard", counting)
    run(CONFIG, tmp_path / "two")  # default: 2 in flight with the thread runner
    assert max(peak) == 2
    peak.clear()
    run(ONE_AT_A_TIME, tmp_path / "one")
    assert max(peak) == 1
    columns = ["solution_id", "completions", "labels", "mc_scores", "tool_verdicts"]
    one = ShardStore(tmp_path / "one").read("step_labels").select(columns).sort("solution_id")
    assert ShardStore(tmp_path / "two").read("step_labels").select(columns).sort("solution_id").equals(one)
