"""Inspection: exact statistics on a hand-built store, filters (SQL ``--where``), diffs, and the CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import polars as pl
import pyarrow as pa
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from steplabel.cli.inspect_cmd import inspect_command, verification_line
from steplabel.cli.report_cmd import report_command
from steplabel.cli.render import render_solutions
from steplabel.labelers.base import first_false
from steplabel.storage.inspection import version_stats
from steplabel.storage.selection import InspectionError, diff_versions, filter_rows, sample_rows
from steplabel.storage.schema import STEP_LABELS_SCHEMA
from steplabel.storage.store import ShardStore
from tests.factories import make_reject_rows, make_step_label_rows

# Rows of shard s0 (make_step_label_rows(6, steps_per_solution=3)), i = 0..5:
#   first_error  -1, 1, 2, -1, 1, 2        labels TTT, TFF, TTF, TTT, TFF, TTF  (12 good, 6 bad)
#   bad-step MC  i1: .25, 0   i2: .125   i4: .25, 0   i5: .125            (12 steps at 1.0)
#   rollouts 12 each, tokens 100 + i; plus 2 rejects (sampling/engine_error: 2 rollouts, 10 tokens each)
# Overrides below: judge_first_error and labeler per row.
JUDGE = [-1, 0, 2, None, None, -1]  # agree, earlier, agree, -, -, later (-1 = after every step)
LABELER = ["hard_mc", "hard_mc", "hard_mc", "omegaprm", "omegaprm", "omegaprm"]


def _with(table: pa.Table, name: str, values: list, type_: pa.DataType) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values, type=type_))


def build_store(root) -> ShardStore:
    """v0001: shard s0 (6 solutions, 2 rejects); v0002: + shard s1 (4 two-step solutions, 1 labeling reject)."""
    store = ShardStore(root)
    s0 = make_step_label_rows(6, shard_id="s0", steps_per_solution=3)
    s0 = _with(s0, "judge_first_error", JUDGE, pa.int32())
    s0 = _with(s0, "labeler", LABELER, pa.string())
    store.stage("r1", "s0", {"step_labels": s0, "rejects": make_reject_rows(2, shard_id="s0")})
    store.commit("r1", config={"labeler": "mixed"}, config_hash="h1", code_version="t")
    s1 = make_step_label_rows(4, shard_id="s1", steps_per_solution=2)
    rej = make_reject_rows(1, shard_id="s1", stage="labeling", reason="timeout")
    store.stage("r2", "s1", {"step_labels": s1, "rejects": rej})
    store.commit("r2", config={"labeler": "hard_mc"}, config_hash="h2", code_version="t")
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ShardStore:
    return build_store(tmp_path_factory.mktemp("inspect-store"))


# --------------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------------
def test_version_stats_exact_values(store):
    stats = version_stats(store, "v1")
    assert stats["version"] == "v0001"
    assert stats["solutions"] == 6 and stats["steps"] == 18
    assert stats["label_balance"] == {
        "positive": 12, "negative": 6, "unlabelled": 0, "steps": 18, "positive_fraction": 12 / 18,
    }
    assert stats["first_error"] == {-1: 2, 1: 2, 2: 2}
    mc = stats["mc_scores"]
    assert mc["counts"] == [2, 2, 2, 0, 0, 0, 0, 0, 0, 12]
    assert mc["bins"][0] == [0.0, 0.1] and mc["bins"][-1] == [0.9, 1.0]
    assert mc["total"] == 18 and mc["nulls"] == 0
    assert mc["mean"] == pytest.approx(12.75 / 18)
    assert stats["retention"] == {
        "sampled": 8, "labelled": 6, "rejected_total": 2,
        "rejected": {"sampling": {"engine_error": 2}}, "rejected_by_stage": {"sampling": 2},
        "retention": 0.75,
        "examples": [{"item_id": f"s0-rej{i}", "stage": "sampling", "reason": "engine_error",
                      "detail": f"test reject {i} in s0"} for i in range(2)],
    }
    assert stats["judge_agreement"] == {"judged": 4, "agree": 2, "judge_earlier": 1, "judge_later": 1,
                                        "fraction": 0.5, "consensus_kept": 0, "judged_out": 0,
                                        "consensus_retention": None}
    cost = stats["cost"]
    assert (cost["rollouts"], cost["tokens"]) == (76, 635)
    assert (cost["rollouts_rejected"], cost["tokens_rejected"]) == (4, 20)
    assert cost["rollouts_per_label"] == pytest.approx(76 / 18)
    assert cost["tokens_per_label"] == pytest.approx(635 / 18)
    # per labeler: labelled rows only (rejects carry no labeler), so a name of its own
    assert cost["by_labeler"]["hard_mc"]["rollouts_per_step"] == pytest.approx(36 / 9)
    assert "tokens_per_label" not in cost["by_labeler"]["hard_mc"]
    assert cost["by_labeler"]["omegaprm"]["tokens"] == 103 + 104 + 105
    assert stats["labelers"] == {"hard_mc": 3, "omegaprm": 3}
    json.dumps(stats)  # serialisable


def test_version_stats_answers_problems_steps_and_mc_by_step(store):
    """What a PRM researcher reads first, on v1: rows 0 and 3 (no error) are the correct answers;
    problems are rows (0, 1), (2, 3), (4, 5); step MC scores are in the table at the top of this file."""
    stats = version_stats(store, "v1")
    assert stats["answers"] == {"graded": 6, "correct": 2, "accuracy": pytest.approx(1 / 3), "ungraded": 0,
                                "by_grader_layer": {"exact": {"solutions": 6, "correct": 2}}}
    problems = stats["problems"]
    assert (problems["problems"], problems["solutions_per_problem"]) == (3, 2.0)
    assert problems["mean_pass_rate"] == pytest.approx(1 / 3)  # 1/2, 1/2, 0
    assert problems["pass_rate_histogram"] == {"0%": 1, "1-24%": 0, "25-49%": 0, "50-74%": 2, "75-99%": 0,
                                               "100%": 0}
    assert stats["steps_per_solution"] == {"histogram": {3: 6}, "mean": 3.0}
    by_step = stats["mc_by_step"]
    assert list(by_step) == [0, 1, 2]
    assert by_step[0] == {"steps": 6, "mc_mean": 1.0, "positive_fraction": 1.0}
    assert by_step[1]["mc_mean"] == pytest.approx((4 + 0.25 + 0.25) / 6)
    assert by_step[2]["mc_mean"] == pytest.approx((2 + 0.125 + 0.125) / 6)
    assert by_step[2]["positive_fraction"] == pytest.approx(2 / 6)
    assert stats["models"] == {"policy": ["policy-test"], "completer": ["completer-test"], "judge": []}
    assert version_stats(store)["steps_per_solution"]["histogram"] == {2: 4, 3: 6}


def test_version_stats_of_one_run(tmp_path):
    """``run_id`` restricts rows and rejects to one run: what ``steplabel run`` prints after a run."""
    store = ShardStore(tmp_path)
    store.stage("a", "s0", {"step_labels": make_step_label_rows(3, shard_id="s0", run_id="a"),
                            "rejects": make_reject_rows(1, shard_id="s0", run_id="a")})
    store.commit("a", config={}, config_hash="h", code_version="t")
    store.stage("b", "s1", {"step_labels": make_step_label_rows(2, shard_id="s1", run_id="b", steps_per_solution=2)})
    store.commit("b", config={}, config_hash="h", code_version="t")
    assert version_stats(store, run_id="a")["retention"]["rejected_total"] == 1
    mine = version_stats(store, run_id="b")
    assert (mine["run_id"], mine["solutions"], mine["steps"]) == ("b", 2, 4)
    assert mine["retention"]["rejected_total"] == 0 and mine["cost"]["tokens"] == 100 + 101
    assert version_stats(store)["solutions"] == 5


def test_version_stats_latest_orders_reject_stages_and_handles_no_judge(store):
    stats = version_stats(store)  # v0002
    assert stats["version"] == "v0002" and stats["solutions"] == 10 and stats["steps"] == 26
    assert list(stats["retention"]["rejected"]) == ["sampling", "labeling"]
    assert stats["retention"]["rejected"]["labeling"] == {"timeout": 1}
    assert stats["retention"]["retention"] == pytest.approx(10 / 13)
    # s1's rows have no judge: agreement is still over s0's 4 judged rows
    assert stats["judge_agreement"]["judged"] == 4
    assert sum(stats["first_error"].values()) == 10


def test_version_stats_without_any_judge(tmp_path):
    store = ShardStore(tmp_path)
    store.stage("r", "s", {"step_labels": make_step_label_rows(3, shard_id="s")})
    store.commit("r", config={}, config_hash="h", code_version="t")
    stats = version_stats(store)
    assert stats["judge_agreement"]["fraction"] is None and stats["judge_agreement"]["judged"] == 0
    assert stats["retention"]["rejected"] == {} and stats["retention"]["retention"] == 1.0


# --------------------------------------------------------------------------------------------------------
# filters
# --------------------------------------------------------------------------------------------------------
def _ids(lf: pl.LazyFrame) -> list[str]:
    return sorted(lf.collect()["solution_id"].to_list())


def test_filters(store):
    lf = store.scan("step_labels", "v1")
    assert _ids(filter_rows(lf, where="first_error = 1 AND NOT final_correct")) == ["s0-sol1", "s0-sol4"]
    assert _ids(filter_rows(lf, where="labeler IN ('omegaprm') AND judge_first_error IS NULL")) == [
        "s0-sol3", "s0-sol4"]
    assert _ids(filter_rows(lf, first_error=-1)) == ["s0-sol0", "s0-sol3"]
    assert _ids(filter_rows(lf, labeler="omegaprm")) == ["s0-sol3", "s0-sol4", "s0-sol5"]
    assert _ids(filter_rows(lf, disagree=True)) == ["s0-sol1", "s0-sol5"]
    assert _ids(filter_rows(lf, labeler="omegaprm", disagree=True)) == ["s0-sol5"]
    assert _ids(filter_rows(lf)) == [f"s0-sol{i}" for i in range(6)]


def test_sample_is_seeded_and_spans_problems(tmp_path):
    """20 solutions of 10 problems (2 each, adjacent): 10 samples take one solution from every problem,
    the same seed gives the same rows, and another seed another sample."""
    store = ShardStore(tmp_path)
    store.stage("r", "s", {"step_labels": make_step_label_rows(20, shard_id="s")})
    store.commit("r", config={}, config_hash="h", code_version="t")
    lf = store.scan()
    first = sample_rows(lf, 10, seed=1)
    assert first.height == 10 and first["problem_id"].n_unique() == 10
    assert first["solution_id"].to_list() == sample_rows(lf, 10, seed=1)["solution_id"].to_list()
    assert first["solution_id"].to_list() != sample_rows(lf, 10, seed=2)["solution_id"].to_list()
    assert first["solution_id"].to_list() != [f"s-sol{i}" for i in range(10)]  # not the first rows
    everything = sample_rows(lf, 50, seed=1)
    assert sorted(everything["solution_id"]) == sorted(f"s-sol{i}" for i in range(20))
    assert sample_rows(lf, 0).height == 0


def test_tool_disagree_filter(tmp_path):
    lf = verification_store(tmp_path).scan()
    # row 0: refuted step the labeler called good; row 1: the same (hybrid off); row 2: verified but bad;
    # row 3 (no labeler_labels: labels stand in) agrees; row 4 has no verdicts
    assert _ids(filter_rows(lf, tool_disagree=True)) == ["v-sol0", "v-sol1", "v-sol2"]
    assert _ids(filter_rows(lf, tool_disagree=True, where="first_error = 1")) == ["v-sol0", "v-sol2"]


@pytest.mark.parametrize(
    "where, message",
    [
        ("first_error = = 1", "not a valid SQL expression"),
        ("no_such_column > 1", "unknown column(s) no_such_column"),
        ("   ", "empty"),
    ],
)
def test_bad_where_raises_one_line(store, where, message):
    with pytest.raises(InspectionError, match=None) as info:
        filter_rows(store.scan("step_labels", "v1"), where=where)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_where_is_never_python(store, tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(InspectionError):
        filter_rows(store.scan(), where=f"__import__('os').system('touch {marker}')").collect()
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------
# diff
# --------------------------------------------------------------------------------------------------------
def test_diff_of_two_committed_versions(store):
    diff = diff_versions(store, "v1", "v2")
    assert (diff["from"], diff["to"]) == ("v0001", "v0002")
    assert diff["shards"] == {"added": ["s1"], "removed": [], "common": 1}
    sols = diff["solutions"]
    assert (sols["added"], sols["removed"], sols["changed"], sols["common"]) == (4, 0, 0, 6)
    assert sols["added_ids"] == [f"s1-sol{i}" for i in range(4)]
    assert diff["stats"]["solutions"] == {"from": 6, "to": 10, "delta": 4}
    assert diff["stats"]["rejects"]["delta"] == 1
    assert diff["config_changed"] is True
    back = diff_versions(store, "v2", "v1")
    assert back["shards"]["removed"] == ["s1"] and back["solutions"]["removed"] == 4


class _FakeStore:
    """Two in-memory versions (the real store only appends, so removals/relabels need a stand-in)."""

    def __init__(self, frames: dict[str, pl.DataFrame]):
        self.frames = frames

    def manifest(self, version):
        df = self.frames[version]
        steps = int(df["labels"].list.len().sum())
        positive = int(df["labels"].list.eval(pl.element().cast(pl.Int64)).list.sum().sum())
        return SimpleNamespace(
            version=version, shards={s: "r" for s in df["shard_id"].unique()}, config_hash="h",
            stats={"solutions": df.height, "steps": steps, "positive_steps": positive,
                   "negative_steps": steps - positive, "rejects": 0, "rollouts": 0, "tokens": 0,
                   "label_balance": positive / steps},
        )

    def scan(self, table, version):
        return self.frames[version].lazy()


def test_diff_of_a_run_that_re_adds_committed_solutions(tmp_path):
    """Re-added solutions become commit-stage rejects, so the diff shows +0 solutions and +2 rejects."""
    store = ShardStore(tmp_path)
    store.stage("a", "s0", {"step_labels": make_step_label_rows(4, shard_id="s0")})
    store.commit("a", config={}, config_hash="h", code_version="t")
    again = make_step_label_rows(2, shard_id="s0")  # the same solution ids, in a new shard
    store.stage("b", "s1", {"step_labels": again.set_column(2, "shard_id", pa.array(["s1"] * 2))})
    store.commit("b", config={}, config_hash="h", code_version="t")
    diff = diff_versions(store, "v1", "v2")
    sols = diff["solutions"]
    assert (sols["added"], sols["removed"], sols["common"], sols["duplicate_ids"]) == (0, 0, 4, 0)
    assert diff["stats"]["solutions"]["delta"] == 0 and diff["stats"]["rejects"]["delta"] == 2
    human = runner.invoke(_app(), ["inspect", store.root, "--diff", "v1:v2"])
    assert "+0 / -0, 0 relabelled (4 common)" in human.output and "0 -> 2 (+2)" in human.output


def test_diff_counts_rows_repeated_under_one_id():
    """A version written before commits deduplicated solutions may repeat an id: each extra row is added."""
    a = pl.from_arrow(make_step_label_rows(4, shard_id="s0"))
    b = pl.concat([a, a.head(2).with_columns(shard_id=pl.lit("s1"))])
    diff = diff_versions(_FakeStore({"v1": a, "v2": b}), "v1", "v2")
    sols = diff["solutions"]
    assert (sols["added"], sols["removed"], sols["common"], sols["duplicate_ids"]) == (2, 0, 4, 2)
    assert sols["added_ids"] == ["s0-sol0", "s0-sol1"] and diff["stats"]["solutions"]["delta"] == 2


def test_diff_finds_removed_and_relabelled_solutions():
    a = pl.from_arrow(make_step_label_rows(4, shard_id="a"))
    b = a.filter(pl.col("solution_id") != "a-sol3").with_columns(
        labels=pl.when(pl.col("solution_id") == "a-sol1").then(pl.lit([True, True, True])).otherwise("labels"),
        first_error=pl.when(pl.col("solution_id") == "a-sol1").then(-1).otherwise("first_error").cast(pl.Int32),
    )
    b = pl.concat([b, pl.from_arrow(make_step_label_rows(1, shard_id="b"))])
    diff = diff_versions(_FakeStore({"v1": a, "v2": b}), "v1", "v2")
    sols = diff["solutions"]
    assert sols["removed_ids"] == ["a-sol3"] and sols["added_ids"] == ["b-sol0"]
    assert sols["changed_ids"] == ["a-sol1"] and sols["common"] == 3
    assert diff["shards"]["added"] == ["b"] and diff["shards"]["removed"] == []
    assert diff["stats"]["solutions"]["delta"] == 0


# --------------------------------------------------------------------------------------------------------
# rendering and CLI
# --------------------------------------------------------------------------------------------------------
def test_render_shows_markup_literally_and_tolerates_short_lists():
    row = pl.from_arrow(make_step_label_rows(1)).with_columns(
        completions=pl.lit(["[bold red]not markup[/]", "two", "three"]),
        mc_scores=pl.lit([0.5], dtype=pl.List(pl.Float32)),
    )
    console = Console(record=True, width=120)
    render_solutions(console, row)
    text = console.export_text()
    assert "[bold red]not markup[/]" in text and "mc=  -  " in text


def test_render_shows_tool_verdicts_evidence_and_code_checks():
    check = {"step": 2, "verdict": "unknown", "evidence": "no python block in the model output", "code": None,
             "status": None, "exit_code": None, "stdout": None, "stderr": None, "wall_s": None}
    row = pl.from_arrow(make_step_label_rows(1)).with_columns(
        tool_verdicts=pl.lit(["verified", "refuted", "unknown"]),
        tool_evidence=pl.lit([None, "2 + 3 = 6 (left = 5, right = 6)", None], dtype=pl.List(pl.String)),
        tool_checks=pl.lit(json.dumps([check])),
    )
    console = Console(record=True, width=160)
    render_solutions(console, row)
    lines = console.export_text().splitlines()
    step0 = next(line for line in lines if "[0]" in line)
    step1 = next(line for line in lines if "[1]" in line)
    step2 = next(line for line in lines if "[2]" in line)
    assert "tool:ok" in step0 and "tool:REFUTED" in step1 and "tool:" not in step2
    assert any("refuted claim: 2 + 3 = 6 (left = 5, right = 6)" in line for line in lines)
    assert any("code check of step 2: unknown (sandbox not run): no python block" in line for line in lines)


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    app.command("inspect")(inspect_command)
    app.command("report")(report_command)
    return app


runner = CliRunner()


def test_cli_json_is_one_object_with_summary_and_stats(store):
    result = runner.invoke(_app(), ["inspect", store.root, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("version", "versions", "solutions", "steps", "positive_steps", "negative_steps", "rejects",
                "rollouts", "tokens"):
        assert key in data
    assert data["version"] == "v0002" and data["versions"] == ["v0001", "v0002"]
    assert data["stats"]["retention"]["sampled"] == 13
    assert "matched" not in data and "samples" not in data
    old = json.loads(runner.invoke(_app(), ["inspect", store.root, "--json", "-v", "1"]).stdout)
    assert old["version"] == "v0001" and old["stats"]["first_error"] == {"-1": 2, "1": 2, "2": 2}


def test_cli_json_with_filters_reports_matches_and_samples(store):
    args = ["inspect", store.root, "--json", "-v", "v1", "--first-error", "-1", "--show", "5"]
    data = json.loads(runner.invoke(_app(), args).stdout)
    assert data["matched"] == 2 and data["filters"] == {"first_error": -1}
    assert sorted(s["solution_id"] for s in data["samples"]) == ["s0-sol0", "s0-sol3"]
    assert data["sample_seed"] == 0 and data["stats_scope"] == "whole version"


def test_cli_human_output_and_show_with_filters(store):
    result = runner.invoke(_app(), ["inspect", store.root, "-v", "v1", "--show", "3", "--labeler", "omegaprm"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # rich wraps lines at the terminal width
    assert "versions of" in out and "v0002" in out and "h2" in out
    assert "label balance" in out and "█" in out and "MC score distribution" in out
    assert "judge vs MC" in out and "retention by stage" in out and "engine_error" in out
    assert "3 of 6 solutions match" in out and "the statistics above are of the whole version" in out
    assert "3 solutions from 2 problems (seed 0" in out  # omegaprm rows 3, 4, 5: problems p1 and p2
    assert "final answers" in out and "0.333 (2/6 correct)" in out and "mean pass rate 0.333" in out
    assert "mean MC score by step index" in out and "per-problem pass rate" in out and "grader layer" in out
    assert "rejected items (examples)" in out and "test reject 0 in s0" in out
    assert "s0-sol3" in out and "s0-sol5" in out and "s0-sol0" not in out


def test_cli_disagree_and_where(store):
    result = runner.invoke(_app(), ["inspect", store.root, "-v", "v1", "--disagree", "--show", "5",
                                    "--where", "first_error = 2"])
    assert result.exit_code == 0, result.output
    assert "1 of 6 solutions match" in result.output and "s0-sol5" in result.output
    assert "judge!" not in result.output  # the judge's -1 marks no step


@pytest.mark.parametrize(
    "args, message",
    [
        (["--where", "first_error = = 1"], "not a valid SQL expression"),
        (["--where", "nope = 1"], "unknown column"),
        (["--where", "labeler + 1 > 0"], "cannot be applied"),
        (["-v", "v9"], "not found"),
        (["--diff", "v1"], "exactly two versions"),
        (["--diff", "v1:v7"], "not found"),
    ],
)
def test_cli_errors_are_one_line_exit_2(store, args, message):
    result = runner.invoke(_app(), ["inspect", store.root, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_missing_directory(tmp_path):
    result = runner.invoke(_app(), ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such directory" in result.output


def test_cli_empty_store(tmp_path):
    for args in ([], ["--json"]):  # a folder with no dataset in it is an error, not an empty summary
        result = runner.invoke(_app(), ["inspect", str(tmp_path), *args])
        assert result.exit_code == 1 and "not a steplabel dataset" in result.output


def test_cli_diff_both_spellings(store):
    one = runner.invoke(_app(), ["inspect", store.root, "--diff", "v1:v2", "--json"])
    two = runner.invoke(_app(), ["inspect", store.root, "--diff", "v1", "--diff", "v2", "--json"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout) == json.loads(two.stdout)
    assert json.loads(one.stdout)["solutions"]["added"] == 4
    human = runner.invoke(_app(), ["inspect", store.root, "--diff", "v1:v2"])
    assert human.exit_code == 0 and "diff v0001 -> v0002" in human.output and "+4 / -0" in human.output


def test_cli_report_command(store, tmp_path):
    out = tmp_path / "sub" / "r.html"
    result = runner.invoke(_app(), ["report", store.root, "--out", str(out), "--samples", "3"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.read_text().count('class="sample"') == 3
    bad = runner.invoke(_app(), ["report", store.root, "--out", str(out), "-v", "v9"])
    assert bad.exit_code == 2 and "not found" in bad.output


def test_version_stats_tolerates_missing_mc_scores_and_labels(tmp_path):
    rows = make_step_label_rows(3, shard_id="s", steps_per_solution=3)  # first_error -1, 1, 2
    rows = _with(rows, "mc_scores", [None, [None, 0.5, 1.0], []], pa.list_(pa.float32()))
    rows = _with(rows, "labels", [[True, True, True], [True, None, False], [True, True, False]], pa.list_(pa.bool_()))
    store = ShardStore(tmp_path)
    store.stage("r", "s", {"step_labels": rows})
    store.commit("r", config={}, config_hash="h", code_version="t")
    stats = version_stats(store)
    assert stats["mc_scores"]["counts"] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert stats["mc_scores"]["nulls"] == 1 and stats["mc_scores"]["mean"] == pytest.approx(0.75)
    assert stats["label_balance"]["unlabelled"] == 1
    assert (stats["label_balance"]["positive"], stats["label_balance"]["negative"]) == (6, 2)
    result = runner.invoke(_app(), ["inspect", str(tmp_path), "--show", "3"])
    assert result.exit_code == 0, result.output
    assert "????" in result.output  # the null label


# --------------------------------------------------------------------------------------------------------
# tool verification
# --------------------------------------------------------------------------------------------------------
V, R, U = "verified", "refuted", "unknown"
CLAIM = "4 * 4 = 12 (left = 16, right = 12)"
# (labeler_labels, labels, tool_verdicts, tool_evidence) per row; mc_scores come from the factory
VERIFIED_ROWS = [
    ([True, True, True], [True, False, False], [V, R, U], [None, CLAIM, None]),  # hybrid made steps 1-2 bad
    ([True, True], [True, True], [U, R], [None, "2 + 2 = 5 (left = 4, right = 5)"]),  # hybrid off: good but refuted
    ([True, False], [True, False], [V, V], [None, None]),  # the labeler calls a verified step bad
    (None, [True, False, False], [U, R, U], [None, "x", None]),  # an older shard: no labeler_labels column
    ([True], [True], None, None),  # verification off: not counted
]


def verification_store(root) -> ShardStore:
    rows = make_step_label_rows(len(VERIFIED_ROWS), shard_id="v", steps_per_solution=1).to_pylist()
    for row, (own, labels, verdicts, evidence) in zip(rows, VERIFIED_ROWS, strict=True):
        row.update(labeler_labels=own, labels=labels, first_error=first_false(labels), tool_verdicts=verdicts,
                   tool_evidence=evidence,
                   completions=[f"step {j}" for j in range(len(labels))], mc_scores=[0.5] * len(labels))
    store = ShardStore(root)
    store.stage("r", "v", {"step_labels": pa.Table.from_pylist(rows, schema=STEP_LABELS_SCHEMA)})
    store.commit("r", config={}, config_hash="h", code_version="t")
    return store


def test_verification_stats_counts_verdicts_agreement_and_conflicts(tmp_path):
    v = version_stats(verification_store(tmp_path))["verification"]
    assert (v["solutions_checked"], v["steps_checked"]) == (4, 10)
    assert (v["verified"], v["refuted"], v["unknown"], v["refuted_solutions"]) == (3, 3, 4, 3)
    assert (v["good_but_refuted"], v["good_but_refuted_solutions"]) == (1, 1)  # row 1 only
    # decided steps: row0 V/good agree, R/good no; row1 R/good no; row2 V/good agree, V/bad no; row3 R/bad agree
    assert v["agreement"] == {"decisive": 6, "agree": 3, "fraction": 0.5}
    conflicts = v["conflicts"]
    assert (conflicts["refuted_but_labeler_good"], conflicts["refuted_but_labeler_good_solutions"]) == (2, 2)
    assert (conflicts["verified_but_labeler_bad"], conflicts["verified_but_labeler_bad_solutions"]) == (1, 1)
    assert conflicts["examples"] == [
        {"solution_id": "v-sol0", "step": 1, "mc": 0.5, "labeler_label": True, "label": False, "evidence": CLAIM},
        {"solution_id": "v-sol1", "step": 1, "mc": 0.5, "labeler_label": True, "label": True,
         "evidence": "2 + 2 = 5 (left = 4, right = 5)"},
    ]
    assert (v["relabelled_steps"], v["relabelled_solutions"]) == (2, 1)


def test_cli_shows_tool_verification_and_good_but_refuted(tmp_path):
    store = verification_store(tmp_path)
    data = json.loads(runner.invoke(_app(), ["inspect", store.root, "--json"]).stdout)
    assert data["good_but_refuted"] == 1 and data["stats"]["verification"]["refuted"] == 3
    result = runner.invoke(_app(), ["inspect", store.root, "--show", "1", "--tool-disagree",
                                    "--where", "solution_id = 'v-sol0'"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "1 of 5 solutions match" in out
    assert "tool verification (steps)" in out and "│ good but refuted │ 1" in out
    assert f"│ v-sol0 │ 1 │ 0.50 │ BAD │ {CLAIM} │" in out  # the example conflicts, with the refuted claim
    assert "[1] BAD mc=0.50 (labeler: GOOD) tool:REFUTED step 1" in out  # --show marks what the tools changed
    assert verification_line(data["stats"]["verification"]) == (
        "3 steps verified, 3 refuted (in 3 solutions), 4 unknown; labeler agrees on 0.500 (3/6) decided steps; "
        "1 exported good but refuted")


def test_cli_json_good_but_refuted_is_zero_without_verdicts(store):
    data = json.loads(runner.invoke(_app(), ["inspect", store.root, "--json"]).stdout)
    assert data["good_but_refuted"] == 0 and data["stats"]["verification"]["solutions_checked"] == 10


def _default_run_store(root, config) -> ShardStore:
    """One shard labelled with ``config`` on a scripted engine, committed: the quick start's failure case."""
    from steplabel.labelling.shard import RunContext, ShardPlan, label_shard
    from steplabel.rollouts.grading import Grader
    from steplabel.rollouts.sources import Problem
    from tests.scripted_engine import ScriptedEngine

    lucky = "Step 1: Ava has 4 * 4 = 12 pencils.\nStep 2: She gives away 2, so 12 - 2 = 10.\nThe answer is 10."
    honest = "Step 1: Ava has 4 * 4 = 16 pencils.\nStep 2: She gives away 2, so 16 - 2 = 14.\nThe answer is 14."
    problem = Problem("p", "Ava buys 4 boxes of 4 pencils and gives away 2. How many are left?", "10", "test")
    engine = ScriptedEngine(lambda request, index: (lucky, honest)[index % 2])
    with Grader(timeout_s=5) as grader:
        tables, _ = label_shard(ShardPlan("s", (problem,)), config, RunContext.now("r", config.hash()),
                                policy=engine, completer=engine, grader=grader)
    store = ShardStore(root)
    store.stage("r", "s", tables)
    store.commit("r", config=config.model_dump(mode="json"), config_hash=config.hash(), code_version="t")
    return store


def test_a_default_run_never_exports_a_refuted_step_as_good(tmp_path):
    from steplabel.flows.config import RunConfig, parse_config

    data = json.loads(runner.invoke(_app(), ["inspect", _default_run_store(tmp_path / "a", RunConfig()).root,
                                             "--json"]).stdout)
    v = data["stats"]["verification"]
    # the lucky solution reaches the right answer through 4 * 4 = 12: MC calls it good, sympy refutes it
    assert v["conflicts"]["refuted_but_labeler_good_solutions"] == 1 and v["refuted"] == 1
    assert data["good_but_refuted"] == 0 and v["relabelled_steps"] == 2
    off = parse_config({"verification": {"hybrid": None}})
    data = json.loads(runner.invoke(_app(), ["inspect", _default_run_store(tmp_path / "b", off).root,
                                             "--json"]).stdout)
    assert data["good_but_refuted"] == 1 and data["stats"]["verification"]["relabelled_steps"] == 0
