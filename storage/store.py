"""Versioned, content-addressed Parquet shard store.

Layout under ``root``::

    shards/<sha256>.parquet                      immutable, named by the sha256 of the file bytes
    staging/<run_id>/<shard_id>.<table>.parquet  a run's finished shards, not yet visible to readers
    staging/<run_id>/<shard_id>.done            marker written last: the shard counts as staged only then
    staging/<run_id>/run.json                    the run's resolved config (for ``steplabel run --resume``)
    versions/v000N.json                          manifest of version N (cumulative: every shard of the version)
    LATEST                                       text "v000N", replaced atomically after the manifest is durable
    .lock                                        file lock serialising commits
    runs/<run_id>.lock                           held while a run works: one process per run id (:meth:`ShardStore.run_lock`)

Protocol. ``stage`` writes every table of a shard (tmp + fsync + rename), then the ``.done`` marker, which
records each file's sha256, row count and stats. ``commit`` (under the lock) promotes staged files into
``shards/`` by rename, writes the next manifest (tmp + fsync + rename), swaps ``LATEST`` the same way and
only then removes the run's staging directory. A crash at any point leaves ``LATEST`` on the previous,
intact version; re-running ``commit`` finishes the job (and removes the ``*.tmp-*`` files a killed writer
left), and shards already present in the parent version (by ``shard_id`` or by sha256) are never listed
twice. Readers resolve everything through ``LATEST`` and manifests, so they only ever see committed
versions; :meth:`ShardStore.read` checks every file against the sha256 its manifest records, and
:meth:`ShardStore.verify` reports every damaged file of a version. :meth:`ShardStore.repair_staging` drops
staged shards whose files no longer match their marker, so the run recomputes them.

Filesystem access goes through :mod:`steplabel.storage.filesystem` (local paths, or any fsspec URL such
as ``s3://``, where manifests are claimed with an exclusive create and commits serialised by a lock object).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError

from steplabel.storage.filesystem import (PARQUET_WRITE_OPTIONS, FsspecFS, LocalFS, RemoteLock, is_local_root,
                                          local_path, make_fs)
from steplabel.storage.manifest import (STAT_KEYS, Manifest, ShardEntry, conform_table, empty_stats, finish_stats,
                                        manifest_summary, polars_schema, table_stats, version_name, version_number)
from steplabel.storage.schema import SCHEMAS, STEP_LABELS, schema_fingerprint

__all__ = ["FsspecFS", "LocalFS", "RemoteLock", "make_fs", "is_local_root", "local_path", "Manifest", "ShardEntry",
           "ShardStore", "StoreError", "RunLockedError", "PARQUET_WRITE_OPTIONS", "explode_steps", "table_stats"]

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


class StoreError(RuntimeError):
    """A store operation failed; the message says what and where (path)."""


class RunLockedError(StoreError):
    """Another process is working on the same run id in the same store: it must not touch that staging."""


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
        conformed = {name: conform_table(name, t, where) for name, t in tables.items()}
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

    @contextmanager
    def run_lock(self, run_id: str) -> Iterator[None]:
        """Hold the run's lock (``runs/<run_id>.lock``) or refuse at once with :class:`RunLockedError`.

        Two processes staging the same run would overwrite each other's files under each other's
        markers; one run id, one process. Locally this is an OS file lock (``filelock``), released by the
        OS when its holder dies; on object stores it is a :class:`RemoteLock` object, which a dead
        holder leaves behind until it is older than the filesystem's ``lock_stale_s``.
        """
        self.fs.makedirs(self._p("runs"))
        path = self._p("runs", f"{_check_id('run_id', run_id)}.lock")
        lock = self.fs.lock(path, 0)
        try:
            lock.acquire()
        except filelock.Timeout:
            stale = getattr(self.fs, "lock_stale_s", None)
            after = f" (a dead holder's lock expires {stale:.0f} s after it was taken)" if stale else ""
            raise RunLockedError(
                f"run {run_id!r} is already running on {self.root} (another process holds {path}){after}; "
                "wait for it to finish, then rerun to resume or to see its version"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def repair_staging(self, run_id: str) -> list[str]:
        """Make the run's staging area consistent; call it holding :meth:`run_lock`. A shard whose marker
        is unreadable, or whose file is missing (and not yet promoted) or differs from the sha256 its
        marker records, is dropped with its files, so the run recomputes it; a killed writer's
        ``*.tmp-*`` files are removed. Returns one line per dropped shard."""
        directory = self._staging_dir(run_id)
        for name in self.fs.listdir(directory):
            if ".tmp-" in name:
                self.fs.remove(self.fs.join(directory, name))
        dropped = []
        for shard_id in self.staged_shards(run_id):
            problem = self._staged_problem(run_id, shard_id)
            if problem:
                for table in SCHEMAS:
                    self.fs.remove(self._staged_file(run_id, shard_id, table))
                self.fs.remove(self._marker(run_id, shard_id))
                dropped.append(f"shard {shard_id!r} of run {run_id!r}: {problem}; dropped, it will be recomputed")
        return dropped

    def _staged_problem(self, run_id: str, shard_id: str) -> str | None:
        try:
            info = self._read_marker(run_id, shard_id)
            tables = info["tables"].items()
            for table, meta in tables:
                src = self._staged_file(run_id, shard_id, table)
                if self.fs.exists(src):
                    if (actual := self.fs.sha256(src)) != meta["sha256"]:
                        return f"{src} has sha256 {actual}, its marker records {meta['sha256']}"
                elif not self.fs.exists(self._p(self._shard_rel(meta["sha256"]))):
                    return f"{src} is missing"
        except (StoreError, KeyError, TypeError, AttributeError) as e:
            return f"unusable marker: {e}"
        return None

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
                    self._remove_dead_temporaries()
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
        parent = self.manifest(parent_name) if parent_name else Manifest(version=None, stats=empty_stats())
        staged = self.staged_shards(run_id)

        tables: dict[str, list[ShardEntry]] = {k: list(v) for k, v in parent.tables.items()}
        known_sha = {name: {e.sha256 for e in entries} for name, entries in tables.items()}
        shards = dict(parent.shards)
        stats = {k: parent.stats.get(k, 0) or 0 for k in STAT_KEYS}
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
                for k in STAT_KEYS:
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
            version=version_name(number),
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
            stats=finish_stats(dict(stats)),
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
                    f"{self._marker(run_id, shard_id)} records {sha}; the file changed after staging (rerun the run, or "
                    f"`steplabel run --resume {run_id}`: it drops damaged staged shards and recomputes them)"
                )
            if self.fs.exists(dst):
                self.fs.remove(src)  # identical content already stored
            else:
                self.fs.replace(src, dst)
        elif not self.fs.exists(dst):
            raise StoreError(
                f"commit: shard {shard_id!r} table {table!r} of run {run_id!r} is marked staged, but neither "
                f"{src} nor {dst} exists; rerun the run (or `steplabel run --resume {run_id}`) to recompute it"
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

    def _remove_dead_temporaries(self) -> None:
        """Drop the ``LATEST.tmp-*`` / ``versions/*.json.tmp-*`` files of a killed commit; only a commit,
        under the lock we hold, writes these, so none of them is live."""
        dead = [self._p(n) for n in self.fs.listdir(self.root) if n.startswith("LATEST.tmp-")]
        dead += [self._p("versions", n) for n in self.fs.listdir(self._p("versions")) if ".json.tmp-" in n]
        for path in dead:
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
        try:
            text = self.fs.read_bytes(path).decode().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise StoreError(f"cannot read pointer {path}: {e}") from e
        try:
            return version_name(version_number(text))
        except ValueError as e:
            raise StoreError(f"corrupt pointer {path}: {text[:40]!r} is not a version name") from e

    def versions(self) -> list[str]:
        """Committed versions, oldest first (a manifest written after LATEST, i.e. by a commit that crashed
        before the pointer swap, is not committed and not listed)."""
        latest = self.latest()
        if latest is None:
            return []
        top = version_number(latest)
        nums = []
        for name in self.fs.listdir(self._p("versions")):
            if name.endswith(".json"):
                try:
                    n = version_number(name[: -len(".json")])
                except ValueError:
                    continue
                if n <= top:
                    nums.append(n)
        return [version_name(n) for n in sorted(nums)]

    def manifest(self, version: str | None = None) -> Manifest:
        """The manifest of ``version`` ("v3", "v0003", "3"), default the latest."""
        if version is None:
            version = self.latest()
            if version is None:
                raise StoreError(f"no committed version in store {self.root} ({self._latest_file} missing)")
        try:
            name = version_name(version_number(str(version)))
        except ValueError as e:
            raise StoreError(f"{e}; available versions in {self.root}: {self.versions()}") from None
        latest = self.latest()
        path = self._version_file(name)
        if latest is None or version_number(name) > version_number(latest) or not self.fs.exists(path):
            raise StoreError(
                f"version {version!r} not found in store {self.root} (looked for {path}); "
                f"available versions: {self.versions() or 'none'}"
            )
        try:
            return Manifest.model_validate_json(self.fs.read_bytes(path))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(map(str, first["loc"])) or "<root>"
            raise StoreError(f"cannot read manifest {path}: {where}: {first['msg']} ({e.error_count()} error(s))") from None
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot read manifest {path}: {e}") from e

    def _files(self, table: str, version: str | None, verify: bool = False) -> tuple[list[str], Manifest | None]:
        """The files of one table of ``version``; each is checked against its manifest entry (its size
        always, its sha256 with ``verify``), so a deleted, truncated or swapped file is a StoreError
        here rather than wrong rows later."""
        if table not in SCHEMAS:
            raise ValueError(f"unknown table {table!r}; known tables: {sorted(SCHEMAS)}")
        if version is None and self.latest() is None:
            return [], None
        m = self.manifest(version)
        entries = m.tables.get(table, [])
        for entry in entries:
            problem = self._entry_problem(entry, verify)
            if problem:
                raise StoreError(f"{m.version} table {table!r}: {problem}; `steplabel inspect {self.root}` lists "
                                 "every damaged file")
        return [self._p(e.path) for e in entries], m

    def _entry_problem(self, entry: ShardEntry, check_hash: bool) -> str | None:
        """What is wrong with one committed file (None: it is as its manifest records it)."""
        path = self._p(entry.path)
        try:
            size = self.fs.size(path)
            if size != entry.bytes:
                return f"shard file {path} has {size} bytes, its manifest records {entry.bytes}"
            if check_hash and (actual := self.fs.sha256(path)) != entry.sha256:
                return f"shard file {path} has sha256 {actual}, its manifest records {entry.sha256}"
        except FileNotFoundError:
            return f"shard file {path} is missing"
        except OSError as e:
            return f"shard file {path} cannot be read: {e}"
        return None

    def verify(self, version: str | None = None) -> list[str]:
        """Every problem with the files of ``version`` (default latest), each file hashed: [] when intact."""
        m = self.manifest(version)
        problems = (self._entry_problem(e, True) for entries in m.tables.values() for e in entries)
        return [p for p in problems if p]

    def scan(self, table: str = STEP_LABELS, version: str | None = None, verify: bool = False) -> pl.LazyFrame:
        """Lazy frame over the shard files of ``version`` (default latest); empty, with the table's
        schema, when there is no version or no shard of that table. File sizes are always checked against
        the manifest, contents (sha256) only with ``verify``."""
        files, _ = self._files(table, version, verify)
        if not files:
            return pl.from_arrow(SCHEMAS[table].empty_table()).lazy()
        arrow_fs = self.fs.arrow_filesystem
        if arrow_fs is None:
            # against the current schema: a column added since an older shard was written reads as null
            return pl.scan_parquet(files, hive_partitioning=False, glob=False, schema=polars_schema(table),
                                   missing_columns="insert")
        import pyarrow.dataset as pads

        dataset = pads.dataset(
            [self.fs.strip(f) for f in files], schema=SCHEMAS[table], format="parquet", filesystem=arrow_fs
        )
        return pl.scan_pyarrow_dataset(dataset)

    def read(self, table: str = STEP_LABELS, version: str | None = None, verify: bool = True) -> pl.DataFrame:
        """The whole table of ``version``; every file is hashed first (``verify``), since an eager read
        pays for reading the bytes anyway."""
        return self.scan(table, version, verify).collect()

    def is_store(self) -> bool:
        """Whether ``root`` holds a dataset (committed or with a run staged), not just any folder."""
        return any(self.fs.exists(self._p(name)) for name in ("LATEST", "versions", "staging"))

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
        manifest = self.manifest(version) if version is not None or versions else None
        return manifest_summary(self.root, versions, manifest)


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