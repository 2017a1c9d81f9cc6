"""openr (``preprocess`` output, its ``ConvertedItem``): ``question: string``, ``process: string``,
``label: list<string>``.

``process`` = every step followed by `` {step_tag}``, joined by a space (openr writes
``f" {step_tag} ".join(steps + [""]).strip(" ")``); the default tag ``"\\n\\n\\n\\n\\n"`` is openr's CLI
default. ``label`` holds ``+`` / ``-`` per step. openr writes a JSON array of these items; we write the same
columns as Parquet.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa

from steplabel.storage.exporters.base import (
    BinaryOptions,
    ExportFormat,
    Records,
    as_records,
    binary,
    check_no_tag,
    solution_rows,
    stepwise,
)

OPENR_STEP_TAG = "\n\n\n\n\n"
__all__ = ["OPENR_STEP_TAG", "OpenrOptions", "from_openr", "to_openr"]

SCHEMA = pa.schema([("question", pa.string()), ("process", pa.string()), ("label", pa.list_(pa.string()))])


class OpenrOptions(BinaryOptions):
    """``neutral``: what a null label becomes; ``step_tag``: the tag after every step."""

    step_tag: str = OPENR_STEP_TAG


def _records(df: pl.DataFrame, opts: OpenrOptions) -> Records:
    if not opts.step_tag:
        raise ValueError("openr export: step_tag must be a non-empty string")
    out = []
    for i, r in enumerate(solution_rows(df)):
        for s in r["completions"]:
            check_no_tag(s, opts.step_tag, "openr", r, i, "steps")
        out.append(
            {
                "question": r["prompt"],
                "process": " ".join(f"{s} {opts.step_tag}" for s in r["completions"]),
                "label": ["+" if binary(lab, opts.neutral) else "-" for lab in r["labels"]],
            }
        )
    return out


def to_openr(df: pl.DataFrame, **options: Any) -> pl.DataFrame:
    """openr rows of ``step_labels`` rows (options: :class:`OpenrOptions`)."""
    return pl.from_arrow(FORMAT.table(df, **options))  # type: ignore[return-value]


def from_openr(data: pl.DataFrame | Records, *, step_tag: str = OPENR_STEP_TAG) -> pl.DataFrame:
    """``prompt``, ``completions``, ``labels`` of openr items (a DataFrame, or the JSON array's dicts)."""
    out = []
    end = f" {step_tag}"
    for r in as_records(data, ["question", "process", "label"]):
        process, marks = r["process"], list(r["label"] or [])
        if marks and not process.endswith(end):
            raise ValueError(f"openr process does not end with the step tag {step_tag!r}: {process[-40:]!r}")
        steps = process[: -len(end)].split(f"{end} ") if marks else []
        if len(steps) != len(marks):
            raise ValueError(f"openr row has {len(steps)} steps but {len(marks)} labels")
        bad = [m for m in marks if m not in ("+", "-")]
        if bad:
            raise ValueError(f"openr labels must be '+' or '-', got {bad[0]!r}")
        out.append({"prompt": r["question"], "completions": steps, "labels": [m == "+" for m in marks]})
    return stepwise(out)


FORMAT = ExportFormat(
    name="openr",
    description=(
        "openr (`preprocess` ConvertedItem): `question`, `process` = each step followed by the step tag "
        '"\\n\\n\\n\\n\\n", joined by a space; `label: list<string>` of `+` / `-`.'
    ),
    options=OpenrOptions,
    records=_records,
    schema=lambda opts: SCHEMA,
    read=from_openr,
)
