"""Publish one store version to the Hugging Face Hub as ONE commit plus a tag.

The commit holds, for version ``vN`` of the store:

* ``<format>/<split>-00000-of-00001.parquet`` for every format of :data:`steplabel.storage.exporters.FORMATS`, each
  format a Hub "config" (TRL stepwise supervision is the default). PRM800K is Parquet here too (the same
  records as the JSONL export, as nested columns): ``datasets`` and the Hub viewer read all configs of a
  repo with one builder, inferred from the first config's files, so a JSONL config beside Parquet ones
  fails to load;
* ``README.md``, the dataset card (``huggingface_hub.DatasetCard``): YAML front matter (``configs``,
  ``license`` with ``license_name``/``license_link`` for ``other``, ``language``, ``pretty_name``,
  ``task_categories``, ``tags``, ``size_categories``) and a body: the source problems, the models and
  labeler, the statistics of :func:`steplabel.storage.inspection.version_stats`, tool verification, every
  config's columns (with ``soft_labels`` when the labeler ran in a soft mode), limitations, citation and the
  redacted run config;
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

import yaml
from pydantic import field_validator, model_validator

from steplabel.storage.exporters import (
    DEFAULT_FORMAT,
    FORMATS,
    export_version,
    format_description,
    parse_split_ratio,
)
from steplabel.storage.inspection import version_stats
from steplabel.storage.strict import StrictConfig

__all__ = ["CardOptions", "PublishResult", "build_card", "card_options", "plan_files", "publish", "redact_config"]

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


_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]+)?$")


class CardOptions(StrictConfig):
    """What the publisher says about the data (the rest of the card comes from the version itself).

    ``license`` is a Hub license id (``apache-2.0``, ``cc-by-4.0``, ``mit`` ...); ``other`` means a license
    the Hub does not list, named by ``license_name`` and linked by ``license_link`` (both only with
    ``other``). The problems' own license binds the data too: the card says where they came from."""

    license: str = DEFAULT_LICENSE
    license_name: str | None = None
    license_link: str | None = None
    pretty_name: str | None = None
    language: tuple[str, ...] = ("en",)

    @field_validator("license")
    @classmethod
    def _license(cls, value: str) -> str:
        if not _LICENSE_ID.match(value):
            raise ValueError(f"--license {value!r} is not a Hub license id (e.g. apache-2.0, cc-by-4.0, mit, other)")
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not _LANGUAGE.match(v)]
        if bad or not value:
            raise ValueError(f"--language {', '.join(bad) or '(none)'}: expected ISO 639 codes such as en, fr")
        return value

    @model_validator(mode="after")
    def _other_only(self) -> CardOptions:
        if self.license != "other" and (self.license_name or self.license_link):
            raise ValueError("--license-name and --license-link describe --license other; drop them or use "
                             "--license other")
        return self


def card_options(**values: Any) -> CardOptions:
    """:class:`CardOptions` from the publish options (None = default); a bad value is a one-line ValueError."""
    from pydantic import ValidationError

    try:
        return CardOptions(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as error:
        raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())) from None


#: what each labeler's labels mean, and the paper to cite for the method
_LABELERS = {
    "math_shepherd": ("Math-Shepherd", "a step is good when at least one of k completions from it reaches the "
                      "reference answer (hard) or by the share that does (soft)",
                      "Wang et al., Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human "
                      "Annotations, ACL 2024"),
    "omegaprm": ("OmegaPRM", "Monte-Carlo estimates found by a binary search (or tree search) for the first "
                 "step from which no completion reaches the reference answer",
                 "Luo et al., Improve Mathematical Reasoning in Language Models by Automated Process "
                 "Supervision, arXiv:2406.06592"),
    "scan": ("SCAN", "self-confidence-filtered Monte-Carlo scan to the first step whose completions never "
             "succeed", "Ding et al., 2025, arXiv:2509.16548"),
    "rpe": ("RPE", "relative progress estimation: a step's MC value relative to the previous one",
            "Zhao et al., GenPRM, arXiv:2504.00891"),
}

#: the columns of the exported configs (other columns are listed with their type only)
_COLUMNS = {
    "prompt": "the problem statement, as given to the policy",
    "completions": "the solution's steps, in order, without separators",
    "labels": "one boolean per step: true = the step is good (see Labels below)",
    "soft_labels": "one float per step: the labeler's soft target, the Monte-Carlo estimate that a completion "
                   "from this step reaches the reference answer (SCAN: min(c/SC, 1); RPE: min(ratio, 1)); "
                   "train on it with a soft-target loss, TRL's PRMTrainer reads only `labels`",
    "input": "the problem and its steps, each step followed by the step tag",
    "label": "the same text with each step tag replaced by its label",
    "task": "the task name",
    "question": "the problem",
    "process": "the steps, each followed by the step tag",
}


def _source(config: dict[str, Any]) -> str:
    """Where the problems came from, from the run config's ``source``."""
    src = config.get("source") or {}
    kind = src.get("kind", "builtin")
    if kind == "builtin":
        return (f"steplabel's built-in generator of multi-step arithmetic word problems with exact answers "
                f"(seed {src.get('seed', 0)}); no third-party text.")
    if kind == "hf":
        name = src.get("dataset") + (f" ({src['subset']})" if src.get("subset") else "")
        return (f"the Hugging Face dataset `{name}`, split `{src.get('split', 'train')}`"
                + (f", first {src['limit']} problems" if src.get("limit") else "")
                + ". Its license and terms apply to the problem texts and reference answers.")
    return (f"the local file `{Path(str(src.get('path', '?'))).name}`"
            + (f", first {src['limit']} problems" if src.get("limit") else "")
            + ". Check the license of the original problems before publishing.")


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def build_card(
    manifest: Any,
    stats: dict[str, Any],
    formats: dict[str, dict[str, str]],
    *,
    columns: dict[str, list[tuple[str, str]]] | None = None,
    rows: dict[str, dict[str, int]] | None = None,
    repo_id: str | None = None,
    options: CardOptions = CardOptions(),
    split_ratio: str | None = None,
) -> str:
    """The dataset card (README.md) of one version, built with ``huggingface_hub.DatasetCard``.

    ``manifest``: the version's :class:`steplabel.storage.store.Manifest` (or its dict); ``stats``:
    :func:`steplabel.storage.inspection.version_stats` of the version; ``formats``: config name -> split ->
    path in the repo; ``columns``: config name -> [(column, Arrow type)] as written; ``rows``: config name ->
    split -> rows. The TRL config is marked ``default: true``."""
    from huggingface_hub import DatasetCard, DatasetCardData

    m = _as_dict(manifest)
    version = m.get("version") or "unversioned"
    config = m.get("config") or {}
    configs = []
    for name in sorted(formats, key=lambda n: (n != DEFAULT_FORMAT, FORMATS.index(n) if n in FORMATS else 99, n)):
        entry: dict[str, Any] = {"config_name": name}
        if name == DEFAULT_FORMAT:
            entry["default"] = True
        entry["data_files"] = [{"split": s, "path": p} for s, p in formats[name].items()]
        configs.append(entry)
    pretty = options.pretty_name or (repo_id.split("/")[-1] if repo_id else "steplabel process-supervision data")
    data = DatasetCardData(
        language=list(options.language),
        license=options.license,
        license_name=options.license_name,
        license_link=options.license_link,
        pretty_name=pretty,
        task_categories=TASK_CATEGORIES,
        tags=TAGS,
        size_categories=[_size_category(int(stats.get("solutions") or 0))],
        configs=configs,
    )
    models = stats["models"]

    def names(values: list[str]) -> str:
        return ", ".join(f"`{v}`" for v in values) or "none"

    labelers = list(stats["labelers"])
    balance, answers, problems = stats["label_balance"], stats["answers"], stats["problems"]
    lines = [
        f"# {pretty}",
        "",
        f"Process-supervision (step-label) data for training process reward models (PRMs): {stats['solutions']:,} "
        f"solutions to {problems['problems']:,} math problems, cut into {stats['steps']:,} steps, each step "
        f"labelled good or bad. Generated by steplabel and published from version `{version}` of its shard "
        f"store; the Hub tag `{version}` points at this commit.",
        "",
        "## Source problems",
        "",
        f"The problems are {_source(config)}",
        "",
        "## Models and labelling",
        "",
        f"- policy model (wrote the solutions): {names(models['policy'])}",
        f"- completer model (rolled out from each step): {names(models['completer'])}",
        f"- judge model: {names(models['judge'])}",
    ]
    for labeler in labelers:
        title, how, _ = _LABELERS.get(labeler, (labeler, "see the run config below", None))
        lines.append(f"- labeler `{labeler}` ({title}, {stats['labelers'][labeler]:,} solutions): {how}")
    lines += [
        "- final answers graded against the reference by a layered grader (Math-Verify first); tool checks: "
        "sympy on each step's arithmetic claims (and sandboxed model-written code where configured)",
        f"- code version `{m.get('code_version')}`, config hash `{m.get('config_hash')}`, runs "
        f"{', '.join(f'`{r}`' for r in m.get('run_ids') or []) or 'none'}, created {m.get('created_at')}",
        "",
        "## Statistics",
        "",
        "| statistic | value |",
        "|---|---|",
        f"| solutions / problems | {stats['solutions']} / {problems['problems']} |",
        f"| steps (mean per solution) | {stats['steps']} ({_fmt(stats['steps_per_solution']['mean'], 2)}) |",
        f"| good / bad steps | {balance['positive']} / {balance['negative']} (good fraction "
        f"{_fmt(balance['positive_fraction'], 4)}) |",
        f"| final-answer accuracy of the policy | {_fmt(answers['accuracy'], 4)} ({answers['correct']} of "
        f"{answers['graded']}) |",
        f"| mean per-problem pass rate | {_fmt(problems['mean_pass_rate'], 4)} |",
        f"| rejected items (not in the data) | {stats['retention']['rejected_total']} |",
        f"| rollouts / generated tokens | {stats['cost']['rollouts']} / {stats['cost']['tokens']} |",
    ]
    hist = {k: v for k, v in stats["first_error"].items() if k is not None and k >= 0}
    if hist:
        lines += ["", "First-error position (0-based step index) -> solutions: "
                  + ", ".join(f"{k}: {v}" for k, v in hist.items())
                  + f"; without an error: {stats['first_error'].get(-1, 0)}."]
    lines += _verification_section(stats["verification"])
    lines += ["", "## Configs and columns", ""]
    for entry in configs:
        name = entry["config_name"]
        per_split = ", ".join(f"{s}: {n}" for s, n in ((rows or {}).get(name) or {}).items())
        lines.append(f"### `{name}`{' (default)' if entry.get('default') else ''}")
        lines += ["", format_description(name) + (f" Rows: {per_split}." if per_split else ""), ""]
        for column, type_ in (columns or {}).get(name, []):
            lines.append(f"- `{column}` ({type_})" + (f": {_COLUMNS[column]}" if column in _COLUMNS else ""))
        lines.append("")
    soft = any(column == "soft_labels" for cols in (columns or {}).values() for column, _ in cols)
    lines += [
        "## Labels",
        "",
        "Labels are booleans in every config. A step's label is the labeler's, corrected by the tools: a step "
        "sympy refuted, and every step after it, is bad. Steps the labeler left undecided (null) count as bad "
        "in the binary configs and as neutral (rating 0) in PRM800K. "
        + ("The `trl` config also carries `soft_labels`, the soft Monte-Carlo targets." if soft else
           "Soft Monte-Carlo scores are not exported: this version's labeler ran with hard labels."),
        "",
        f"Splits: {split_ratio or 'a single train split'}; problems are assigned to splits by a hash of "
        "their id, so no problem appears in two splits.",
        "",
        "```python",
        "from datasets import load_dataset",
        f"ds = load_dataset({json.dumps(repo_id or '<repo>')}, \"trl\", revision={json.dumps(version)})",
        "```",
        "",
        "## Limitations",
        "",
        "- Monte-Carlo labels are estimates from a few rollouts: a step can be labelled good because a completion "
        "guessed the answer, or bad because the completer is weak. They measure what the completer model can "
        "finish, not whether the step is mathematically right.",
        "- The policy's accuracy shapes the data: a weak policy gives mostly bad steps and few correct solutions.",
        "- Tool checks cover explicit arithmetic claims only; a step with none is `unknown`, not verified.",
        "- Correctness of the final answer depends on the grader's reading of the reference answer.",
        "- No human reviewed these labels.",
        "",
        "## Citation",
        "",
        "If you use this data, cite the method behind its labels:",
        "",
    ]
    lines += [f"- {_LABELERS[name][2]}" for name in labelers if name in _LABELERS] or ["- (custom labeler)"]
    lines += [
        "",
        "and the data itself:",
        "",
        "```bibtex",
        f"@misc{{{re.sub(r'[^A-Za-z0-9]+', '_', repo_id or 'steplabel')}_{version},",
        f"  title = {{{{{pretty}}}}},",
        "  note = {Process-supervision data generated with steplabel, version " + version + "},",
        f"  howpublished = {{\\url{{https://huggingface.co/datasets/{repo_id or '<repo>'}}}}},",
        "}",
        "```",
        "",
        "## Run config",
        "",
        "```yaml",
        yaml.safe_dump(redact_config(config), sort_keys=False, allow_unicode=True).rstrip("\n"),
        "```",
        "",
    ]
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


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


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


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
    card: CardOptions = CardOptions(),
) -> dict[str, Path]:
    """Write every file of the commit under ``workdir`` (same relative paths as in the repo) and return
    ``{path_in_repo: local_path}``: the exports of all formats (each with the options its run config implies,
    e.g. TRL's ``soft_labels`` for a soft labeler), README.md and manifest.json."""
    import pyarrow.parquet as pq

    workdir = Path(workdir)
    parse_split_ratio(split_ratio)  # fail before writing anything
    manifest = store.manifest(version)
    version = manifest.version
    files: dict[str, Path] = {}
    formats: dict[str, dict[str, str]] = {}
    rows: dict[str, dict[str, int]] = {}
    columns: dict[str, list[tuple[str, str]]] = {}
    for fmt in FORMATS:
        for path in export_version(store, version, fmt, workdir, split_ratio, parquet_only=True):
            rel = path.relative_to(workdir).as_posix()
            split = path.name.split("-00000-of-")[0]
            files[rel] = path
            formats.setdefault(fmt, {})[split] = rel
            rows.setdefault(fmt, {})[split] = _count_rows(path)
            columns[fmt] = [(f.name, str(f.type)) for f in pq.read_schema(path)]
    stats = version_stats(store, version)
    secrets = _known_tokens()
    text = build_card(manifest, stats, formats, columns=columns, rows=rows, repo_id=repo_id, options=card,
                      split_ratio=split_ratio)
    man = _as_dict(manifest)
    man["config"] = redact_config(man.get("config") or {})
    for rel, content in ((CARD, text), (MANIFEST, json.dumps(man, indent=1, ensure_ascii=False) + "\n")):
        path = workdir / rel
        path.write_text(_scrub(content, secrets), encoding="utf-8")
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
    card: CardOptions = CardOptions(),
) -> PublishResult:
    """Publish ``version`` (default latest) of ``store`` to the dataset repo ``repo_id``.

    ``dry_run=OUT`` writes exactly the files of the commit to OUT (which must be empty or absent) and makes
    no network call. Otherwise: ``create_repo(exist_ok=True)``, ONE ``create_commit`` with a
    ``CommitOperationAdd`` per file, then ``create_tag(tag=version)`` on that commit. ``api`` defaults to
    ``huggingface_hub.HfApi()`` (token from huggingface_hub's usual sources). ``card``: the license, name
    and languages the dataset card declares."""
    if not re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", repo_id or ""):
        raise ValueError(f"repo id {repo_id!r} is not of the form ORG/NAME")
    manifest = store.manifest(version)
    version = manifest.version
    if dry_run is not None:
        out = Path(dry_run)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(f"dry-run directory {out} must be empty or absent (it would mix with the commit's files)")
        out.mkdir(parents=True, exist_ok=True)
        files = plan_files(store, version, out, split_ratio=split_ratio, repo_id=repo_id, card=card)
        return PublishResult(repo_id, version, version, files, dry_run=out, rows=_rows_of(files))

    from huggingface_hub import CommitOperationAdd, HfApi

    api = api if api is not None else HfApi()
    workdir = Path(tempfile.mkdtemp(prefix="steplabel-publish-"))
    try:
        files = plan_files(store, version, workdir, split_ratio=split_ratio, repo_id=repo_id, card=card)
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
