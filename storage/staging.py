"""A run's staging area: finished shards wait here, invisible to readers, until the run commits them.

``stage`` writes every table of a shard (tmp + fsync + rename), then the ``.done`` marker that records each
file's sha256, row count and stats; only then does the shard count as staged. One process at a time works on a
run id (:meth:`StagingArea.run_lock`), and :meth:`StagingArea.repair_staging` drops what a killed or racing
writer left inconsistent, so the run recomputes it. :class:`~steplabel.storage.store.ShardStore` adds versions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import filelock
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from steplabel.storage.filesystem import FsspecFS, LocalFS
from steplabel.storage.manifest import conform_table, table_stats
from steplabel.storage.schema import SCHEMAS

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


class StoreError(RuntimeError):
    """A store operation failed; the message says what and where (path)."""


class RunLockedError(StoreError):
    """Another process is working on the same run id in the same store: it must not touch that staging."""


class StagingArea:
    """Staging of one store; :class:`~steplabel.storage.store.ShardStore` provides ``fs``, ``root`` and ``_p``."""

    fs: LocalFS | FsspecFS
    root: str
    lock_timeout: float

    def _p(self, *rel: str) -> str:
        return self.fs.join(self.root, *rel)

    def _staging_dir(self, run_id: str) -> str:
        return self._p("staging", _check_id("run_id", run_id))

    def _staged_file(self, run_id: str, shard_id: str, table: str) -> str:
        return self.fs.join(self._staging_dir(run_id), f"{_check_id('shard_id', shard_id)}.{table}.parquet")

    def _marker(self, run_id: str, shard_id: str) -> str:
        return self.fs.join(self._staging_dir(run_id), f"{_check_id('shard_id', shard_id)}.done")

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

    def _cleanup_staging(self, run_id: str) -> None:
        self.fs.rmtree(self._staging_dir(run_id))
        self.fs.fsync_dir(self._p("staging"))


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value) or value.endswith(".done"):
        raise ValueError(
            f"{kind} {value!r} is not usable as a file name (allowed: letters, digits, '._=+-', "
            "starting with a letter or digit)"
        )
    return value
