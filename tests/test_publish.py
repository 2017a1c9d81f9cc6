"""Publishing: the dataset card, the dry-run files (loaded back with `datasets`), one Hub commit + tag
through an injected fake HfApi, no token anywhere, and the two CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from steplabel.storage.exporters import FORMATS, from_prm800k
from steplabel.storage.inspection import version_stats
from steplabel.storage.publish import (
    REDACTED,
    CardOptions,
    build_card,
    card_options,
    plan_files,
    publish,
    redact_config,
)
from steplabel.storage.schema import STEP_LABELS_SCHEMA
from steplabel.storage.store import ShardStore
from tests.factories import expected_stats, make_reject_rows, make_step_label_rows

TOKEN = "hf_secretTOKENvalue0123456789abcdef"
CFG = {
    "name": "pub",
    "source": {"kind": "builtin", "num_problems": 8},
    "engine": {"kind": "openai", "model": "m", "api_key": "sk-do-not-publish", "api_key_env": "OPENAI_API_KEY"},
    "labeler": {"name": "math_shepherd", "rollouts": 8},
    "notes": f"pasted by mistake: {TOKEN}",
}
SPLIT = "train=0.75,test=0.25"


def _store(tmp_path: Path) -> ShardStore:
    store = ShardStore(tmp_path / "store")
    for s in range(2):
        sid = f"shard-{s:04d}"
        store.stage(
            "r1", sid, {"step_labels": make_step_label_rows(10, shard_id=sid), "rejects": make_reject_rows(1, shard_id=sid)}
        )
    store.commit("r1", config=CFG, config_hash="cfg-test", code_version="abc123")
    return store


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_redact_config():
    assert redact_config({"a": {"hf_token": "x", "api_key": "y", "max_tokens": 5, "api_key_env": "E"}, "l": [{"secret": 1}]}) == {
        "a": {"hf_token": REDACTED, "api_key": REDACTED, "max_tokens": 5, "api_key_env": "E"},
        "l": [{"secret": REDACTED}],
    }


def test_build_card(tmp_path: Path):
    store = _store(tmp_path)
    m = store.manifest()
    formats = {
        "openr": {"train": "openr/train-00000-of-00001.parquet"},
        "trl": {"train": "trl/train-00000-of-00001.parquet", "test": "trl/test-00000-of-00001.parquet"},
    }
    options = CardOptions(license="apache-2.0", pretty_name="PRM steps", language=("en", "fr"))
    card = build_card(m, version_stats(store), formats, repo_id="org/name", options=options,
                      columns={"trl": [("prompt", "string"), ("labels", "list<element: bool>")]})
    front = _front_matter(card)
    assert (front["license"], front["pretty_name"], front["language"]) == ("apache-2.0", "PRM steps", ["en", "fr"])
    assert "license_name" not in front
    assert front["task_categories"] == ["token-classification"]
    assert "process-reward-model" in front["tags"] and front["size_categories"] == ["n<1K"]
    assert front["configs"] == [
        {
            "config_name": "trl",
            "default": True,
            "data_files": [
                {"split": "train", "path": "trl/train-00000-of-00001.parquet"},
                {"split": "test", "path": "trl/test-00000-of-00001.parquet"},
            ],
        },
        {"config_name": "openr", "data_files": [{"split": "train", "path": "openr/train-00000-of-00001.parquet"}]},
    ]
    exp = expected_stats([(10, 3), (10, 3)], rejects=2)
    body = card.split("---\n", 2)[2]
    assert body.startswith("\n# PRM steps\n")
    assert "`policy-test`" in body and "`completer-test`" in body and "labeler `hard_mc`" in body
    assert "`abc123`" in body and "`cfg-test`" in body and "`r1`" in body
    # 2 shards x 10 rows: problem ids shard-000s-p0..p4, 2 solutions each; rows 0, 3, 6, 9 are correct
    assert f"| solutions / problems | {exp['solutions']} / 10 |" in body
    assert f"| good / bad steps | {exp['positive_steps']} / {exp['negative_steps']} (good fraction " \
           f"{exp['positive_steps'] / exp['steps']:.4f}) |" in body
    assert "| final-answer accuracy of the policy | 0.4000 (8 of 20) |" in body
    assert f"| rejected items (not in the data) | {exp['rejects']} |" in body
    assert f"| rollouts / generated tokens | {exp['rollouts']} / {exp['tokens']} |" in body
    assert "## Source problems" in body and "built-in generator" in body
    assert "- `prompt` (string): the problem statement" in body
    assert "## Limitations" in body and "## Citation" in body and "@misc{org_name_v0001," in body
    config_block = body.split("```yaml\n")[1].split("```")[0]
    cfg = yaml.safe_load(config_block)
    assert cfg["labeler"] == {"name": "math_shepherd", "rollouts": 8}
    assert cfg["engine"]["api_key"] == REDACTED and "sk-do-not-publish" not in card


@pytest.mark.parametrize(
    "values, message",
    [
        ({"license": "Apache 2"}, "not a Hub license id"),
        ({"license": "mit", "license_name": "x"}, "describe --license other"),
        ({"language": ("english",)}, "ISO 639"),
    ],
)
def test_card_options_are_checked_in_one_line(values, message):
    with pytest.raises(ValueError) as info:
        card_options(**values)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_card_of_a_soft_labeler_describes_the_soft_targets(tmp_path: Path):
    store = ShardStore(tmp_path / "store")
    store.stage("r1", "s", {"step_labels": make_step_label_rows(4, shard_id="s")})
    soft = {**CFG, "labeler": {"name": "math_shepherd", "label_mode": "soft"}}
    store.commit("r1", config=soft, config_hash="soft", code_version="abc123")
    card = CardOptions(license="other", license_name="my terms", license_link="https://example.com/terms")
    files = plan_files(store, None, tmp_path / "w", card=card)
    trl = pq.read_table(files["trl/train-00000-of-00001.parquet"])
    assert trl.column_names == ["prompt", "completions", "labels", "soft_labels"]
    assert trl.column("soft_labels").to_pylist() == store.read()["soft_labels"].to_list()
    text = files["README.md"].read_text()
    front = _front_matter(text)
    assert (front["license"], front["license_name"], front["license_link"]) == (
        "other", "my terms", "https://example.com/terms")
    assert "- `soft_labels` (list<element: float>): one float per step" in text
    assert "The `trl` config also carries `soft_labels`" in text
    hard = plan_files(_store(tmp_path / "hard"), None, tmp_path / "w2")["README.md"].read_text()
    assert "- `soft_labels`" not in hard and "Soft Monte-Carlo scores are not exported" in hard


def test_dry_run_writes_the_commit_and_loads_with_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = _store(tmp_path)
    out = tmp_path / "dry"

    class NoNetwork:
        def __getattr__(self, name):
            raise AssertionError(f"dry run called HfApi.{name}")

    result = publish(store, "org/name", dry_run=out, api=NoNetwork(), split_ratio=SPLIT)
    assert result.version == "v0001" and result.tag == "v0001" and result.dry_run == out
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert on_disk == sorted(result.files)
    expected_data = {f"{fmt}/{split}-00000-of-00001.parquet" for fmt in FORMATS for split in ("train", "test")}
    assert set(result.files) == expected_data | {"README.md", "manifest.json"}
    for path in out.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
            assert b"sk-do-not-publish" not in path.read_bytes(), path
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == "v0001" and manifest["stats"]["solutions"] == 20
    assert manifest["config"]["engine"]["api_key"] == REDACTED

    datasets = pytest.importorskip("datasets")
    cache = str(tmp_path / "cache")
    n = {s: r for s, r in result.rows["trl"].items()}
    assert sum(n.values()) == 20 and all(n.values())
    features = {
        "trl": {"prompt", "completions", "labels"},
        "math-shepherd": {"input", "label", "task"},
        "prm800k": {"labeler", "timestamp", "generation", "is_quality_control_question", "is_initial_screening_question",
                    "question", "label"},
        "openr": {"question", "process", "label"},
    }
    trl_train = None
    for fmt in FORMATS:
        dd = datasets.load_dataset(str(out), fmt, cache_dir=cache)
        assert {s: dd[s].num_rows for s in dd} == n, fmt  # same problems in the same split for every format
        assert set(dd["train"].features) == features[fmt], fmt
        if fmt == "prm800k":  # the Parquet form reads back into the same steps and labels
            back = from_prm800k(dd["train"].to_list())
            rows = {r["prompt"]: r for r in store.read().to_dicts()}
            for prompt, steps, labels, ans in back.iter_rows():  # PRM800K lists steps up to the first error
                row = rows[prompt]
                end = row["first_error"] + 1 if row["first_error"] >= 0 else None
                assert (steps, labels, ans) == (row["completions"][:end], row["labels"][:end], row["reference_answer"])
        if fmt == "trl":
            trl_train = dd["train"]
            assert trl_train.features["labels"].feature.dtype == "bool"
    default = datasets.load_dataset(str(out), cache_dir=cache)  # default config is trl
    assert default["train"].to_list() == trl_train.to_list()
    # the rows are the store's rows, split by problem
    rows = store.read().to_dicts()
    by_prompt = {r["prompt"]: (r["completions"], r["labels"]) for r in rows}
    for r in trl_train:
        assert by_prompt[r["prompt"]] == (r["completions"], r["labels"])
    card = (out / "README.md").read_text()
    assert _front_matter(card)["configs"][0]["data_files"] == [
        {"split": "train", "path": "trl/train-00000-of-00001.parquet"},
        {"split": "test", "path": "trl/test-00000-of-00001.parquet"},
    ]


def test_dry_run_refuses_a_non_empty_directory(tmp_path: Path):
    store = _store(tmp_path)
    out = tmp_path / "dry"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(ValueError, match="empty or absent"):
        publish(store, "org/name", dry_run=out)
    with pytest.raises(ValueError, match="ORG/NAME"):
        publish(store, "no-slash", dry_run=tmp_path / "d2")


class FakeApi:
    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.seen: dict[str, bytes] = {}

    def create_repo(self, *args, **kwargs):
        self.calls.append(("create_repo", args, kwargs))

    def create_commit(self, *args, **kwargs):
        self.calls.append(("create_commit", args, kwargs))
        for op in args[1] if len(args) > 1 else kwargs["operations"]:
            self.seen[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()  # files exist during the commit

        class Info:
            oid = "deadbeef" * 5
            commit_url = "https://huggingface.co/datasets/org/name/commit/deadbeef"

        return Info()

    def create_tag(self, *args, **kwargs):
        self.calls.append(("create_tag", args, kwargs))


def test_publish_one_commit_then_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    store = _store(tmp_path)
    api = FakeApi()
    result = publish(store, "org/name", private=True, api=api, split_ratio=SPLIT)
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "create_commit", "create_tag"]
    _, args, kwargs = api.calls[0]
    assert args == ("org/name",) and kwargs == {"repo_type": "dataset", "private": True, "exist_ok": True}
    _, args, kwargs = api.calls[1]
    assert args[0] == "org/name" and kwargs["repo_type"] == "dataset" and "token" not in kwargs
    ops = args[1]
    from huggingface_hub import CommitOperationAdd

    assert all(isinstance(op, CommitOperationAdd) for op in ops)
    assert sorted(op.path_in_repo for op in ops) == sorted(result.files)
    assert len(ops) == 4 * 2 + 2
    assert "v0001" in kwargs["commit_message"]
    _, args, kwargs = api.calls[2]
    assert args == ("org/name",) and kwargs["tag"] == "v0001" and kwargs["revision"] == "deadbeef" * 5
    assert kwargs["repo_type"] == "dataset"
    assert result.commit_oid == "deadbeef" * 5 and result.commit_url.endswith("deadbeef")
    assert all(TOKEN.encode() not in data for data in api.seen.values())
    # the same files as a dry run (same tables; card and manifest byte for byte)
    dry = publish(store, "org/name", dry_run=tmp_path / "dry", split_ratio=SPLIT)
    assert set(dry.files) == set(api.seen)
    for rel, path in dry.files.items():
        if rel.endswith(".parquet"):
            assert pq.read_table(path).equals(pq.read_table(pa.BufferReader(api.seen[rel]))), rel
        else:
            assert path.read_bytes() == api.seen[rel], rel


def test_plan_files_selects_version(tmp_path: Path):
    store = _store(tmp_path)
    store.stage("r2", "shard-0009", {"step_labels": make_step_label_rows(4, shard_id="shard-0009")})
    store.commit("r2", config=CFG, config_hash="cfg-test", code_version="abc123")
    files = plan_files(store, "v1", tmp_path / "w1")
    assert pq.read_table(files["trl/train-00000-of-00001.parquet"]).num_rows == 20
    assert json.loads(files["manifest.json"].read_text())["version"] == "v0001"
    files = plan_files(store, None, tmp_path / "w2")
    assert pq.read_table(files["trl/train-00000-of-00001.parquet"]).num_rows == 24


# ---------------------------------------------------------------- CLI
def _app():
    typer = pytest.importorskip("typer")
    from steplabel.cli.export import export_command, publish_command

    app = typer.Typer()
    app.command("export")(export_command)
    app.command("publish")(publish_command)
    return app


def test_cli_export_and_publish_dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    app = _app()
    store = _store(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["export", store.root, "--format", "openr", "--out", str(tmp_path / "x"), "--split-ratio", SPLIT])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "x/openr/train-00000-of-00001.parquet").exists()
    assert (tmp_path / "x/openr/test-00000-of-00001.parquet").exists()
    res = runner.invoke(app, ["export", store.root, "--format", "csv", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "unknown format" in res.output
    res = runner.invoke(app, ["export", store.root, "--out", str(tmp_path / "x"), "--version", "v9"])
    assert res.exit_code == 2 and "v9" in res.output
    res = runner.invoke(app, ["export", store.root, "--out", str(tmp_path / "x"), "--split-ratio", "train=0.5"])
    assert res.exit_code == 2 and "sum to" in res.output
    res = runner.invoke(app, ["publish", store.root, "--repo-id", "org/name", "--dry-run", str(tmp_path / "dry")])
    assert res.exit_code == 0, res.output
    assert "dry run" in res.output and TOKEN not in res.output
    assert (tmp_path / "dry/README.md").exists() and (tmp_path / "dry/trl/train-00000-of-00001.parquet").exists()
    res = runner.invoke(app, ["publish", str(tmp_path / "missing"), "--repo-id", "org/name", "--dry-run", str(tmp_path / "d3")])
    assert res.exit_code == 2
    res = runner.invoke(app, ["publish", store.root, "--repo-id", "org/name", "--dry-run", str(tmp_path / "d4"),
                              "--license", "cc-by-4.0", "--pretty-name", "Steps", "--language", "en",
                              "--language", "de"])
    assert res.exit_code == 0, res.output
    front = _front_matter((tmp_path / "d4/README.md").read_text())
    assert (front["license"], front["pretty_name"], front["language"]) == ("cc-by-4.0", "Steps", ["en", "de"])
    res = runner.invoke(app, ["publish", store.root, "--repo-id", "org/name", "--dry-run", str(tmp_path / "d5"),
                              "--license", "mit", "--license-link", "https://x"])
    assert res.exit_code == 2 and "describe --license other" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "d5").exists()


def test_card_shows_tool_verification(tmp_path: Path):
    rows = make_step_label_rows(2, shard_id="shard-0000").to_pylist()  # labels TTT and TFF
    rows[0].update(tool_verdicts=["verified", "refuted", "unknown"], labeler_labels=[True, True, True],
                   labels=[True, False, False], first_error=1)
    rows[1].update(tool_verdicts=["unknown", "verified", "unknown"], labeler_labels=[True, False, False])
    store = ShardStore(tmp_path)
    store.stage("r1", "shard-0000", {"step_labels": pa.Table.from_pylist(rows, schema=STEP_LABELS_SCHEMA)})
    store.commit("r1", config=CFG, config_hash="cfg-test", code_version="abc123")
    card = plan_files(store, None, tmp_path / "w")["README.md"].read_text()
    section = card.split("## Tool verification\n")[1].split("\n## ")[0]
    for line in ("| verified / refuted / unknown steps | 2 / 1 / 3 |",
                 "| labeler (MC) label agrees with the tool | 0.3333 of 3 verified or refuted steps |",
                 "| refuted steps the labeler called good | 1 (in 1 solutions) |",
                 "| verified steps the labeler called bad | 1 |",
                 "| steps relabelled by the tools | 2 (in 1 solutions) |",
                 "| exported good but refuted | 0 |"):
        assert line in section, line
    assert "No step is exported as good while a tool refuted it. The hybrid rule" in section
    # unverified rows say so instead of printing zeros
    plain = ShardStore(tmp_path / "plain")
    unchecked = make_step_label_rows(2, shard_id="s")
    unchecked = unchecked.set_column(unchecked.schema.get_field_index("tool_verdicts"), "tool_verdicts",
                                     pa.array([None, None], pa.list_(pa.string())))
    plain.stage("r1", "s", {"step_labels": unchecked})
    plain.commit("r1", config=CFG, config_hash="cfg-test", code_version="abc123")
    assert "No tool verdicts" in build_card(plain.manifest(), version_stats(plain), {})
