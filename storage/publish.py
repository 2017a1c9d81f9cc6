"""Publish one store version to the Hugging Face Hub as ONE commit plus a tag (DESIGN.md section 9).

The commit holds, for version ``vN`` of the store:

* ``<format>/<split>-00000-of-00001.parquet`` for every format of :data:`steplabel.storage.exporters.FORMATS`, each
  format a Hub "config" (TRL stepwise supervision is the default). PRM800K is Parquet here too (the same
  records as the JSONL export, as nested columns): ``datasets`` and the Hub viewer read all configs of a
  repo with one builder, inferred from the first config's files, so a JSONL config beside Parquet ones
  fails to load;
* ``README.md``, the dataset card: YAML front matter (``configs``, ``license``, ``task_categories``, ``tags``,
  ``size_categories``) and a body with the provenance (models, labelers, run config, code version), counts
  and label statistics;
* ``manifest.json``, the version's manifest.

Then the tag ``vN`` is created on that commit. Secrets: the token is resolved by ``huggingface_hub`` itself
(``HF_TOKEN``, the stored ``hf auth login`` token) and never read or printed here; config keys that look
like secrets (``*token``, ``*secret``, ``*password``, ``*api_key``) are redacted from the card and the
manifest, and the resolved token string is scrubbed from every generated text file as a last guard.
``private`` is applied when the repository is created; an existing repository keeps its visibility.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from steplabel.storage.exporters import (
    DEFAULT_FORMAT,
    FORMATS,
    OPENR_STEP_TAG,
    export_version,
    parse_split_ratio,
)
from steplabel.storage.inspection import verification_stats

__all__ = ["PublishResult", "build_card", "data_stats", "plan_files", "publish", "redact_config"]

CARD = "README.md"
MANIFEST = "manifest.json"
DEFAULT_LICENSE = "other"
TAGS = ["steplabel", "process-reward-model", "prm", "stepwise-supervision", "trl", "math"]
TASK_CATEGORIES = ["token-classification"]

_SECRET_KEY = re.compile(r"(^|[_-])(token|secret|password|passwd|api[_-]?key|access[_-]?key)$", re.IGNORECASE)
REDACTED = "<redacted>"


@dataclass
class PublishResult:
    repo_id: str
    version: str
    tag: str
    files: dict[str, Path]  # path in repo -> local file (under dry_run, or a deleted temp dir after a push)
    dry_run: Path | None = None
    commit_url: str | None = None
    commit_oid: str | None = None
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # config -> split -> rows


# --------------------------------------------------------------------------------------------------------
# secrets
# --------------------------------------------------------------------------------------------------------
def redact_config(value: Any) -> Any:
    """Copy of ``value`` with the values of secret-looking keys replaced by ``<redacted>``."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) and v is not None else redact_config(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_config(v) for v in value]
    return value


def _known_tokens() -> list[str]:
    """Tokens huggingface_hub would use (HF_TOKEN, the stored login), only to scrub them from what we write;
    never written or printed anywhere. Works without huggingface_hub (environment variables only)."""
    found = [os.environ.get(k) for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")]
    try:
        from huggingface_hub import get_token

        found.append(get_token())
    except Exception:  # noqa: BLE001 - not installed, or a broken token file: must not stop a dry run
        pass
    return sorted({t for t in found if t and len(t) >= 8}, key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


# --------------------------------------------------------------------------------------------------------
# card
# --------------------------------------------------------------------------------------------------------
def _as_dict(manifest: Any) -> dict[str, Any]:
    if hasattr(manifest, "model_dump"):
        return manifest.model_dump(mode="json")
    return dict(manifest)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def data_stats(df: pl.DataFrame) -> dict[str, Any]:
    """What the card reports from the data itself: models, labelers, problems, first-error positions and,
    when the rows carry tool verdicts, :func:`steplabel.storage.inspection.verification_stats`."""

    def distinct(col: str) -> list[str]:
        if col not in df.columns:
            return []
        return sorted(str(v) for v in df.get_column(col).drop_nulls().unique().to_list())

    out: dict[str, Any] = {
        "policy_models": distinct("policy_model"),
        "completer_models": distinct("completer_model"),
        "judge_models": distinct("judge_model"),
        "labelers": distinct("labeler"),
        "problems": df.get_column("problem_id").n_unique() if "problem_id" in df.columns else None,
        "solutions": df.height,
    }
    if "tool_verdicts" in df.columns:
        out["verification"] = verification_stats(df.lazy())
    if "first_error" in df.columns and df.height:
        fe = df.get_column("first_error").fill_null(-1)
        out["solutions_without_error"] = int((fe < 0).sum())
        counts = fe.filter(fe >= 0).value_counts(sort=False)
        out["first_error_histogram"] = {
            int(k): int(v) for k, v in sorted(zip(counts[:, 0].to_list(), counts[:, 1].to_list()))
        }
    return out


_FORMAT_DOCS = {
    "trl": "TRL stepwise supervision (`trl.experimental.prm.PRMTrainer`): `prompt: string`, "
    "`completions: list<string>` (the steps, no separators), `labels: list<bool>`.",
    "math-shepherd": "Math-Shepherd (`peiyi9979/Math-Shepherd`): `input` = question + ' ' + the steps "
    "(`Step k: ...`), each followed by ` ки`, joined by newlines; `label` = the same text with `ки` replaced "
    "by `+` / `-`; `task`.",
    "prm800k": "PRM800K-like records (`openai/prm800k` JSONL lines, stored as Parquet here): one row per solution, `question: {problem, "
    "ground_truth_answer}`, `label: {steps: [{completions: [{text, rating, flagged}], chosen_completion: 0}], "
    "finish_reason}`; rating 1 = good, -1 = bad, 0 (neutral) only for steps the labeler left undecided; every "
    "step is listed (steps after an error too).",
    "openr": "openr (`preprocess` ConvertedItem): `question`, `process` = each step followed by the step tag "
    f"{json.dumps(OPENR_STEP_TAG)}, joined by a space; `label: list<string>` of `+` / `-`.",
}


def build_card(
    manifest: Any,
    stats: dict[str, Any],
    formats: dict[str, dict[str, str]],
    *,
    repo_id: str | None = None,
    license: str = DEFAULT_LICENSE,
    split_ratio: str | None = None,
) -> str:
    """The dataset card (README.md) of one version.

    ``manifest``: the version's :class:`steplabel.storage.store.Manifest` (or its dict); ``stats``: :func:`data_stats`
    of the version's rows, optionally with ``rows: {config: {split: n}}``; ``formats``: config name ->
    split -> path in the repo. The TRL config is marked ``default: true``."""
    m = _as_dict(manifest)
    version = m.get("version") or "unversioned"
    mstats = m.get("stats") or {}
    configs = []
    for name in sorted(formats, key=lambda n: (n != DEFAULT_FORMAT, FORMATS.index(n) if n in FORMATS else 99, n)):
        entry: dict[str, Any] = {"config_name": name}
        if name == DEFAULT_FORMAT:
            entry["default"] = True
        entry["data_files"] = [{"split": s, "path": p} for s, p in formats[name].items()]
        configs.append(entry)
    front = {
        "license": license,
        "task_categories": TASK_CATEGORIES,
        "tags": TAGS,
        "size_categories": [_size_category(int(mstats.get("solutions") or stats.get("solutions") or 0))],
        "configs": configs,
    }
    title = repo_id or "steplabel dataset"

    def models(key: str) -> str:
        return ", ".join(f"`{v}`" for v in stats.get(key) or []) or "none"

    balance = mstats.get("label_balance")
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip("\n"),
        "---",
        "",
        f"# {title} ({version})",
        "",
        "Process-supervision (step-label) data for process reward models, generated by "
        f"steplabel and published from version `{version}` of its shard store. "
        f"The Hub tag `{version}` points at this commit.",
        "",
        "## Provenance",
        "",
        f"- policy model(s): {models('policy_models')}",
        f"- completer model(s): {models('completer_models')}",
        f"- judge model(s): {models('judge_models')}",
        f"- labeler(s): {models('labelers')}",
        f"- code version: `{m.get('code_version')}`",
        f"- config hash: `{m.get('config_hash')}`",
        f"- runs: {', '.join(f'`{r}`' for r in m.get('run_ids') or []) or 'none'}",
        f"- created: {m.get('created_at')}",
        "",
        "## Counts and label statistics",
        "",
        "| statistic | value |",
        "|---|---|",
    ]
    for key in ("solutions", "steps", "positive_steps", "negative_steps", "rejects", "rollouts", "tokens"):
        lines.append(f"| {key} | {mstats.get(key, 0)} |")
    lines.append(f"| label_balance (positive / steps) | {'n/a' if balance is None else f'{balance:.4f}'} |")
    if stats.get("problems") is not None:
        lines.append(f"| problems | {stats['problems']} |")
    if "solutions_without_error" in stats:
        lines.append(f"| solutions without an error | {stats['solutions_without_error']} |")
    hist = stats.get("first_error_histogram") or {}
    if hist:
        lines += ["", "First-error position (0-based step index) -> solutions: "
                  + ", ".join(f"{k}: {v}" for k, v in hist.items())]
    lines += _verification_section(stats.get("verification"))
    lines += ["", "## Configs (formats)", ""]
    rows = stats.get("rows") or {}
    for entry in configs:
        name = entry["config_name"]
        per_split = ", ".join(f"{s}: {n}" for s, n in (rows.get(name) or {}).items())
        lines.append(f"- `{name}`{' (default)' if entry.get('default') else ''}: {_FORMAT_DOCS.get(name, '')}"
                     + (f" Rows: {per_split}." if per_split else ""))
    lines += [
        "",
        "Labels are hard booleans (soft Monte-Carlo scores are not part of these exports). Steps whose label is "
        "undecided (null) count as bad in the binary formats and as neutral (rating 0) in PRM800K.",
        f"Splits: {split_ratio or 'a single train split'}; problems are assigned to splits by a hash of "
        "their id, so no problem appears in two splits.",
        "",
        "```python",
        "from datasets import load_dataset",
        f"ds = load_dataset({json.dumps(repo_id or '<repo>')}, \"trl\", revision={json.dumps(version)})",
        "```",
        "",
        "## Run config",
        "",
        "```yaml",
        yaml.safe_dump(redact_config(m.get("config") or {}), sort_keys=False, allow_unicode=True).rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)


def _verification_section(v: dict[str, Any] | None) -> list[str]:
    """The card's tool-verification section: verdicts, agreement with the labeler, and the conflicts."""
    lines = ["", "## Tool verification", ""]
    if not v or not v["steps_checked"]:
        return lines + ["No tool verdicts: the steps were not checked by sympy or code."]
    agreement, conflicts = v["agreement"], v["conflicts"]
    fraction = "n/a" if agreement["fraction"] is None else f"{agreement['fraction']:.4f}"
    lines += [
        "Each step's arithmetic claims were checked with sympy (and sandboxed model-written code where "
        "configured): `verified`, `refuted` or `unknown`.",
        "",
        "| statistic | value |",
        "|---|---|",
        f"| steps checked | {v['steps_checked']} (in {v['solutions_checked']} solutions) |",
        f"| verified / refuted / unknown steps | {v['verified']} / {v['refuted']} / {v['unknown']} |",
        f"| solutions with a refuted step | {v['refuted_solutions']} |",
        f"| labeler (MC) label agrees with the tool | {fraction} of {agreement['decisive']} verified or refuted "
        "steps |",
        f"| refuted steps the labeler called good | {conflicts['refuted_but_labeler_good']} "
        f"(in {conflicts['refuted_but_labeler_good_solutions']} solutions) |",
        f"| verified steps the labeler called bad | {conflicts['verified_but_labeler_bad']} |",
        f"| steps relabelled by the tools | {v['relabelled_steps']} (in {v['relabelled_solutions']} solutions) |",
        f"| exported good but refuted | {v['good_but_refuted']} |",
        "",
    ]
    if v["good_but_refuted"]:
        return lines + [f"{v['good_but_refuted']} steps are exported as good although a tool refuted them: these "
                        "rows were labelled with the hybrid rule off (`verification.hybrid: null`)."]
    lines.append("No step is exported as good while a tool refuted it.")
    if v["relabelled_steps"]:
        lines[-1] += (" The hybrid rule labelled each refuted step, and every step after it, bad; the labeler's own "
                      "labels stay in the store's `labeler_labels` column.")
    return lines


# --------------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------------
def plan_files(
    store: Any,
    version: str | None,
    workdir: str | Path,
    *,
    split_ratio: str | None = None,
    repo_id: str | None = None,
    license: str = DEFAULT_LICENSE,
) -> dict[str, Path]:
    """Write every file of the commit under ``workdir`` (same relative paths as in the repo) and return
    ``{path_in_repo: local_path}``: the exports of all formats, README.md and manifest.json."""
    workdir = Path(workdir)
    parse_split_ratio(split_ratio)  # fail before writing anything
    manifest = store.manifest(version)
    version = manifest.version
    files: dict[str, Path] = {}
    formats: dict[str, dict[str, str]] = {}
    rows: dict[str, dict[str, int]] = {}
    for fmt in FORMATS:
        for path in export_version(store, version, fmt, workdir, split_ratio, parquet_only=True):
            rel = path.relative_to(workdir).as_posix()
            split = path.name.split("-00000-of-")[0]
            files[rel] = path
            formats.setdefault(fmt, {})[split] = rel
            rows.setdefault(fmt, {})[split] = _count_rows(path)
    cols = ["problem_id", "solution_id", "first_error", "policy_model", "completer_model", "judge_model", "labeler",
            "labels", "labeler_labels", "mc_scores", "tool_verdicts", "tool_evidence"]
    stats = data_stats(store.scan("step_labels", version).select(cols).collect())
    stats["rows"] = rows
    secrets = _known_tokens()
    card = build_card(manifest, stats, formats, repo_id=repo_id, license=license, split_ratio=split_ratio)
    man = _as_dict(manifest)
    man["config"] = redact_config(man.get("config") or {})
    for rel, text in ((CARD, card), (MANIFEST, json.dumps(man, indent=1, ensure_ascii=False) + "\n")):
        path = workdir / rel
        path.write_text(_scrub(text, secrets), encoding="utf-8")
        files[rel] = path
    return files


def _count_rows(path: Path) -> int:
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


# --------------------------------------------------------------------------------------------------------
# publish
# --------------------------------------------------------------------------------------------------------
def publish(
    store: Any,
    repo_id: str,
    version: str | None = None,
    private: bool = False,
    dry_run: str | Path | None = None,
    api: Any = None,
    *,
    split_ratio: str | None = None,
    license: str = DEFAULT_LICENSE,
) -> PublishResult:
    """Publish ``version`` (default latest) of ``store`` to the dataset repo ``repo_id``.

    ``dry_run=OUT`` writes exactly the files of the commit to OUT (which must be empty or absent) and makes
    no network call. Otherwise: ``create_repo(exist_ok=True)``, ONE ``create_commit`` with a
    ``CommitOperationAdd`` per file, then ``create_tag(tag=version)`` on that commit. ``api`` defaults to
    ``huggingface_hub.HfApi()`` (token from huggingface_hub's usual sources)."""
    if not re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", repo_id or ""):
        raise ValueError(f"repo id {repo_id!r} is not of the form ORG/NAME")
    manifest = store.manifest(version)
    version = manifest.version
    if dry_run is not None:
        out = Path(dry_run)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(f"dry-run directory {out} must be empty or absent (it would mix with the commit's files)")
        out.mkdir(parents=True, exist_ok=True)
        files = plan_files(store, version, out, split_ratio=split_ratio, repo_id=repo_id, license=license)
        return PublishResult(repo_id, version, version, files, dry_run=out, rows=_rows_of(files))

    from huggingface_hub import CommitOperationAdd, HfApi

    api = api if api is not None else HfApi()
    workdir = Path(tempfile.mkdtemp(prefix="steplabel-publish-"))
    try:
        files = plan_files(store, version, workdir, split_ratio=split_ratio, repo_id=repo_id, license=license)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path)) for rel, path in files.items()]
        m = manifest
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=f"steplabel {version}",
            commit_description=(
                f"{m.stats.get('solutions', 0)} solutions, {m.stats.get('steps', 0)} steps; "
                f"config hash {m.config_hash}; code version {m.code_version}"
            ),
            repo_type="dataset",
        )
        oid = getattr(info, "oid", None)
        api.create_tag(
            repo_id, tag=version, tag_message=f"steplabel {version}", revision=oid, repo_type="dataset"
        )
        rows = _rows_of(files)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return PublishResult(
        repo_id,
        version,
        version,
        files,
        commit_url=getattr(info, "commit_url", None),
        commit_oid=oid,
        rows=rows,
    )


def _rows_of(files: dict[str, Path]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for rel, path in files.items():
        if "/" in rel and path.exists():
            fmt, name = rel.split("/", 1)
            out.setdefault(fmt, {})[name.split("-00000-of-")[0]] = _count_rows(path)
    return out
