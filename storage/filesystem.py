"""Filesystems for the shard store: the only code that touches paths.

:class:`LocalFS` serves plain paths and ``file://`` URLs; :class:`FsspecFS` serves any other fsspec URL
(``s3://``, ``gs://``, ``az://``, ``memory://``...). Object stores have no atomic rename and no file locks,
so :class:`FsspecFS` keeps the same guarantees differently: every file is written with one PUT (visible
whole or not at all); shard files are content-addressed and immutable, so "rename" is copy + delete;
``write_exclusive`` creates a file only if it does not exist (``mode="xb"``, a conditional put where the
backend supports it), and locks are lock objects created exclusively (see :class:`RemoteLock`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
import shutil
import socket
import time
import uuid
from typing import Any

import filelock
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["FsspecFS", "LocalFS", "PARQUET_WRITE_OPTIONS", "RemoteLock", "is_local_root", "local_path", "make_fs"]

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
