"""Run untrusted, model-written Python in a separate, locked-down process (DESIGN.md section 7).

Defence in depth, each layer independent of the others:

1. **Process**: ``python -I -B`` (isolated mode: no PYTHON* variables, no user site, no script dir on
   sys.path; no .pyc writes) in a new session, so the whole process group is killed on timeout and after
   every run.
2. **rlimits** (set in the child before exec): RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC,
   RLIMIT_NOFILE, RLIMIT_CORE = 0; soft = hard so the code cannot raise them.
3. **Namespaces** (Linux, when the kernel lets us): a fresh network namespace (only a down loopback: no
   network at all) and, when running as root, a private mount namespace in which every mount is re-mounted
   read-only except the throw-away working directory; then the capability bounding set is dropped and
   ``no_new_privs`` set so the code cannot undo it. ``SandboxResult.layers`` says which were applied.
4. **Environment**: only PATH, LANG, PYTHONHASHSEED, HOME/TMPDIR (= the temp dir); cwd is a
   ``tempfile.TemporaryDirectory`` removed afterwards; stdin is /dev/null.
5. **Audit hook** (PEP 578) installed by a prelude before the user code is even read; it cannot be removed.
   It refuses sockets, subprocesses, exec/spawn/fork, os.system, signals to other processes, ctypes calls,
   gc introspection, symlinks/hard links, and any file write, create, delete, rename or chmod outside the
   temp dir, and reads of other processes' ``/proc`` entries. Reading ordinary files is allowed (the
   environment is scrubbed and, with the mount namespace, nothing outside the temp dir is writable).
6. **Output**: stdout/stderr are read through pipes into bounded buffers; past ``max_output_bytes`` the
   group is killed and the status is ``output_limit``.

This is a best-effort sandbox for model-written arithmetic checks, not a security boundary for hostile
code with kernel exploits. Known limits: running as root, RLIMIT_NPROC is not enforced by the kernel (fork
is stopped by the audit hook instead); a crash of the interpreter (e.g. crafted bytecode) is contained but
reported as ``killed``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

__all__ = ["SandboxResult", "run_python", "PRELUDE"]

STATUSES = ("ok", "error", "timeout", "killed", "output_limit")


@dataclass
class SandboxResult:
    status: str  # ok | error | timeout | killed | output_limit
    exit_code: int | None
    stdout: str
    stderr: str
    wall_s: float
    detail: str = ""
    pid: int | None = None
    layers: tuple[str, ...] = field(default_factory=tuple)


# The prelude runs in the child before the user code. Everything it keeps is immutable and captured in
# closures of a function that is deleted from the module namespace once installed, so user code can only
# reach the hook through the interpreter's (unremovable) audit-hook list.
PRELUDE = r'''
import sys
import ctypes, subprocess  # imported before the hook: their import-time dlopen is allowed, their use is not
import _posixsubprocess
def _install(workdir, _posix=__import__("posix"), _sys=sys):
    _getcwd = _posix.getcwd
    _fspath = _posix.fspath
    _O_W = _posix.O_WRONLY | _posix.O_RDWR | _posix.O_CREAT | _posix.O_TRUNC | _posix.O_APPEND
    _ROOT = workdir.rstrip("/") + "/"
    _DENY = frozenset({
        "subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp",
        "os.kill", "os.killpg", "signal.pthread_kill", "os.symlink", "os.link", "os.mkfifo", "os.mknod",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "resource.setrlimit", "resource.prlimit",
        "sqlite3.connect", "sqlite3.connect/handle", "os.setuid", "os.setgid", "os.chroot", "os.startfile",
        "pty.spawn", "webbrowser.open", "ftplib.connect", "smtplib.connect", "poplib.connect",
        "imaplib.open", "telnetlib.Telnet.open", "urllib.Request", "http.client.connect", "os.setxattr",
        "os.removexattr", "os.chflags", "os.lchflags", "shutil.chown", "mmap.__new__", "sys.remote_exec",
    })
    _DENY_PREFIX = ("socket.", "ctypes.", "os.exec", "os.spawn", "cpython.run_")
    _PATH_EVENTS = frozenset({
        "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
        "os.listxattr", "shutil.rmtree", "shutil.move", "shutil.copyfile", "shutil.copymode",
        "shutil.copystat", "shutil.copytree", "shutil.make_archive", "shutil.unpack_archive",
    })
    _DENY_IMPORT = frozenset({"_posixsubprocess", "_ctypes", "ctypes", "_socket", "socket", "_ssl", "pty",
                              "multiprocessing.popen_fork", "_multiprocessing", "resource", "_xxsubinterpreters"})

    def _norm(p):
        try:
            p = _fspath(p)
        except TypeError:
            return None
        if isinstance(p, bytes):
            p = p.decode("utf-8", "surrogateescape")
        if not isinstance(p, str):
            return None
        if not p.startswith("/"):
            p = _getcwd() + "/" + p
        out = []
        for seg in p.split("/"):
            if seg in ("", "."):
                continue
            if seg == "..":
                if out:
                    out.pop()
                continue
            out.append(seg)
        return "/" + "/".join(out)

    def _inside(p):
        if isinstance(p, int):
            return True  # an already open descriptor
        n = _norm(p)
        return n is not None and (n + "/").startswith(_ROOT)

    def _hook(event, args):
        if event in _DENY or event.startswith(_DENY_PREFIX):
            raise PermissionError("sandbox: " + event + " is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _O_W
            )
            if writing and not _inside(path):
                raise PermissionError("sandbox: writing outside the sandbox directory is not allowed")
            n = _norm(path) if not isinstance(path, int) else None
            if n is not None and n.startswith("/proc/") and not n.startswith("/proc/self/") \
                    and not n.startswith("/proc/thread-self/") and n[6:7].isdigit():
                raise PermissionError("sandbox: other processes' /proc entries are not readable")
            return
        if event in _PATH_EVENTS:
            for a in args:
                if isinstance(a, (str, bytes)) or hasattr(a, "__fspath__"):
                    if not _inside(a):
                        raise PermissionError("sandbox: " + event + " outside the sandbox directory")
            return
        if event == "import" and args and args[0] in _DENY_IMPORT:
            raise ImportError("sandbox: import of " + str(args[0]) + " is not allowed")
        if event == "object.__setattr__" and len(args) > 1 and args[1] in ("__code__", "__closure__"):
            raise PermissionError("sandbox: rewriting code objects is not allowed")
        if event == "sys._current_frames" or event == "sys.setprofile" or event == "sys.settrace":
            raise PermissionError("sandbox: " + event + " is not allowed")

    def _no_fork_exec(*a, **k):
        raise PermissionError("sandbox: process creation is not allowed")

    _posixsubprocess.fork_exec = _no_fork_exec
    _sys.addaudithook(_hook)

_install(sys.argv[1])
del _install, _posixsubprocess
_code = open("snippet.py", encoding="utf-8").read()
_g = {"__name__": "__main__", "__builtins__": __builtins__}
del _code_unused if False else None
exec(compile(_code, "snippet.py", "exec"), _g)
'''.replace("del _code_unused if False else None\n", "")


_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24

_libc: ctypes.CDLL | None
try:  # loaded in the parent: the child must not dlopen between fork and exec
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
except OSError:  # pragma: no cover - not glibc
    _libc = None


def _mount_points() -> list[bytes]:
    points = []
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            for line in fh:
                mp = line.split()[4].replace(b"\\040", b" ")
                points.append(mp)
    except OSError:
        pass
    return points


def _make_preexec(workdir: str, limits: dict[int, int], status_fd: int, use_ns: bool):
    is_root = os.geteuid() == 0
    mounts = _mount_points() if is_root else []
    wd = workdir.encode()

    def preexec() -> None:  # runs in the child between fork and exec: keep it simple, never raise
        flags = b""
        if use_ns and _libc is not None:
            if is_root:
                if _libc.unshare(_CLONE_NEWNET) == 0:
                    flags += b"n"
                if _libc.unshare(_CLONE_NEWNS) == 0 and _libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) == 0:
                    ok = _libc.mount(wd, wd, None, _MS_BIND, None) == 0
                    for mp in mounts:
                        if mp == wd:
                            continue
                        _libc.mount(None, mp, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID, None)
                    if ok:
                        flags += b"m"
                    try:
                        os.chdir(workdir)  # re-enter through the writable bind mount
                    except OSError:
                        pass
                for cap in range(64):
                    _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
                flags += b"c"
            else:
                uid, gid = os.geteuid(), os.getegid()
                if _libc.unshare(0x10000000 | _CLONE_NEWNET) == 0:  # CLONE_NEWUSER
                    try:
                        with open("/proc/self/setgroups", "w") as fh:
                            fh.write("deny")
                        with open("/proc/self/uid_map", "w") as fh:
                            fh.write(f"{uid} {uid} 1")
                        with open("/proc/self/gid_map", "w") as fh:
                            fh.write(f"{gid} {gid} 1")
                        flags += b"n"
                    except OSError:
                        pass
        if _libc is not None:
            _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        for res, val in limits.items():
            try:
                resource.setrlimit(res, (val, val))
            except (ValueError, OSError):
                pass
        flags += b"r"
        try:
            os.write(status_fd, flags)
            os.close(status_fd)
        except OSError:
            pass

    return preexec


def _clean_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "HOME": workdir,
        "TMPDIR": workdir,
    }


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_python(
    code: str,
    *,
    cpu_s: float = 2,
    wall_s: float = 5,
    memory_mb: int = 256,
    file_size_kb: int = 256,
    max_processes: int = 16,
    max_open_files: int = 64,
    max_output_bytes: int = 64_000,
    namespaces: bool = True,
    python: str | None = None,
) -> SandboxResult:
    """Run ``code`` in a sandboxed ``python -I -B`` child and report how it ended.

    ``status``: ``ok`` (exit 0), ``error`` (non-zero exit, e.g. an exception; ``detail`` is the last line of
    stderr), ``timeout`` (wall clock or CPU limit; ``detail`` says which), ``killed`` (another signal),
    ``output_limit`` (more than ``max_output_bytes`` of stdout + stderr).
    """
    python = python or sys.executable
    limits = {
        resource.RLIMIT_CPU: max(1, int(cpu_s + 0.999)),
        resource.RLIMIT_AS: int(memory_mb) * 1024 * 1024,
        resource.RLIMIT_FSIZE: int(file_size_kb) * 1024,
        resource.RLIMIT_NPROC: int(max_processes),
        resource.RLIMIT_NOFILE: int(max_open_files),
        resource.RLIMIT_CORE: 0,
    }
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="steplabel-sandbox-") as workdir:
        workdir = os.path.realpath(workdir)
        with open(os.path.join(workdir, "snippet.py"), "w", encoding="utf-8") as fh:
            fh.write(code)
        r_status, w_status = os.pipe()
        try:
            proc = subprocess.Popen(
                [python, "-I", "-B", "-c", PRELUDE, workdir],
                cwd=workdir,
                env=_clean_env(workdir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                pass_fds=(w_status,),
                preexec_fn=_make_preexec(workdir, limits, w_status, namespaces),
            )
        finally:
            os.close(w_status)
        try:
            layers_raw = os.read(r_status, 16)
        except OSError:
            layers_raw = b""
        os.close(r_status)
        layers = ["session", "env", "tempdir", "audit_hook"]
        for ch, name in ((b"r", "rlimits"), (b"n", "netns"), (b"m", "ro_mounts"), (b"c", "no_caps")):
            if ch in layers_raw:
                layers.append(name)
        status, detail = _pump(proc, t0, wall_s, max_output_bytes)
        out_b, err_b = status[2], status[3]
        kind, detail = status[0], status[1]
        _kill_group(proc.pid)  # anything the code left behind in its group
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            rc = proc.wait()
    wall = time.monotonic() - t0
    stdout = out_b.decode("utf-8", "replace")
    stderr = err_b.decode("utf-8", "replace")
    if kind is None:
        if rc == 0:
            kind = "ok"
        elif rc is not None and rc < 0:
            sig = -rc
            if sig in (signal.SIGXCPU,) or (sig == signal.SIGKILL and _cpu_exhausted(proc)):
                kind, detail = "timeout", "cpu limit"
            else:
                kind, detail = "killed", f"signal {signal.Signals(sig).name}"
        else:
            kind = "error"
            lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
            detail = lines[-1] if lines else f"exit code {rc}"
    return SandboxResult(kind, rc, stdout, stderr, wall, detail or "", proc.pid, tuple(layers))


def _cpu_exhausted(proc: subprocess.Popen) -> bool:  # noqa: ARG001 - SIGKILL after SIGXCPU (hard limit)
    return True


def _pump(proc: subprocess.Popen, t0: float, wall_s: float, cap: int):
    """Read stdout/stderr until EOF, the wall deadline, or the output cap. Returns (status, detail, out, err)."""
    sel = selectors.DefaultSelector()
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    for f in bufs:
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    total = 0
    deadline = t0 + wall_s
    kind = detail = None
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                kind, detail = "timeout", f"wall clock > {wall_s:g} s"
                break
            for key, _ in sel.select(timeout=min(left, 0.5)):
                f = key.fileobj
                try:
                    chunk = os.read(f.fileno(), 65536)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        continue
                    chunk = b""
                if not chunk:
                    sel.unregister(f)
                    continue
                room = cap - total
                bufs[f] += chunk[: max(room, 0)]
                total += len(chunk)
                if total > cap:
                    kind, detail = "output_limit", f"more than {cap} bytes of output"
                    break
            if kind:
                break
        if kind is None:
            # pipes closed: wait for the exit within the remaining wall time
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kind, detail = "timeout", f"wall clock > {wall_s:g} s"
    finally:
        sel.close()
        if kind is not None:
            _kill_group(proc.pid)
        for f in bufs:
            f.close()
    return (kind, detail, bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr])), detail
