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
import os
from pathlib import Path
from typing import Any

import filelock
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from steplabel.storage.dedupe import split_duplicates
from steplabel.storage.filesystem import (
    PARQUET_WRITE_OPTIONS,
    FsspecFS,
    LocalFS,
    RemoteLock,
    is_local_root,
    local_path,
    make_fs,
)
from steplabel.storage.manifest import (
    STAT_KEYS,
    Manifest,
    ShardEntry,
    conform_table,
    empty_stats,
    finish_stats,
    manifest_summary,
    polars_schema,
    table_stats,
    version_name,
    version_number,
)
from steplabel.storage.schema import REJECTS, SCHEMAS, STEP_LABELS, schema_fingerprint
from steplabel.storage.staging import RunLockedError, StagingArea, StoreError

__all__ = ["FsspecFS", "LocalFS", "RemoteLock", "make_fs", "is_local_root", "local_path", "Manifest", "ShardEntry",
           "ShardStore", "StoreError", "RunLockedError", "PARQUET_WRITE_OPTIONS", "table_stats"]

# --------------------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------------------
class ShardStore(StagingArea):
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

    # ---- paths (the staging paths are in StagingArea) ---------------------------------------------------
    def _shard_rel(self, sha: str) -> str:
        return f"shards/{sha}.parquet"

    def _version_file(self, version: str) -> str:
        return self._p("versions", f"{version}.json")

    @property
    def _latest_file(self) -> str:
        return self._p("LATEST")

    @property
    def _lock_file(self) -> str:
        return self._p(".lock")

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
        seen_solutions = self._committed_solution_ids(parent)
        for shard_id in staged:
            if shard_id in shards:  # committed before (double commit, or a rerun after a crash)
                continue
            info = self._drop_committed_solutions(run_id, shard_id, seen_solutions, parent.version)
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

    def _committed_solution_ids(self, parent: Manifest) -> set[str]:
        """Every solution id of the parent version's ``step_labels`` (one column read per shard file)."""
        ids: set[str] = set()
        for entry in parent.tables.get(STEP_LABELS, []):
            data = self.fs.read_bytes(self._p(entry.path))
            ids.update(pq.read_table(pa.BufferReader(data), columns=["solution_id"]).column(0).to_pylist())
        return ids

    def _drop_committed_solutions(self, run_id: str, shard_id: str, seen: set[str], parent: str | None) -> dict:
        """A version never holds one solution twice: rows of this staged shard whose solution is already in the
        version (an earlier run labelled it, or an earlier shard of this commit) move to its ``rejects`` as
        ``duplicate_solution`` at stage ``commit``, and the shard is staged again. Returns its marker."""
        info = self._read_marker(run_id, shard_id)
        if STEP_LABELS not in info["tables"]:
            return info
        labels = self._staged_or_promoted(run_id, shard_id, STEP_LABELS, info)
        kept, duplicates = split_duplicates(labels, seen, f"version {parent}" if parent else "this commit")
        if duplicates is None:
            return info
        tables = {name: self._staged_or_promoted(run_id, shard_id, name, info) for name in info["tables"]}
        tables[STEP_LABELS] = kept
        old_rejects = tables.get(REJECTS)
        tables[REJECTS] = duplicates if old_rejects is None else pa.concat_tables(
            [conform_table(REJECTS, old_rejects, shard_id), conform_table(REJECTS, duplicates, shard_id)])
        self.fs.remove(self._marker(run_id, shard_id))
        self.stage(run_id, shard_id, tables)
        return self._read_marker(run_id, shard_id)

    def _staged_or_promoted(self, run_id: str, shard_id: str, table: str, info: dict) -> pa.Table:
        """A staged table, also when a crashed commit already moved its file into ``shards/``."""
        path = self._staged_file(run_id, shard_id, table)
        if not self.fs.exists(path):
            path = self._p(self._shard_rel(info["tables"][table]["sha256"]))
        return pq.read_table(pa.BufferReader(self.fs.read_bytes(path)))

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
