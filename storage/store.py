"""Versioned, content-addressed Parquet shard store (DESIGN.md section 4).

Layout under ``root``::

    shards/<sha256>.parquet                      immutable, named by the sha256 of the file bytes
    staging/<run_id>/<shard_id>.<table>.parquet  a run's finished shards, not yet visible to readers
    staging/<run_id>/<shard_id>.done            marker written last: the shard counts as staged only then
    versions/v000N.json                          manifest of version N (cumulative: every shard of the version)
    LATEST                                       text "v000N", replaced atomically after the manifest is durable
    .lock                                        file lock serialising commits

Protocol. ``stage`` writes every table of a shard (tmp + fsync + rename), then the ``.done`` marker, which
records each file's sha256, row count and stats. ``commit`` (under the lock) promotes staged files into
``shards/`` by rename, writes the next manifest (tmp + fsync + rename), swaps ``LATEST`` the same way and
only then removes the run's staging directory. A crash at any point leaves ``LATEST`` on the previous,
intact version; re-running ``commit`` finishes the job, and shards already present in the parent version
(by ``shard_id`` or by sha256) are never listed twice. Readers resolve everything through ``LATEST`` and
manifests, so they only ever see committed versions.

All filesystem access goes through :class:`LocalFS` (plain paths and ``file://`` URLs) or :class:`FsspecFS`
(any other fsspec URL: ``s3://``, ``gs://``, ``az://``, ``memory://``...); ``ShardStore(root)`` picks one from
the root. Object stores have no atomic rename and no file locks, so :class:`FsspecFS` keeps the same
guarantees differently: every file is written with one PUT (visible whole or not at all); shard files are
content-addressed and immutable, so "rename" is copy + delete; the manifest ``versions/v000N.json`` is
written with an exclusive create (``mode="xb"``, a conditional put where the backend supports it, else
check-then-write under the lock) so two writers can never both claim vN, and ``LATEST`` is overwritten only
after the manifest is read back as ours; commits are serialised by a lock object created exclusively
(``.lock``), which a waiter breaks when it is older than ``lock_stale_s`` (see :class:`RemoteLock`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import inspect
import json
import os
import random
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import filelock
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from steplabel.storage.schema import REJECTS, SCHEMAS, STEP_LABELS, schema_fingerprint

__all__ = [
    "FsspecFS",
    "LocalFS",
    "RemoteLock",
    "make_fs",
    "Manifest",
    "ShardStore",
    "StoreError",
    "PARQUET_WRITE_OPTIONS",
    "explode_steps",
    "table_stats",
]

ROW_GROUP_SIZE = 64 * 1024
_CDC_SUPPORTED = "use_content_defined_chunking" in inspect.signature(pq.ParquetWriter.__init__).parameters

#: Options used for every Parquet file the store writes (also used by the benchmark baseline).
PARQUET_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "write_page_index": True,
    "row_group_size": ROW_GROUP_SIZE,
}
if _CDC_SUPPORTED:
    PARQUET_WRITE_OPTIONS["use_content_defined_chunking"] = True

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
_VERSION_RE = re.compile(r"^v?(\d+)$")
_STAT_KEYS = ("solutions", "steps", "positive_steps", "negative_steps", "rejects", "rollouts", "tokens")


class StoreError(RuntimeError):
    """A store operation failed; the message says what and where (path)."""


# --------------------------------------------------------------------------------------------------------
# Filesystem: the only place that touches paths. LocalFS here, FsspecFS (object stores) below.
# --------------------------------------------------------------------------------------------------------
class LocalFS:
    """Local filesystem with the few primitives the store needs."""

    #: pyarrow filesystem to pass to pyarrow / polars readers (None = local paths).
    arrow_filesystem = None
    #: the file lock is exclusive, so a manifest above LATEST is always a dead commit's: overwrite it.
    exclusive_manifests = False

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def sha256(self, path: str) -> str:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    def fsync_file(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def fsync_dir(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # pragma: no cover - platforms without directory fds
            return
        try:
            os.fsync(fd)
        except OSError:  # pragma: no cover
            pass
        finally:
            os.close(fd)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def tmp_path(self, path: str) -> str:
        return f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` durably: tmp file, fsync, rename, fsync the directory."""
        tmp = self.tmp_path(path)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            self.remove(tmp)
            raise
        self.fsync_dir(os.path.dirname(path) or ".")

    def write_parquet_atomic(self, table: pa.Table, path: str) -> str:
        """Write ``table`` as Parquet to ``path`` (tmp + fsync + rename); return the file's sha256."""
        tmp = self.tmp_path(path)
        try:
            pq.write_table(table, tmp, **PARQUET_WRITE_OPTIONS)
            sha = self.sha256(tmp)
            self.fsync_file(tmp)
            os.replace(tmp, path)
        except BaseException:
            self.remove(tmp)
            raise
        return sha

    def lock(self, path: str, timeout: float) -> filelock.BaseFileLock:
        return filelock.FileLock(path, timeout=timeout)


# --------------------------------------------------------------------------------------------------------
# Object stores (and any other fsspec filesystem)
# --------------------------------------------------------------------------------------------------------
def is_local_root(root: str | os.PathLike) -> bool:
    """True for plain paths and ``file://`` URLs (served by :class:`LocalFS`)."""
    text = os.fspath(root)
    if "://" not in text:
        return True
    return text.split("://", 1)[0].lower() in ("file", "local")


def local_path(root: str | os.PathLike) -> str:
    """The filesystem path of a plain path or ``file://`` URL."""
    text = os.fspath(root)
    if "://" in text:
        text = text.split("://", 1)[1]
    return text


class RemoteLock:
    """A lock for filesystems without file locks: a lock object created with an exclusive create.

    ``acquire`` tries to create ``path`` exclusively, containing the owner (host, pid, token) and the time;
    while someone else holds it, it polls (with jitter) until ``timeout`` and then raises
    ``filelock.Timeout``. A lock object older than ``stale_s`` belongs to a writer that died without
    releasing it: it is removed and the create retried. ``stale_s`` must exceed the longest commit (a
    commit only moves staged files and writes two small objects: seconds), and the writers' clocks must
    agree to well within it. ``release`` removes the object only if it is still ours.
    """

    def __init__(self, fs: "FsspecFS", path: str, timeout: float, stale_s: float, poll_s: float = 0.1):
        self.fs = fs
        self.path = path
        self.timeout = timeout
        self.stale_s = stale_s
        self.poll_s = poll_s
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.acquired_at: float | None = None

    def _holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.read_bytes(self.path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: treated as stale once old enough by mtime

    def _age(self, holder: dict[str, Any]) -> float:
        created = holder.get("created")
        if isinstance(created, (int, float)):
            return time.time() - created
        mtime = self.fs.mtime(self.path)
        return time.time() - mtime if mtime is not None else 0.0

    def acquire(self) -> "RemoteLock":
        deadline = time.monotonic() + self.timeout
        while True:
            now = time.time()
            body = json.dumps({"owner": self.token, "created": now, "stale_after_s": self.stale_s}).encode()
            try:
                self.fs.write_exclusive(self.path, body)
                holder = self._holder()
                if holder is not None and holder.get("owner") == self.token:
                    # the store's clock (the lock object's mtime) when the filesystem reports one, so it
                    # compares with other objects' mtimes without client clock skew
                    self.acquired_at = self.fs.mtime(self.path) or now
                    return self
            except FileExistsError:
                holder = self._holder()
                if holder is not None and self._age(holder) > self.stale_s:
                    self.fs.remove(self.path)  # the writer died holding it
                    time.sleep(random.uniform(0, self.poll_s))
                    continue
            if time.monotonic() >= deadline:
                raise filelock.Timeout(self.path)
            time.sleep(self.poll_s * random.uniform(0.5, 1.5))

    def release(self) -> None:
        holder = self._holder()
        if holder is not None and holder.get("owner") == self.token:
            self.fs.remove(self.path)
        self.acquired_at = None

    def __enter__(self) -> "RemoteLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class FsspecFS:
    """The :class:`LocalFS` primitives on any fsspec filesystem (S3, GCS, Azure, memory, ...).

    Paths are full URLs (``s3://bucket/data/shards/<sha>.parquet``), so messages name real locations.
    On object stores a single PUT is atomic, so ``write_atomic`` and ``write_parquet_atomic`` write the
    final key directly; on a local-like fsspec filesystem they write a temporary file and rename it.
    ``replace`` is copy + delete on object stores (only used for immutable, content-addressed shards).
    ``fsync_*`` are no-ops. ``exclusive_manifests`` tells the store to claim each manifest exclusively.
    """

    exclusive_manifests = True

    def __init__(self, fs: Any = None, *, protocol: str | None = None, lock_stale_s: float = 300.0,
                 **storage_options: Any):
        import fsspec

        if fs is None:
            if protocol is None:
                raise ValueError("FsspecFS needs an fsspec filesystem or a protocol")
            fs = fsspec.filesystem(protocol, **storage_options)
        self.fs = fs
        self.storage_options = storage_options
        self.lock_stale_s = lock_stale_s
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        self.protocol = protocols[0]
        self._local = bool({"file", "local"} & set(protocols))
        self._arrow_fs = None

    @classmethod
    def from_url(cls, url: str, *, lock_stale_s: float = 300.0, **storage_options: Any) -> "FsspecFS":
        import fsspec

        fs, _ = fsspec.url_to_fs(url, **storage_options)
        return cls(fs, lock_stale_s=lock_stale_s, **storage_options)

    def __repr__(self) -> str:
        return f"FsspecFS({self.protocol!r})"

    # pyarrow view of the same filesystem, for readers (pyarrow.dataset / polars)
    @property
    def arrow_filesystem(self):  # type: ignore[override]
        if self._arrow_fs is None:
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            self._arrow_fs = PyFileSystem(FSSpecHandler(self.fs))
        return self._arrow_fs

    def strip(self, path: str) -> str:
        """``path`` without its protocol, as the fsspec / pyarrow filesystem objects want it."""
        return self.fs._strip_protocol(path)

    def _fresh(self, path: str) -> None:
        # listings may be cached (s3fs, gcsfs); another writer may have changed them
        try:
            self.fs.invalidate_cache(self.strip(path))
        except Exception:  # noqa: BLE001 - best effort, some filesystems have no cache
            pass

    def join(self, *parts: str) -> str:
        head, *rest = parts
        out = head.rstrip("/")
        for part in rest:
            out = f"{out}/{part.strip('/')}"
        return out

    def exists(self, path: str) -> bool:
        self._fresh(path)
        return self.fs.exists(path)

    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)  # a no-op on object stores

    def listdir(self, path: str) -> list[str]:
        self._fresh(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        base = self.strip(path).rstrip("/")
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != base})

    def size(self, path: str) -> int:
        return int(self.fs.size(path))

    def mtime(self, path: str) -> float | None:
        try:
            return self.fs.modified(path).timestamp()
        except (NotImplementedError, OSError, AttributeError):
            return None

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def fsync_file(self, path: str) -> None:
        pass

    def fsync_dir(self, path: str) -> None:
        pass

    def replace(self, src: str, dst: str) -> None:
        if self._local:
            self.fs.mv(src, dst)
            return
        self.fs.copy(src, dst)
        self.fs.rm_file(src)

    def remove(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    def rmtree(self, path: str) -> None:
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        self._fresh(path)

    def tmp_path(self, path: str) -> str:
        return f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def _put(self, path: str, data: bytes) -> None:
        if not self._local:
            self.fs.pipe_file(path, data)  # one PUT: atomic on object stores
            return
        tmp = self.tmp_path(path)
        try:
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        except BaseException:
            self.remove(tmp)
            raise

    def write_atomic(self, path: str, data: bytes) -> None:
        self._put(path, data)

    def write_exclusive(self, path: str, data: bytes) -> None:
        """Create ``path`` with ``data``; ``FileExistsError`` if it exists. Uses ``mode="xb"`` (a
        conditional put on backends that support it); otherwise check-then-write (safe under the lock)."""
        self._fresh(path)
        if self._local:  # tmp + hard link: atomic and exclusive, never a half-written file
            tmp = self.tmp_path(path)
            self.fs.pipe_file(tmp, data)
            try:
                os.link(self.strip(tmp), self.strip(path))
            finally:
                self.remove(tmp)
            return
        try:
            with self.fs.open(path, "xb") as f:
                f.write(data)
            return
        except FileExistsError:
            raise
        except (ValueError, NotImplementedError, TypeError):
            pass  # the backend knows no "x" mode
        if self.fs.exists(path):
            raise FileExistsError(path)
        self.fs.pipe_file(path, data)

    def write_parquet_atomic(self, table: pa.Table, path: str) -> str:
        """Write ``table`` as Parquet to ``path`` in one put; return the file's sha256."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **PARQUET_WRITE_OPTIONS)
        data = sink.getvalue().to_pybytes()
        self._put(path, data)
        return hashlib.sha256(data).hexdigest()

    def lock(self, path: str, timeout: float) -> RemoteLock:
        return RemoteLock(self, path, timeout=timeout, stale_s=self.lock_stale_s)


def make_fs(root: str | os.PathLike, **storage_options: Any) -> LocalFS | FsspecFS:
    """:class:`LocalFS` for plain paths and ``file://`` URLs, :class:`FsspecFS` for any other URL."""
    if is_local_root(root):
        return LocalFS()
    return FsspecFS.from_url(os.fspath(root), **storage_options)


# --------------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------------
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
        return _version_number(self.version) if self.version else 0


def _version_name(n: int) -> str:
    return f"v{n:04d}"


def _version_number(version: str) -> int:
    m = _VERSION_RE.match(version.strip())
    if not m:
        raise ValueError(f"not a version name: {version!r} (expected e.g. 'v0003' or 'v3')")
    return int(m.group(1))


def _empty_stats() -> dict[str, Any]:
    stats: dict[str, Any] = {k: 0 for k in _STAT_KEYS}
    stats["label_balance"] = None
    return stats


def _finish_stats(stats: dict[str, Any]) -> dict[str, Any]:
    stats["label_balance"] = (stats["positive_steps"] / stats["steps"]) if stats["steps"] else None
    return stats


def _sum_int(arr: pa.ChunkedArray | pa.Array) -> int:
    v = pc.sum(arr).as_py()
    return int(v) if v is not None else 0


def table_stats(name: str, table: pa.Table) -> dict[str, int]:
    """Additive stats of one table of one shard (keys as in ``Manifest.stats``)."""
    out = {k: 0 for k in _STAT_KEYS}
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
def _polars_schema(name: str) -> pl.Schema:
    return pl.from_arrow(SCHEMAS[name].empty_table()).schema


def _validate(name: str, table: pa.Table, where: str) -> pa.Table:
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


# --------------------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------------------
class ShardStore:
    """Versioned shard store rooted at ``root`` (see the module docstring for layout and protocol)."""

    def __init__(
        self,
        root: str | Path,
        *,
        fs: LocalFS | FsspecFS | None = None,
        lock_timeout: float = 600.0,
        storage_options: dict[str, Any] | None = None,
    ):
        """``root``: a path, a ``file://`` URL (both :class:`LocalFS`) or any fsspec URL such as
        ``s3://bucket/prefix`` (:class:`FsspecFS`; ``storage_options`` go to the fsspec filesystem,
        credentials otherwise come from the usual environment variables / config files)."""
        if fs is None:
            fs = make_fs(root, **(storage_options or {}))
        self.fs = fs
        text = os.fspath(root)
        self.root = local_path(text) if isinstance(fs, LocalFS) and is_local_root(text) else text.rstrip("/")
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"ShardStore({self.root!r})"

    # ---- paths (the only place that knows the layout) -------------------------------------------------
    def _p(self, *rel: str) -> str:
        return self.fs.join(self.root, *rel)

    def _shard_rel(self, sha: str) -> str:
        return f"shards/{sha}.parquet"

    def _staging_dir(self, run_id: str) -> str:
        return self._p("staging", _check_id("run_id", run_id))

    def _staged_file(self, run_id: str, shard_id: str, table: str) -> str:
        return self.fs.join(self._staging_dir(run_id), f"{_check_id('shard_id', shard_id)}.{table}.parquet")

    def _marker(self, run_id: str, shard_id: str) -> str:
        return self.fs.join(self._staging_dir(run_id), f"{_check_id('shard_id', shard_id)}.done")

    def _version_file(self, version: str) -> str:
        return self._p("versions", f"{version}.json")

    @property
    def _latest_file(self) -> str:
        return self._p("LATEST")

    @property
    def _lock_file(self) -> str:
        return self._p(".lock")

    # ---- staging ----------------------------------------------------------------------------------------
    def stage(self, run_id: str, shard_id: str, tables: dict[str, pa.Table]) -> None:
        """Write a finished shard's tables to the run's staging area. Idempotent: a shard whose ``.done``
        marker exists is left alone; a shard without one (crash mid-shard) is rewritten from scratch."""
        marker = self._marker(run_id, shard_id)
        if self.fs.exists(marker):
            return
        where = f"run {run_id!r} shard {shard_id!r} ({self._staging_dir(run_id)})"
        if not tables:
            raise ValueError(f"stage: no tables given for {where}")
        conformed = {name: _validate(name, t, where) for name, t in tables.items()}
        for name, t in conformed.items():
            bad = pc.filter(t.column("shard_id"), pc.not_equal(t.column("shard_id"), shard_id))
            if len(bad):
                raise ValueError(
                    f"table {name!r} for {where}: {len(bad)} row(s) have shard_id {bad[0].as_py()!r}, "
                    f"expected {shard_id!r}"
                )
        self.fs.makedirs(self._staging_dir(run_id))
        files: dict[str, Any] = {}
        for name, t in conformed.items():
            path = self._staged_file(run_id, shard_id, name)
            try:
                sha = self.fs.write_parquet_atomic(t, path)
            except OSError as e:
                raise StoreError(f"stage: writing table {name!r} of {where} to {path} failed: {e}") from e
            files[name] = {
                "sha256": sha,
                "rows": t.num_rows,
                "bytes": self.fs.size(path),
                "stats": table_stats(name, t),
            }
        info = {"run_id": run_id, "shard_id": shard_id, "tables": files}
        self.fs.write_atomic(marker, json.dumps(info, indent=1).encode())

    def is_staged(self, run_id: str, shard_id: str) -> bool:
        return self.fs.exists(self._marker(run_id, shard_id))

    def staged_shards(self, run_id: str) -> list[str]:
        return [n[: -len(".done")] for n in self.fs.listdir(self._staging_dir(run_id)) if n.endswith(".done")]

    def read_staged(self, run_id: str, shard_id: str, table: str) -> pa.Table:
        """One table of a staged shard (for a later stage of the same run to finish it)."""
        if not self.is_staged(run_id, shard_id):
            raise StoreError(f"shard {shard_id} of run {run_id} is not staged in {self.root}")
        return pq.read_table(pa.BufferReader(self.fs.read_bytes(self._staged_file(run_id, shard_id, table))))

    def discard_staging(self, run_id: str) -> None:
        """Drop a run's staging area (intermediate work that will never be committed)."""
        self._cleanup_staging(run_id)

    def record_run_config(self, run_id: str, config: dict[str, Any]) -> None:
        """Keep a run's resolved config beside its staged shards, so ``steplabel run --resume`` needs only the id."""
        _check_id("run_id", run_id)
        self.fs.makedirs(self._staging_dir(run_id))
        self.fs.write_atomic(self.fs.join(self._staging_dir(run_id), "run.json"),
                             json.dumps(config, sort_keys=True).encode())

    def staged_run_config(self, run_id: str) -> dict[str, Any] | None:
        """The config recorded for an uncommitted run, or None when no such run is staged here."""
        path = self.fs.join(self._staging_dir(run_id), "run.json")
        if not self.fs.exists(path):
            return None
        return json.loads(self.fs.read_bytes(path))

    def staged_runs(self) -> list[str]:
        staging = self._p("staging")
        return sorted(self.fs.listdir(staging)) if self.fs.exists(staging) else []

    def _read_marker(self, run_id: str, shard_id: str) -> dict[str, Any]:
        path = self._marker(run_id, shard_id)
        try:
            return json.loads(self.fs.read_bytes(path))
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot read staging marker {path}: {e}") from e

    # ---- commit -----------------------------------------------------------------------------------------
    def commit(
        self,
        run_id: str,
        *,
        config: dict[str, Any],
        config_hash: str,
        code_version: str,
        message: str = "",
    ) -> Manifest:
        """Promote the run's staged shards into a new version. Returns the new manifest, or the parent
        (with ``created=False``) when the run has nothing that is not already committed."""
        self.fs.makedirs(self.root)
        lock = self.fs.lock(self._lock_file, self.lock_timeout)
        try:
            with lock:
                self._held_lock = lock
                try:
                    return self._commit_locked(run_id, config, config_hash, code_version, message)
                finally:
                    self._held_lock = None
        except filelock.Timeout as e:
            raise StoreError(
                f"commit of run {run_id!r}: could not acquire {self._lock_file} within {self.lock_timeout}s"
            ) from e

    def _commit_locked(
        self, run_id: str, config: dict, config_hash: str, code_version: str, message: str
    ) -> Manifest:
        parent_name = self.latest()
        parent = self.manifest(parent_name) if parent_name else Manifest(version=None, stats=_empty_stats())
        staged = self.staged_shards(run_id)

        tables: dict[str, list[ShardEntry]] = {k: list(v) for k, v in parent.tables.items()}
        known_sha = {name: {e.sha256 for e in entries} for name, entries in tables.items()}
        shards = dict(parent.shards)
        stats = {k: parent.stats.get(k, 0) or 0 for k in _STAT_KEYS}
        new_entries = 0
        new_shards: list[str] = []

        self.fs.makedirs(self._p("shards"))
        for shard_id in staged:
            if shard_id in shards:  # committed before (double commit, or a rerun after a crash)
                continue
            info = self._read_marker(run_id, shard_id)
            added = False
            for name, meta in sorted(info["tables"].items()):
                sha = meta["sha256"]
                if sha in known_sha.setdefault(name, set()):
                    continue
                self._promote(run_id, shard_id, name, sha)
                tables.setdefault(name, []).append(
                    ShardEntry(
                        path=self._shard_rel(sha),
                        rows=meta["rows"],
                        bytes=meta["bytes"],
                        sha256=sha,
                        shard_id=shard_id,
                        run_id=run_id,
                    )
                )
                known_sha[name].add(sha)
                for k in _STAT_KEYS:
                    stats[k] += meta["stats"].get(k, 0)
                new_entries += 1
                added = True
            if added:
                shards[shard_id] = run_id
                new_shards.append(shard_id)

        if not new_shards:
            self._cleanup_staging(run_id)
            parent.created = False
            return parent

        number = parent.number + 1
        run_ids = list(parent.run_ids)
        if run_id not in run_ids:
            run_ids.append(run_id)
        manifest = Manifest(
            version=_version_name(number),
            parent=parent.version,
            created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
            run_id=run_id,
            run_ids=run_ids,
            config=config,
            config_hash=config_hash,
            code_version=code_version,
            message=message,
            tables=tables,
            schemas={name: schema_fingerprint(SCHEMAS[name]) for name in tables if name in SCHEMAS},
            shards=shards,
            stats=_finish_stats(dict(stats)),
        )
        self._write_manifest(manifest)
        self._swap_latest(manifest.version)
        self._cleanup_staging(run_id)
        return manifest

    def _promote(self, run_id: str, shard_id: str, table: str, sha: str) -> None:
        """Move a staged file to ``shards/<sha>.parquet``; a no-op if it was promoted before a crash."""
        src = self._staged_file(run_id, shard_id, table)
        dst = self._p(self._shard_rel(sha))
        if self.fs.exists(src):
            actual = self.fs.sha256(src)
            if actual != sha:
                raise StoreError(
                    f"commit: staged file {src} has sha256 {actual}, but its marker "
                    f"{self._marker(run_id, shard_id)} records {sha}; the file changed after staging"
                )
            if self.fs.exists(dst):
                self.fs.remove(src)  # identical content already stored
            else:
                self.fs.replace(src, dst)
        elif not self.fs.exists(dst):
            raise StoreError(
                f"commit: shard {shard_id!r} table {table!r} of run {run_id!r} is marked staged, but neither "
                f"{src} nor {dst} exists; remove {self._marker(run_id, shard_id)} and re-stage the shard"
            )

    def _write_manifest(self, manifest: Manifest) -> None:
        self.fs.makedirs(self._p("versions"))
        self.fs.fsync_dir(self._p("shards"))  # promotions durable before the manifest that lists them
        data = manifest.model_dump_json(indent=1).encode()
        path = self._version_file(manifest.version)
        if not getattr(self.fs, "exclusive_manifests", False):
            self.fs.write_atomic(path, data)
            return
        # Object store: claim vN with an exclusive create, so two writers can never both write vN.
        try:
            self.fs.write_exclusive(path, data)
        except FileExistsError:
            self._take_over_orphan(path, manifest)
            try:
                self.fs.write_exclusive(path, data)
            except FileExistsError:
                raise self._conflict(path, manifest) from None
        try:  # read back: LATEST may only point at a manifest that is ours
            mine = Manifest.model_validate_json(self.fs.read_bytes(path))
        except (OSError, ValueError) as e:
            raise StoreError(f"commit of run {manifest.run_id!r}: cannot read back {path}: {e}") from e
        if (mine.run_id, mine.created_at) != (manifest.run_id, manifest.created_at):
            raise self._conflict(path, manifest)

    def _conflict(self, path: str, manifest: Manifest) -> StoreError:
        return StoreError(
            f"commit of run {manifest.run_id!r}: {path} was claimed by another writer at the same time "
            f"(is a second commit running on {self.root}, or was the lock {self._lock_file} broken as stale "
            "while its holder was still alive?); nothing of this run was published: rerun the commit"
        )

    def _take_over_orphan(self, path: str, manifest: Manifest) -> None:
        """``path`` (above LATEST) exists. It is a dead commit's leftover, which we may replace, when it is
        ours (same run and parent: our own earlier attempt crashed), unreadable, or older than the lock we
        hold; a manifest written after we took the lock is a live concurrent writer's: conflict."""
        try:
            other = Manifest.model_validate_json(self.fs.read_bytes(path))
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            other = None
        if other is not None and (other.run_id, other.parent) != (manifest.run_id, manifest.parent):
            lock = getattr(self, "_held_lock", None)
            acquired = getattr(lock, "acquired_at", None)
            written = self.fs.mtime(path) if hasattr(self.fs, "mtime") else None
            if acquired is None or written is None or written >= acquired:
                raise self._conflict(path, manifest)
        self.fs.remove(path)

    def _swap_latest(self, version: str) -> None:
        self.fs.write_atomic(self._latest_file, (version + "\n").encode())

    def _cleanup_staging(self, run_id: str) -> None:
        self.fs.rmtree(self._staging_dir(run_id))
        self.fs.fsync_dir(self._p("staging"))

    # ---- reading ----------------------------------------------------------------------------------------
    def latest(self) -> str | None:
        path = self._latest_file
        if not self.fs.exists(path):
            return None
        text = self.fs.read_bytes(path).decode().strip()
        try:
            return _version_name(_version_number(text))
        except ValueError as e:
            raise StoreError(f"corrupt pointer {path}: {text!r} is not a version name") from e

    def versions(self) -> list[str]:
        """Committed versions, oldest first (a manifest written after LATEST, i.e. by a commit that crashed
        before the pointer swap, is not committed and not listed)."""
        latest = self.latest()
        if latest is None:
            return []
        top = _version_number(latest)
        nums = []
        for name in self.fs.listdir(self._p("versions")):
            if name.endswith(".json"):
                try:
                    n = _version_number(name[: -len(".json")])
                except ValueError:
                    continue
                if n <= top:
                    nums.append(n)
        return [_version_name(n) for n in sorted(nums)]

    def manifest(self, version: str | None = None) -> Manifest:
        """The manifest of ``version`` ("v3", "v0003", "3"), default the latest."""
        if version is None:
            version = self.latest()
            if version is None:
                raise StoreError(f"no committed version in store {self.root} ({self._latest_file} missing)")
        try:
            name = _version_name(_version_number(str(version)))
        except ValueError as e:
            raise StoreError(f"{e}; available versions in {self.root}: {self.versions()}") from None
        latest = self.latest()
        path = self._version_file(name)
        if latest is None or _version_number(name) > _version_number(latest) or not self.fs.exists(path):
            raise StoreError(
                f"version {version!r} not found in store {self.root} (looked for {path}); "
                f"available versions: {self.versions() or 'none'}"
            )
        try:
            return Manifest.model_validate_json(self.fs.read_bytes(path))
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot read manifest {path}: {e}") from e

    def _files(self, table: str, version: str | None) -> tuple[list[str], Manifest | None]:
        if table not in SCHEMAS:
            raise ValueError(f"unknown table {table!r}; known tables: {sorted(SCHEMAS)}")
        if version is None and self.latest() is None:
            return [], None
        m = self.manifest(version)
        return [self._p(e.path) for e in m.tables.get(table, [])], m

    def scan(self, table: str = STEP_LABELS, version: str | None = None) -> pl.LazyFrame:
        """Lazy frame over the shard files of ``version`` (default latest); empty, with the table's
        schema, when there is no version or no shard of that table."""
        files, _ = self._files(table, version)
        if not files:
            return pl.from_arrow(SCHEMAS[table].empty_table()).lazy()
        arrow_fs = self.fs.arrow_filesystem
        if arrow_fs is None:
            # against the current schema: a column added since an older shard was written reads as null
            return pl.scan_parquet(files, hive_partitioning=False, glob=False, schema=_polars_schema(table),
                                   missing_columns="insert")
        import pyarrow.dataset as pads

        dataset = pads.dataset(
            [self.fs.strip(f) for f in files], schema=SCHEMAS[table], format="parquet", filesystem=arrow_fs
        )
        return pl.scan_pyarrow_dataset(dataset)

    def read(self, table: str = STEP_LABELS, version: str | None = None) -> pl.DataFrame:
        return self.scan(table, version).collect()

    def committed_run_ids(self) -> set[str]:
        if self.latest() is None:
            return set()
        return set(self.manifest().run_ids)

    def committed_shard_ids(self) -> set[str]:
        if self.latest() is None:
            return set()
        return set(self.manifest().shards)

    def summary(self, version: str | None = None) -> dict[str, Any]:
        """What ``steplabel inspect --json`` prints: read from the manifest only, no data scan."""
        versions = self.versions()
        if version is None and not versions:
            out: dict[str, Any] = {"root": self.root, "version": None, "versions": [], **_empty_stats()}
            out.update(created_at=None, config_hash=None, code_version=None, run_ids=[], shards=0, files={})
            return out
        m = self.manifest(version)
        stats = {**_empty_stats(), **m.stats}
        return {
            "root": self.root,
            "version": m.version,
            "versions": versions,
            **stats,
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


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value) or value.endswith(".done"):
        raise ValueError(
            f"{kind} {value!r} is not usable as a file name (allowed: letters, digits, '._=+-', "
            "starting with a letter or digit)"
        )
    return value


def explode_steps(df: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """Per-step view of ``step_labels`` (one row per step); see :mod:`steplabel.storage.views`."""
    from steplabel.storage.views import explode_steps as _explode

    return _explode(df)
