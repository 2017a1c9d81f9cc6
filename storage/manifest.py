"""What a committed version records: the manifest model, version names, per-table stats, and the
conformance of a table to its schema before it is staged."""

from __future__ import annotations

import functools
import re
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from steplabel.storage.schema import REJECTS, SCHEMAS, STEP_LABELS

__all__ = ["Manifest", "STAT_KEYS", "ShardEntry", "conform_table", "empty_stats", "finish_stats", "manifest_summary",
           "polars_schema",
           "table_stats", "version_name", "version_number"]

_VERSION_RE = re.compile(r"^v?(\d+)$")
STAT_KEYS = ("solutions", "steps", "positive_steps", "negative_steps", "rejects", "rollouts", "tokens")


class ShardEntry(BaseModel):
    path: str  # relative to the store root
    rows: int
    bytes: int
    sha256: str
    shard_id: str
    run_id: str


class Manifest(BaseModel):
    """One committed version. ``tables`` lists every shard file of the version (not only the new ones)."""

    version: str | None = None
    parent: str | None = None
    created_at: str | None = None
    run_id: str | None = None  # the run whose commit produced this version
    run_ids: list[str] = Field(default_factory=list)  # every run committed in this version's lineage
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str | None = None
    code_version: str | None = None
    message: str = ""
    tables: dict[str, list[ShardEntry]] = Field(default_factory=dict)
    schemas: dict[str, str] = Field(default_factory=dict)  # table -> schema fingerprint
    shards: dict[str, str] = Field(default_factory=dict)  # shard_id -> run_id, every committed shard
    stats: dict[str, Any] = Field(default_factory=dict)
    #: False when ``commit`` had nothing new and returned the parent instead of creating a version.
    created: bool = Field(default=True, exclude=True)

    @property
    def number(self) -> int:
        return version_number(self.version) if self.version else 0


def version_name(n: int) -> str:
    return f"v{n:04d}"


def version_number(version: str) -> int:
    m = _VERSION_RE.match(version.strip())
    if not m:
        raise ValueError(f"not a version name: {version!r} (expected e.g. 'v0003' or 'v3')")
    return int(m.group(1))


def empty_stats() -> dict[str, Any]:
    stats: dict[str, Any] = {k: 0 for k in STAT_KEYS}
    stats["label_balance"] = None
    return stats


def finish_stats(stats: dict[str, Any]) -> dict[str, Any]:
    stats["label_balance"] = (stats["positive_steps"] / stats["steps"]) if stats["steps"] else None
    return stats


def _sum_int(arr: pa.ChunkedArray | pa.Array) -> int:
    v = pc.sum(arr).as_py()
    return int(v) if v is not None else 0


def table_stats(name: str, table: pa.Table) -> dict[str, int]:
    """Additive stats of one table of one shard (keys as in ``Manifest.stats``)."""
    out = {k: 0 for k in STAT_KEYS}
    out["rollouts"] = _sum_int(table.column("rollouts_used"))
    out["tokens"] = _sum_int(table.column("tokens_generated"))
    if name == STEP_LABELS:
        labels = table.column("labels")
        flat = pc.list_flatten(labels)
        positives = _sum_int(pc.cast(flat, pa.int64())) if len(flat) else 0
        nonnull = len(flat) - flat.null_count
        out["solutions"] = table.num_rows
        out["steps"] = len(flat)
        out["positive_steps"] = positives
        out["negative_steps"] = nonnull - positives
    elif name == REJECTS:
        out["rejects"] = table.num_rows
    return out


@functools.cache
def polars_schema(name: str) -> pl.Schema:
    return pl.from_arrow(SCHEMAS[name].empty_table()).schema


def conform_table(name: str, table: pa.Table, where: str) -> pa.Table:
    """Return ``table`` conformed to ``SCHEMAS[name]`` (columns reordered, compatible types cast)."""
    if name not in SCHEMAS:
        raise ValueError(f"unknown table {name!r} for {where}; known tables: {sorted(SCHEMAS)}")
    if isinstance(table, pl.DataFrame):
        table = table.to_arrow()
    if not isinstance(table, pa.Table):
        raise ValueError(f"table {name!r} for {where} must be a pyarrow.Table, got {type(table).__name__}")
    schema = SCHEMAS[name]
    present = set(table.column_names)
    missing = [f.name for f in schema if f.name not in present]
    if missing:
        raise ValueError(
            f"table {name!r} for {where}: missing column(s) {missing} "
            f"(expected {', '.join(f'{f.name}: {f.type}' for f in schema if f.name in missing)})"
        )
    extra = [c for c in table.column_names if c not in schema.names]
    if extra:
        raise ValueError(f"table {name!r} for {where}: unexpected column(s) {extra} not in the {name} schema")
    if table.schema.remove_metadata().equals(schema):
        return table.replace_schema_metadata(None)
    cols = []
    for field in schema:
        col = table.column(field.name)
        if not col.type.equals(field.type):
            try:
                col = col.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                raise ValueError(
                    f"table {name!r} for {where}: column {field.name!r} has type {col.type}, "
                    f"cannot cast to {field.type}: {e}"
                ) from e
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


def manifest_summary(root: str, versions: list[str], m: Manifest | None) -> dict[str, Any]:
    """What ``steplabel inspect --json`` prints for version ``m`` (None: the store has none yet)."""
    if m is None:
        out: dict[str, Any] = {"root": root, "version": None, "versions": [], **empty_stats()}
        out.update(created_at=None, config_hash=None, code_version=None, run_ids=[], shards=0, files={})
        return out
    return {
        "root": root,
        "version": m.version,
        "versions": versions,
        **empty_stats(),
        **m.stats,
        "created_at": m.created_at,
        "config_hash": m.config_hash,
        "code_version": m.code_version,
        "run_ids": m.run_ids,
        "shards": len(m.shards),
        "files": {
            name: {"files": len(es), "rows": sum(e.rows for e in es), "bytes": sum(e.bytes for e in es)}
            for name, es in m.tables.items()
        },
    }
