"""Exporters from ``step_labels`` rows to the step-label formats used in the wild (DESIGN.md section 9).

Every exporter is a pure function of a polars DataFrame of ``step_labels`` rows (only ``prompt``,
``completions``, ``labels`` and, for PRM800K, ``reference_answer`` are read); every importer is its inverse
and returns a DataFrame with ``prompt``, ``completions``, ``labels`` (plus ``reference_answer`` for PRM800K).

Formats (``FORMATS``; the first is the default):

``trl``            TRL stepwise supervision: ``prompt: string``, ``completions: list<string>`` (steps, no
                   separators), ``labels: list<bool>`` (never floats: TRL's PRMTrainer does ``int(label)``).
``math-shepherd``  ``input: string`` = question + " " + "\\n".join(f"Step {k}: {step} ки"), ``label: string`` =
                   the same text with each ``ки`` replaced by ``+`` / ``-``, ``task: string`` (source name).
                   Steps get a ``Step k: `` prefix, as in ``peiyi9979/Math-Shepherd``, because the upstream
                   converters (TRL ``examples/datasets/math_shepherd.py``, openr ``preprocess``) split the
                   question from the steps at ``Step 1: ``; a step that already starts with ``Step k:`` (its
                   own number) is not prefixed twice. The importer strips the prefix, so such a step comes
                   back without it (the only lossy case; re-exporting it gives the identical text).
``prm800k``        JSONL, one line per solution, shaped like ``openai/prm800k``'s phase-2 files::

                       {"labeler": "steplabel:<labeler>", "timestamp": ISO-8601,
                        "is_quality_control_question": false, "is_initial_screening_question": false,
                        "question": {"problem": prompt, "ground_truth_answer": reference_answer},
                        "label": {"steps": [{"completions": [{"text": step, "rating": 1|-1|0,
                                                              "flagged": false}],
                                             "human_completion": null, "chosen_completion": 0}, ...],
                                  "total_time": 0, "finish_reason": "found_error" | "solution"}}

                   ``rating`` is 1 for a True label, -1 for False and 0 (PRM800K's "neutral") only for a
                   null label (a step the labeler left undecided); the importer maps 0 back to null, so the
                   round trip is exact. ``finish_reason`` is ``found_error`` when some exported step is rated
                   -1, else ``solution``. By default every step is exported (phase-1 style, lossless);
                   ``stop_at_first_error=True`` stops after the first -1 step like phase 2.
``openr``          openr ``preprocess`` output (``ConvertedItem``): ``question: string``, ``process: string``
                   = " ".join(f"{step} {step_tag}") (every step followed by the tag, default
                   ``"\\n\\n\\n\\n\\n"`` as in openr's CLI), ``label: list<string>`` of ``+`` / ``-``.

Neutral (null) labels in the binary formats (trl, math-shepherd, openr): ``neutral="bad"`` (default) exports
them as False / ``-``, like TRL's PRM800K converter (``rating == 1`` -> True); ``neutral="good"`` as True /
``+``, like openr's default. Only PRM800K keeps them (rating 0). Text that contains a format's step tag
(``ки``, the openr tag) is rejected with a ValueError naming the solution, since it could not be parsed back.

``export_version`` writes one format of one store version as the files the Hugging Face Hub expects:
``OUT/<format>/<split>-00000-of-00001.parquet`` (``.jsonl`` for prm800k, unless ``parquet_only``). ``split_ratio`` such as
``"train=0.9,test=0.1"`` assigns whole problems to splits by a hash of ``problem_id`` (no problem is in two
splits, and the assignment does not depend on the row order or on the other problems).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "FORMATS",
    "DEFAULT_FORMAT",
    "MATH_SHEPHERD_TAG",
    "OPENR_STEP_TAG",
    "EXPORTERS",
    "IMPORTERS",
    "ARROW_SCHEMAS",
    "to_trl",
    "from_trl",
    "to_math_shepherd",
    "from_math_shepherd",
    "to_prm800k",
    "from_prm800k",
    "to_openr",
    "from_openr",
    "parse_split_ratio",
    "split_of",
    "assign_splits",
    "export_frame",
    "export_version",
    "hub_file_name",
    "task_name",
]

FORMATS: tuple[str, ...] = ("trl", "math-shepherd", "prm800k", "openr")
DEFAULT_FORMAT = "trl"
MATH_SHEPHERD_TAG = "ки"
OPENR_STEP_TAG = "\n\n\n\n\n"

Neutral = Literal["bad", "good"]

#: Arrow schema of each Parquet format (polars would write large_string / large_list; the Hub's own
#: stepwise datasets use plain string / list).
ARROW_SCHEMAS: dict[str, pa.Schema] = {
    "trl": pa.schema(
        [("prompt", pa.string()), ("completions", pa.list_(pa.string())), ("labels", pa.list_(pa.bool_()))]
    ),
    "math-shepherd": pa.schema([("input", pa.string()), ("label", pa.string()), ("task", pa.string())]),
    "openr": pa.schema([("question", pa.string()), ("process", pa.string()), ("label", pa.list_(pa.string()))]),
    # PRM800K records as Parquet (used for the Hub, where one repo is read by one builder: all Parquet).
    "prm800k": pa.schema(
        [
            ("labeler", pa.string()),
            ("timestamp", pa.string()),
            ("is_quality_control_question", pa.bool_()),
            ("is_initial_screening_question", pa.bool_()),
            ("question", pa.struct([("problem", pa.string()), ("ground_truth_answer", pa.string())])),
            (
                "label",
                pa.struct(
                    [
                        (
                            "steps",
                            pa.list_(
                                pa.struct(
                                    [
                                        (
                                            "completions",
                                            pa.list_(
                                                pa.struct(
                                                    [
                                                        ("text", pa.string()),
                                                        ("rating", pa.int64()),
                                                        ("flagged", pa.bool_()),
                                                    ]
                                                )
                                            ),
                                        ),
                                        ("human_completion", pa.string()),
                                        ("chosen_completion", pa.int64()),
                                    ]
                                )
                            ),
                        ),
                        ("total_time", pa.int64()),
                        ("finish_reason", pa.string()),
                    ]
                ),
            ),
        ]
    ),
}

_SOURCE_COLUMNS = ("problem_id", "solution_id", "prompt", "completions", "labels")


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------
def _rows(df: pl.DataFrame, extra: Iterable[str] = ()) -> list[dict[str, Any]]:
    need = ["prompt", "completions", "labels", *extra]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"step_labels rows lack column(s) {missing}; got columns {df.columns}")
    cols = [c for c in ("solution_id", *need) if c in df.columns]
    rows = df.select(cols).to_dicts()
    for i, row in enumerate(rows):
        steps, labels = row["completions"] or [], row["labels"] or []
        if len(steps) != len(labels):
            raise ValueError(
                f"solution {_who(row, i)}: {len(steps)} completions but {len(labels)} labels; "
                "every step needs exactly one label"
            )
        row["completions"], row["labels"] = steps, labels
    return rows


def _who(row: dict[str, Any], i: int) -> str:
    return repr(row.get("solution_id")) if row.get("solution_id") is not None else f"at row {i}"


def _binary(label: bool | None, neutral: Neutral) -> bool:
    if neutral not in ("bad", "good"):
        raise ValueError(f"neutral must be 'bad' or 'good', got {neutral!r}")
    return (neutral == "good") if label is None else bool(label)


def _check_no_tag(text: str | None, tag: str, fmt: str, row: dict[str, Any], i: int, what: str) -> None:
    if text is not None and tag in text:
        raise ValueError(
            f"{fmt} export: the {what} of solution {_who(row, i)} contains the step tag {tag!r}, so the "
            "exported text could not be parsed back into steps; remove it or choose another tag"
        )


def _frame(records: list[dict[str, Any]], fmt: str) -> pl.DataFrame:
    table = pa.Table.from_pylist(records, schema=ARROW_SCHEMAS[fmt])
    return pl.from_arrow(table)  # type: ignore[return-value]


def _stepwise(records: list[dict[str, Any]], with_answer: bool = False) -> pl.DataFrame:
    schema: dict[str, Any] = {"prompt": pl.String, "completions": pl.List(pl.String), "labels": pl.List(pl.Boolean)}
    if with_answer:
        schema["reference_answer"] = pl.String
    return pl.DataFrame(records, schema=schema)


# --------------------------------------------------------------------------------------------------------
# TRL stepwise supervision
# --------------------------------------------------------------------------------------------------------
def to_trl(df: pl.DataFrame, *, neutral: Neutral = "bad") -> pl.DataFrame:
    """``prompt``, ``completions``, ``labels`` (bool, null labels per ``neutral``)."""
    out = [
        {
            "prompt": r["prompt"],
            "completions": list(r["completions"]),
            "labels": [_binary(lab, neutral) for lab in r["labels"]],
        }
        for r in _rows(df)
    ]
    return _frame(out, "trl")


def from_trl(df: pl.DataFrame) -> pl.DataFrame:
    return _stepwise(df.select("prompt", "completions", "labels").to_dicts())


# --------------------------------------------------------------------------------------------------------
# Math-Shepherd
# --------------------------------------------------------------------------------------------------------
_PREFIX_RE = re.compile(r"^Step (\d+): ")


def _ms_step(k: int, step: str) -> str:
    m = _PREFIX_RE.match(step)
    return step if m and int(m.group(1)) == k else f"Step {k}: {step}"


def to_math_shepherd(df: pl.DataFrame, *, task: str = "steplabel", neutral: Neutral = "bad") -> pl.DataFrame:
    """``input`` / ``label`` / ``task`` as in ``peiyi9979/Math-Shepherd`` (see the module docstring)."""
    tag = MATH_SHEPHERD_TAG
    out = []
    for i, r in enumerate(_rows(df)):
        _check_no_tag(r["prompt"], tag, "math-shepherd", r, i, "prompt")
        steps = [_ms_step(k, s) for k, s in enumerate(r["completions"], start=1)]
        for s in steps:
            _check_no_tag(s, tag, "math-shepherd", r, i, "steps")
        marks = ["+" if _binary(lab, neutral) else "-" for lab in r["labels"]]
        body = "\n".join(f"{s} {tag}" for s in steps)
        label = "\n".join(f"{s} {m}" for s, m in zip(steps, marks))
        out.append({"input": f"{r['prompt']} {body}", "label": f"{r['prompt']} {label}", "task": task})
    return _frame(out, "math-shepherd")


def _parse_math_shepherd(inp: str, lab: str) -> tuple[str, list[str], list[bool]]:
    tag = MATH_SHEPHERD_TAG
    pieces = inp.split(f" {tag}")
    if len(pieces) == 1:  # a solution without steps was exported as prompt + " "
        return (inp[:-1] if inp.endswith(" ") else inp), [], []
    if pieces[-1] != "":
        raise ValueError(f"math-shepherd input does not end with ' {tag}': {inp[-80:]!r}")
    # label text = input with each 2-char tag replaced by a 1-char mark: tag j sits at (its offset - j).
    labels, offset = [], 0
    for j, piece in enumerate(pieces[:-1]):
        offset += len(piece) + 1  # the space before the tag
        mark = lab[offset - j] if offset - j < len(lab) else ""
        if mark not in ("+", "-"):
            raise ValueError(f"math-shepherd label has {mark!r} where step {j + 1}'s '+'/'-' should be")
        labels.append(mark == "+")
        offset += len(tag)
    first = pieces[0]
    cut = first.rfind(" Step 1: ")
    if cut < 0:
        raise ValueError(f"math-shepherd input has no ' Step 1: ' before its first tag: {first[:80]!r}")
    question, segments = first[:cut], [first[cut + 1 :]] + pieces[1:-1]
    steps = []
    for k, seg in enumerate(segments, start=1):
        if k > 1:
            if not seg.startswith("\n"):
                raise ValueError(f"math-shepherd step {k} does not start on a new line: {seg[:40]!r}")
            seg = seg[1:]
        prefix = f"Step {k}: "
        steps.append(seg[len(prefix) :] if seg.startswith(prefix) else seg)
    return question, steps, labels


def from_math_shepherd(df: pl.DataFrame) -> pl.DataFrame:
    out = []
    for r in df.select("input", "label").to_dicts():
        q, steps, labels = _parse_math_shepherd(r["input"], r["label"])
        out.append({"prompt": q, "completions": steps, "labels": labels})
    return _stepwise(out)


# --------------------------------------------------------------------------------------------------------
# PRM800K-like JSONL
# --------------------------------------------------------------------------------------------------------
_RATING = {True: 1, False: -1, None: 0}
_FROM_RATING = {1: True, -1: False, 0: None}


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (None if value is None else str(value))


def to_prm800k(df: pl.DataFrame, *, stop_at_first_error: bool = False) -> list[dict[str, Any]]:
    """One PRM800K-shaped record per solution (see the module docstring)."""
    extra = [c for c in ("reference_answer", "labeler", "created_at") if c in df.columns]
    out = []
    for r in _rows(df, extra):
        steps = []
        for step, lab in zip(r["completions"], r["labels"]):
            rating = _RATING[None if lab is None else bool(lab)]
            steps.append(
                {
                    "completions": [{"text": step, "rating": rating, "flagged": False}],
                    "human_completion": None,
                    "chosen_completion": 0,
                }
            )
            if stop_at_first_error and rating == -1:
                break
        found = any(s["completions"][0]["rating"] == -1 for s in steps)
        out.append(
            {
                "labeler": f"steplabel:{r.get('labeler') or 'unknown'}",
                "timestamp": _iso(r.get("created_at")),
                "is_quality_control_question": False,
                "is_initial_screening_question": False,
                "question": {"problem": r["prompt"], "ground_truth_answer": r.get("reference_answer")},
                "label": {
                    "steps": steps,
                    "total_time": 0,
                    "finish_reason": "found_error" if found else "solution",
                },
            }
        )
    return out


def from_prm800k(records: Iterable[dict[str, Any]] | pl.DataFrame) -> pl.DataFrame:
    """Inverse of :func:`to_prm800k` (records, or a DataFrame of them as read from the Parquet form); also reads
    real PRM800K lines (the trajectory is the chosen completion, else the human completion; a step with
    neither ends the trajectory, after its first -1 completion)."""
    if isinstance(records, pl.DataFrame):
        records = records.to_dicts()
    out = []
    for rec in records:
        steps, labels = [], []
        for st in (rec.get("label") or {}).get("steps") or []:
            comps = st.get("completions") or []
            chosen = st.get("chosen_completion")
            if chosen is not None and chosen < len(comps):
                c = comps[chosen]
            elif st.get("human_completion"):
                c = st["human_completion"]
            else:
                bad = [c for c in comps if c.get("rating") == -1]
                if bad:
                    steps.append(bad[0]["text"])
                    labels.append(False)
                break
            steps.append(c["text"])
            labels.append(_FROM_RATING.get(c.get("rating"), None))
        q = rec.get("question") or {}
        out.append(
            {
                "prompt": q.get("problem"),
                "completions": steps,
                "labels": labels,
                "reference_answer": q.get("ground_truth_answer"),
            }
        )
    return _stepwise(out, with_answer=True)


# --------------------------------------------------------------------------------------------------------
# openr
# --------------------------------------------------------------------------------------------------------
def to_openr(df: pl.DataFrame, *, step_tag: str = OPENR_STEP_TAG, neutral: Neutral = "bad") -> pl.DataFrame:
    """``question``, ``process`` (each step followed by `` {step_tag}``, joined by a space), ``label``."""
    if not step_tag:
        raise ValueError("openr export: step_tag must be a non-empty string")
    out = []
    for i, r in enumerate(_rows(df)):
        for s in r["completions"]:
            _check_no_tag(s, step_tag, "openr", r, i, "steps")
        out.append(
            {
                "question": r["prompt"],
                "process": " ".join(f"{s} {step_tag}" for s in r["completions"]),
                "label": ["+" if _binary(lab, neutral) else "-" for lab in r["labels"]],
            }
        )
    return _frame(out, "openr")


def from_openr(df: pl.DataFrame, *, step_tag: str = OPENR_STEP_TAG) -> pl.DataFrame:
    out = []
    for r in df.select("question", "process", "label").to_dicts():
        process, marks = r["process"], list(r["label"] or [])
        end = f" {step_tag}"
        if marks and not process.endswith(end):
            raise ValueError(f"openr process does not end with the step tag {step_tag!r}: {process[-40:]!r}")
        steps = process[: -len(end)].split(f"{end} ") if marks else []
        if len(steps) != len(marks):
            raise ValueError(f"openr row has {len(steps)} steps but {len(marks)} labels")
        bad = [m for m in marks if m not in ("+", "-")]
        if bad:
            raise ValueError(f"openr labels must be '+' or '-', got {bad[0]!r}")
        out.append({"prompt": r["question"], "completions": steps, "labels": [m == "+" for m in marks]})
    return _stepwise(out)


EXPORTERS: dict[str, Callable[..., Any]] = {
    "trl": to_trl,
    "math-shepherd": to_math_shepherd,
    "prm800k": to_prm800k,
    "openr": to_openr,
}
IMPORTERS: dict[str, Callable[..., pl.DataFrame]] = {
    "trl": from_trl,
    "math-shepherd": from_math_shepherd,
    "prm800k": from_prm800k,
    "openr": from_openr,
}


# --------------------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------------------
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def parse_split_ratio(text: str | None) -> list[tuple[str, float]]:
    """``"train=0.9,test=0.1"`` -> ``[("train", 0.9), ("test", 0.1)]``; None / "" -> ``[("train", 1.0)]``.
    Fractions must be positive and sum to 1 (within 1e-6)."""
    if text is None or not text.strip():
        return [("train", 1.0)]
    out: list[tuple[str, float]] = []
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not _SPLIT_NAME.match(name):
            raise ValueError(
                f"split ratio {text!r}: {part.strip()!r} is not NAME=FRACTION with NAME of letters, digits or '_' "
                "(example: train=0.9,test=0.1)"
            )
        try:
            frac = float(value)
        except ValueError:
            raise ValueError(f"split ratio {text!r}: {value.strip()!r} is not a number") from None
        if not frac > 0:
            raise ValueError(f"split ratio {text!r}: fraction of {name!r} must be > 0, got {frac}")
        if name in dict(out):
            raise ValueError(f"split ratio {text!r}: split {name!r} given twice")
        out.append((name, frac))
    total = sum(f for _, f in out)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split ratio {text!r}: fractions sum to {total:g}, expected 1")
    return out


def _unit(problem_id: str) -> float:
    return int.from_bytes(hashlib.sha256(problem_id.encode()).digest()[:8], "big") / 2**64


def split_of(problem_id: str, ratios: list[tuple[str, float]]) -> str:
    """The split of one problem: a fixed point in [0, 1) from sha256(problem_id), cut by cumulative ratios."""
    u, acc = _unit(problem_id), 0.0
    for name, frac in ratios:
        acc += frac
        if u < acc:
            return name
    return ratios[-1][0]


def assign_splits(df: pl.DataFrame, ratios: list[tuple[str, float]]) -> dict[str, pl.DataFrame]:
    """Rows of ``df`` per split (every split of ``ratios`` present, possibly empty), by ``problem_id``."""
    if len(ratios) == 1:
        return {ratios[0][0]: df}
    if "problem_id" not in df.columns:
        raise ValueError("splitting needs the problem_id column")
    ids = df.get_column("problem_id").unique().to_list()
    mapping = pl.DataFrame(
        {"problem_id": ids, "__split": [split_of(str(p), ratios) for p in ids]},
        schema={"problem_id": df.schema["problem_id"], "__split": pl.String},
    )
    tagged = df.join(mapping, on="problem_id", how="left", maintain_order="left")
    return {name: tagged.filter(pl.col("__split") == name).drop("__split") for name, _ in ratios}


# --------------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------------
def hub_file_name(fmt: str, split: str, parquet_only: bool = False) -> str:
    """Path of one split of one format, relative to the export root (the Hub's shard naming)."""
    ext = "jsonl" if fmt == "prm800k" and not parquet_only else "parquet"
    return f"{fmt}/{split}-00000-of-00001.{ext}"


def task_name(config: dict[str, Any] | None) -> str:
    """Math-Shepherd ``task`` from a run config's ``source`` (hub dataset name, file stem, or 'builtin')."""
    src = (config or {}).get("source") or {}
    kind = src.get("kind")
    if kind == "hf" and src.get("dataset"):
        return str(src["dataset"]).rstrip("/").split("/")[-1]
    if kind == "file" and src.get("path"):
        return Path(str(src["path"])).name.split(".")[0] or "file"
    return str(kind or "steplabel")


def export_frame(df: pl.DataFrame, fmt: str, **options: Any) -> pl.DataFrame | list[dict[str, Any]]:
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return EXPORTERS[fmt](df, **options)


def _write(data: pl.DataFrame | list[dict[str, Any]], fmt: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".jsonl":
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in data:  # type: ignore[union-attr]
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    else:
        if isinstance(data, list):
            table = pa.Table.from_pylist(data, schema=ARROW_SCHEMAS[fmt])
        else:
            table = data.to_arrow().cast(ARROW_SCHEMAS[fmt])
        pq.write_table(table, tmp, compression="zstd", row_group_size=10_000)
    tmp.replace(path)


def with_searched_paths(df: pl.DataFrame) -> pl.DataFrame:
    """Add one example per path an OmegaPRM search labelled (``labeler_details.paths``), besides the solution.

    This is where the tree search's data volume comes from: every searched path is a labelled sequence of
    steps from the same question. A path equal to its row's own steps and labels is not repeated. Rows
    without paths pass through unchanged; ``labeler_details`` is dropped from the result.
    """
    extra = []
    for row in df.iter_rows(named=True):
        details = json.loads(row["labeler_details"]) if row.get("labeler_details") else {}
        for index, path in enumerate(details.get("paths") or []):
            steps, labels = list(path["steps"]), [bool(v) for v in path["labels"]]
            if steps == list(row["completions"]) and labels == list(row["labels"]):
                continue
            extra.append({**{k: row[k] for k in df.columns if k != "labeler_details"},
                          "solution_id": f"{row['solution_id']}/path{index}", "completions": steps, "labels": labels})
    base = df.drop("labeler_details")
    if not extra:
        return base
    return pl.concat([base, pl.DataFrame(extra, schema=base.schema)], how="vertical")


def export_version(
    store: Any,
    version: str | None,
    fmt: str = DEFAULT_FORMAT,
    out: str | Path = ".",
    split_ratio: str | list[tuple[str, float]] | None = None,
    *,
    parquet_only: bool = False,
    searched_paths: bool = False,
    **options: Any,
) -> list[Path]:
    """Export one format of ``version`` (default latest) of ``store`` under ``out``; return the files written.

    Splits with no row are not written (unless every split is empty: then the first one is, so the export
    always has a file). ``parquet_only`` writes prm800k as Parquet too (same records, nested columns), for a Hub
    repo: ``datasets`` reads every config of a repo with ONE builder, so JSONL next to Parquet would not load.
    ``options`` go to the exporter (``neutral``, ``stop_at_first_error``, ``step_tag``,
    ``task``; Math-Shepherd's ``task`` defaults to :func:`task_name` of the version's config).
    ``searched_paths`` adds OmegaPRM's searched paths as examples (:func:`with_searched_paths`)."""
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    ratios = parse_split_ratio(split_ratio) if split_ratio is None or isinstance(split_ratio, str) else split_ratio
    manifest = store.manifest(version)
    extra = ["reference_answer", "labeler", "created_at"] if fmt == "prm800k" else []
    columns = [*_SOURCE_COLUMNS, *extra, *(["labeler_details"] if searched_paths else [])]
    df = store.scan("step_labels", manifest.version).select(*columns).collect()
    if searched_paths:
        df = with_searched_paths(df)
    if fmt == "math-shepherd":
        options.setdefault("task", task_name(manifest.config))
    parts = assign_splits(df, ratios)
    nonempty = {k: v for k, v in parts.items() if v.height}
    if not nonempty:
        first = ratios[0][0]
        nonempty = {first: parts[first]}
    written = []
    for split, part in nonempty.items():
        path = Path(out) / hub_file_name(fmt, split, parquet_only)
        _write(export_frame(part, fmt, **options), fmt, path)
        written.append(path)
    return written
