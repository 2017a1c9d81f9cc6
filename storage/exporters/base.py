"""What every export format shares: its registry entry, option parsing, reading ``step_labels`` rows,
problem-level splits, and writing one split as the file the Hugging Face Hub expects.

A format module (``trl.py`` ...) builds plain records from ``step_labels`` rows and declares their Arrow
schema; this module turns them into Parquet or JSON lines, so every format is written the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from steplabel.storage.exporters import DEFAULT_FORMAT, get_format
from steplabel.storage.strict import StrictConfig

__all__ = [
    "BinaryOptions",
    "ExportFormat",
    "ExportOptions",
    "SOURCE_COLUMNS",
    "assign_splits",
    "export_version",
    "file_name",
    "parse_split_ratio",
    "split_of",
    "with_searched_paths",
]

Neutral = Literal["bad", "good"]
Records = list[dict[str, Any]]

#: The step_labels columns every export reads (the format's own ``columns`` come on top).
SOURCE_COLUMNS = ("problem_id", "solution_id", "prompt", "completions", "labels")


class ExportOptions(StrictConfig):
    """Options of one format; a format's own options subclass this."""


class BinaryOptions(ExportOptions):
    """Options of the formats whose labels are binary (a null label must become good or bad)."""

    neutral: Neutral = "bad"


@dataclass(frozen=True)
class ExportFormat:
    """One export format: how to build its records, their Arrow schema, and how to read them back.

    ``records(df, options)`` -> one dict per exported example; ``schema(options)`` -> their Arrow schema
    (plain ``string`` / ``list``, as the Hub's own datasets use); ``read`` -> the importer, giving back
    ``prompt``, ``completions``, ``labels``; ``columns`` -> the step_labels columns ``records`` reads besides
    :data:`SOURCE_COLUMNS`; ``config_defaults(run_config)`` -> option defaults taken from the version's run
    config; ``jsonl`` -> the native file is JSON lines (else Parquet); ``description`` -> one paragraph for
    the dataset card and the docs."""

    name: str
    description: str
    options: type[ExportOptions]
    records: Callable[[pl.DataFrame, Any], Records]
    schema: Callable[[Any], pa.Schema]
    read: Callable[..., pl.DataFrame]
    columns: tuple[str, ...] = ()
    config_defaults: Callable[[dict[str, Any]], dict[str, Any]] = field(default=lambda config: {})  # none by default
    jsonl: bool = False

    def parse_options(self, options: dict[str, Any]) -> Any:
        """Validated options; a bad option is one ValueError line naming the format and the field."""
        try:
            return self.options(**options)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "options"
            raise ValueError(f"{self.name} export: option {where}: {first['msg']}") from None

    def table(self, df: pl.DataFrame, **options: Any) -> pa.Table:
        """The format's rows of ``df`` as an Arrow table with the exact schema."""
        opts = self.parse_options(options)
        return pa.Table.from_pylist(self.records(df, opts), schema=self.schema(opts))


# --------------------------------------------------------------------------------------------------------
# reading step_labels rows
# --------------------------------------------------------------------------------------------------------
def solution_rows(df: pl.DataFrame, extra: Iterable[str] = ()) -> Records:
    """The rows of ``df`` as dicts (``prompt``, ``completions``, ``labels`` and ``extra``), each checked to have
    one label per step; a missing column or a length mismatch is a ValueError naming the solution."""
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
                f"solution {who(row, i)}: {len(steps)} completions but {len(labels)} labels; "
                "every step needs exactly one label"
            )
        row["completions"], row["labels"] = steps, labels
    return rows


def who(row: dict[str, Any], i: int) -> str:
    """How an error names a solution: its id, else its position."""
    return repr(row.get("solution_id")) if row.get("solution_id") is not None else f"at row {i}"


def binary(label: bool | None, neutral: Neutral) -> bool:
    """A step label as a bool: a null (undecided) label becomes ``neutral``."""
    return (neutral == "good") if label is None else bool(label)


def check_no_tag(text: str | None, tag: str, fmt: str, row: dict[str, Any], i: int, what: str) -> None:
    """Refuse text that holds the format's step tag: the exported text could not be split back into steps."""
    if text is not None and tag in text:
        raise ValueError(
            f"{fmt} export: the {what} of solution {who(row, i)} contains the step tag {tag!r}, so the "
            "exported text could not be parsed back into steps; remove it or choose another tag"
        )


def stepwise(records: Records, extra: dict[str, Any] | None = None) -> pl.DataFrame:
    """What importers return: ``prompt``, ``completions``, ``labels`` (+ ``extra`` columns)."""
    schema: dict[str, Any] = {"prompt": pl.String, "completions": pl.List(pl.String), "labels": pl.List(pl.Boolean)}
    return pl.DataFrame(records, schema={**schema, **(extra or {})})


def as_records(data: pl.DataFrame | Iterable[dict[str, Any]], columns: Iterable[str]) -> Records:
    """Importer input: a DataFrame (as read from a file) or the records themselves."""
    if isinstance(data, pl.DataFrame):
        return data.select(list(columns)).to_dicts()
    return list(data)


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
    """The split of one problem: a fixed point in [0, 1) from sha256(problem_id), cut by cumulative ratios,
    so the assignment depends neither on the row order nor on the other problems."""
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
# searched paths
# --------------------------------------------------------------------------------------------------------
#: per-step columns a searched path carries itself (its key in ``labeler_details.paths``)
_PATH_STEP_COLUMNS = {"soft_labels": "soft", "mc_scores": "mc"}


def with_searched_paths(df: pl.DataFrame) -> pl.DataFrame:
    """Add one example per path an OmegaPRM search labelled (``labeler_details.paths``), besides the solution.

    This is where the tree search's data volume comes from: every searched path is a labelled sequence of
    steps from the same question. A path equal to its row's own steps and labels is not repeated. A path's
    ``soft_labels`` / ``mc_scores`` are its own; its ``final_answer`` is unknown (null), since the path is not
    the sampled solution. Rows without paths pass through unchanged; ``labeler_details`` is dropped."""
    extra = []
    for row in df.iter_rows(named=True):
        details = json.loads(row["labeler_details"]) if row.get("labeler_details") else {}
        for index, path in enumerate(details.get("paths") or []):
            steps, labels = list(path["steps"]), [bool(v) for v in path["labels"]]
            if steps == list(row["completions"]) and labels == list(row["labels"]):
                continue
            new = {k: row[k] for k in df.columns if k != "labeler_details"}
            new.update(solution_id=f"{row['solution_id']}/path{index}", completions=steps, labels=labels)
            new.update({col: path.get(key) for col, key in _PATH_STEP_COLUMNS.items() if col in new})
            if "final_answer" in new:
                new["final_answer"] = None
            extra.append(new)
    base = df.drop("labeler_details")
    if not extra:
        return base
    return pl.concat([base, pl.DataFrame(extra, schema=base.schema)], how="vertical")


# --------------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------------
def file_name(fmt: ExportFormat, split: str, parquet_only: bool = False) -> str:
    """Path of one split of one format, relative to the export root (the Hub's shard naming)."""
    ext = "jsonl" if fmt.jsonl and not parquet_only else "parquet"
    return f"{fmt.name}/{split}-00000-of-00001.{ext}"


def write_split(fmt: ExportFormat, df: pl.DataFrame, options: dict[str, Any], path: Path) -> None:
    """Write the format's rows of ``df`` to ``path`` (JSON lines or zstd Parquet), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".jsonl":
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in fmt.records(df, fmt.parse_options(options)):
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    else:
        pq.write_table(fmt.table(df, **options), tmp, compression="zstd", row_group_size=10_000)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------------
# one format of one version
# --------------------------------------------------------------------------------------------------------
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
    """Export one format of ``version`` (default latest) of ``store`` under ``out``; return the files written,
    ``OUT/<format>/<split>-00000-of-00001.<parquet|jsonl>``.

    Splits with no row are not written (unless every split is empty: then the first one is, so the export
    always has a file). ``parquet_only`` writes JSON-lines formats as Parquet too (same records, nested
    columns), for a Hub repo: ``datasets`` reads every config of a repo with ONE builder, so JSONL next to
    Parquet would not load. ``options`` go to the format (its ``options`` model); options the caller leaves
    out default from the version's run config where the format says so (``ExportFormat.config_defaults``).
    ``searched_paths`` adds OmegaPRM's searched paths as examples (:func:`with_searched_paths`)."""
    spec = get_format(fmt)
    ratios = parse_split_ratio(split_ratio) if split_ratio is None or isinstance(split_ratio, str) else split_ratio
    manifest = store.manifest(version)
    options = {**spec.config_defaults(manifest.config or {}), **options}
    spec.parse_options(options)  # a bad option fails before anything is read
    columns = [*SOURCE_COLUMNS, *spec.columns, *(["labeler_details"] if searched_paths else [])]
    df = store.scan("step_labels", manifest.version).select(columns).collect()
    if searched_paths:
        df = with_searched_paths(df)
    parts = assign_splits(df, ratios)
    nonempty = {k: v for k, v in parts.items() if v.height}
    if not nonempty:
        first = ratios[0][0]
        nonempty = {first: parts[first]}
    written = []
    for split, part in nonempty.items():
        path = Path(out) / file_name(spec, split, parquet_only)
        write_split(spec, part, options, path)
        written.append(path)
    return written
