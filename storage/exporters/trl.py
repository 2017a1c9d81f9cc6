"""TRL stepwise supervision (``trl.experimental.prm.PRMTrainer``; ``trl-lib/math_shepherd``, ``trl-lib/prm800k``).

One row per solution: ``prompt: string``, ``completions: list<string>`` (the steps, no separators: TRL
appends its ``step_separator``), ``labels: list<bool>`` (never floats: ``tokenize_row`` does ``int(label)``).

Soft targets: ``soft_labels=True`` adds ``soft_labels: list<float32>``, the labeler's soft target of every step
(OmegaPRM soft/pairwise and Math-Shepherd soft: the MC value; SCAN: min(c/SC, 1); RPE: min(ratio, 1)). SCAN
and OmegaPRM train on these with a soft-target BCE loss; TRL's own PRMTrainer ignores the column (its map
drops every column it does not read). ``steplabel export`` adds it by default when the version's labeler
runs in a soft mode (:func:`soft_targets`).
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa

from steplabel.storage.exporters.base import BinaryOptions, ExportFormat, Records, binary, solution_rows, stepwise, who

__all__ = ["TrlOptions", "from_trl", "soft_targets", "to_trl"]

SCHEMA = pa.schema([("prompt", pa.string()), ("completions", pa.list_(pa.string())), ("labels", pa.list_(pa.bool_()))])
SOFT_FIELD = pa.field("soft_labels", pa.list_(pa.float32()))

#: labelers whose soft_labels carry more than the hard label (a 0/1 copy of it is not worth a column)
_ALWAYS_SOFT = {"scan", "rpe"}
_SOFT_MODES = {"soft", "pairwise"}


class TrlOptions(BinaryOptions):
    """``neutral``: what a null label becomes; ``soft_labels``: add the soft-target column."""

    soft_labels: bool = False


def soft_targets(config: dict[str, Any] | None) -> bool:
    """Whether a run config's labeler produces soft targets: SCAN and RPE always, OmegaPRM and Math-Shepherd
    in ``label_mode`` soft (or pairwise); hard modes store only a 0/1 copy of the label."""
    labeler = (config or {}).get("labeler") or {}
    return labeler.get("name") in _ALWAYS_SOFT or labeler.get("label_mode") in _SOFT_MODES


def _records(df: pl.DataFrame, opts: TrlOptions) -> Records:
    out = []
    for i, r in enumerate(solution_rows(df, ["soft_labels"] if opts.soft_labels else [])):
        rec = {
            "prompt": r["prompt"],
            "completions": list(r["completions"]),
            "labels": [binary(lab, opts.neutral) for lab in r["labels"]],
        }
        if opts.soft_labels:
            soft = r["soft_labels"]
            if soft is None or len(soft) != len(rec["labels"]) or any(v is None for v in soft):
                raise ValueError(
                    f"trl export: solution {who(r, i)} has no soft target for every step "
                    f"({soft!r}); export without soft labels"
                )
            rec["soft_labels"] = list(soft)
        out.append(rec)
    return out


def _schema(opts: TrlOptions) -> pa.Schema:
    return SCHEMA.append(SOFT_FIELD) if opts.soft_labels else SCHEMA


def to_trl(df: pl.DataFrame, **options: Any) -> pl.DataFrame:
    """TRL rows of ``step_labels`` rows (options: :class:`TrlOptions`)."""
    return pl.from_arrow(FORMAT.table(df, **options))  # type: ignore[return-value]


def from_trl(df: pl.DataFrame) -> pl.DataFrame:
    """``prompt``, ``completions``, ``labels`` of TRL rows (a ``soft_labels`` column is kept when present)."""
    cols = ["prompt", "completions", "labels", *(["soft_labels"] if "soft_labels" in df.columns else [])]
    extra = {"soft_labels": pl.List(pl.Float32)} if "soft_labels" in cols else None
    return stepwise(df.select(cols).to_dicts(), extra)


FORMAT = ExportFormat(
    name="trl",
    description=(
        "TRL stepwise supervision (`trl.experimental.prm.PRMTrainer`): `prompt: string`, "
        "`completions: list<string>` (the steps, no separators), `labels: list<bool>`; for labelers with soft "
        "targets (OmegaPRM soft, Math-Shepherd soft, SCAN, RPE) also `soft_labels: list<float32>`, each step's "
        "soft target, for a soft-target loss (TRL's PRMTrainer ignores it)."
    ),
    options=TrlOptions,
    records=_records,
    schema=_schema,
    read=from_trl,
    columns=("soft_labels",),
    config_defaults=lambda config: {"soft_labels": soft_targets(config)},
)
