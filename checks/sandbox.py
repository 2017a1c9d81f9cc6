"""Run untrusted, model-written Python in an operating-system sandbox.

Python-level guards (audit hooks, stubbed functions) cannot contain hostile code: a saved reference, a
``__subclasses__()`` walk or a module loaded under another name gets around them. The isolation here is
the kernel's, set up by bubblewrap (``bwrap``), and every layer holds on its own:

1. **Unprivileged uid.** When steplabel runs as root, bwrap itself is started as ``host_uid`` (65534,
   *nobody*): the code never runs as host root, so ``RLIMIT_NPROC`` is enforced (the kernel exempts root)
   and host files keep their permissions. Inside, the code is uid/gid 65534 with no capabilities.
2. **Namespaces.** New user (nested ones disabled), pid, net, mount, ipc, uts and cgroup namespaces: the
   code sees only its own processes (so it cannot signal, ``pidfd_open`` or read ``/proc/<pid>`` of anything
   else), has no network (a loopback only), and no SysV IPC or abstract sockets shared with the host.
3. **Filesystem.** A new root holding read-only binds of ``/usr`` (plus ``/bin``, ``/lib*`` links) and of
   the interpreter's prefixes, a private ``/proc``, a minimal read-only ``/dev``, and one writable tmpfs
   (``/tmp``, ``tmpfs_mb``, the cwd, holding ``snippet.py``). Nothing of the host is writable, and what the
   code writes vanishes with the mount namespace: there is no host temp dir to clean up.
4. **seccomp** (libseccomp, exported to BPF and loaded by bwrap): refuses ptrace, process_vm_*, pidfd_*,
   namespace and mount calls, bpf, perf, io_uring, userfaultfd, keyrings, module/kexec/reboot, TIOCSTI, and
   sockets other than AF_UNIX. Other architectures' syscalls (32-bit ``int 0x80``) kill the process.
5. **Limits.** Set before the code runs, soft = hard so it cannot raise them: CPU, address space, file
   size, open files, processes (counted per user namespace, so exactly this sandbox's), no core dumps.
   The parent bounds the wall clock and the bytes read from stdout/stderr.
6. **Teardown.** ``--die-with-parent``: the parent SIGKILLs bwrap and its pid-namespace init, the kernel
   then kills every process in the namespace (``setsid`` or not) and frees the tmpfs. The parent waits
   for the init to be gone, bounded by a second, before it returns.

Where bwrap (or libseccomp) is missing, :func:`run_python` refuses with :class:`SandboxUnavailable` unless
``allow_weak=True``; the weak sandbox is only a child process with the same rlimits in a new session and a
temp dir, which contains honest mistakes, not hostile code. :func:`probe` says which level this machine has.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

__all__ = ["SandboxResult", "SandboxSupport", "SandboxUnavailable", "probe", "require", "run_python",
           "self_test"]

STATUSES = ("ok", "error", "timeout", "killed", "output_limit")
LEVELS = ("isolated", "namespaces", "weak")  # bwrap + seccomp | bwrap only | rlimits only
SANDBOX_UID = 65534
_CWD = "/tmp"
_INSTALL_HINT = "install bubblewrap and libseccomp's Python bindings (`make sandbox`, or `apt-get install bubblewrap python3-seccomp` / `pip install pyseccomp`)"


class SandboxUnavailable(OSError):
    """This machine cannot give the isolation asked for (the message says why, on one line)."""


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


@dataclass(frozen=True)
class SandboxSupport:
    """What :func:`probe` found: the best level this machine offers and why not better."""

    level: str
    bwrap: str | None
    bwrap_version: str | None
    seccomp: str | None  # the bindings module used, or None
    reason: str  # empty at "isolated"


# Runs inside the sandbox: set the limits, then run the code as ``__main__`` in a child and report on fd
# ``argv[6]`` how it ended ("<exit code or -signal> <CPU seconds>"), which tells a CPU-limit SIGKILL from a
# SIGKILL the code sent itself. The child does not hold that fd.
PRELUDE = r'''
import os, resource, sys
_cpu, _mem, _fsize, _nproc, _nofile, _report = (int(v) for v in sys.argv[1:7])
for _res, _soft, _hard in ((resource.RLIMIT_CPU, _cpu, _cpu + 1), (resource.RLIMIT_AS, _mem, _mem),
                           (resource.RLIMIT_FSIZE, _fsize, _fsize), (resource.RLIMIT_NPROC, _nproc, _nproc),
                           (resource.RLIMIT_NOFILE, _nofile, _nofile), (resource.RLIMIT_CORE, 0, 0)):
    resource.setrlimit(_res, (_soft, _hard))
_pid = os.fork()
if _pid:
    _, _status, _usage = os.wait4(_pid, 0)
    _code = os.waitstatus_to_exitcode(_status)
    os.write(_report, b"%d %.3f" % (_code, _usage.ru_utime + _usage.ru_stime))
    os._exit(_code if _code >= 0 else 128 - _code)
os.close(_report)
del _cpu, _mem, _fsize, _nproc, _nofile, _report, _res, _soft, _hard, _pid, resource
sys.argv = ["snippet.py"]
with open("snippet.py", encoding="utf-8", errors="replace") as _fh:
    _code = compile(_fh.read(), "snippet.py", "exec")
del _fh
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
'''

_DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_open", "pidfd_getfd",
    "pidfd_send_signal", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "open_by_handle_at",
    "name_to_handle_at", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "reboot", "swapon", "swapoff", "syslog", "acct", "quotactl",
    "lookup_dcookie", "vhangup", "fanotify_init", "sethostname", "setdomainname", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "ioperm", "iopl", "mbind", "move_pages",
    "migrate_pages", "uselib", "personality",
)
_CLONE_NS_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                   0x00000080)  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C


def _seccomp_module():
    """libseccomp's bindings: Debian's ``seccomp`` or PyPI's ctypes ``pyseccomp`` (same API), else None."""
    for name in ("seccomp", "pyseccomp"):
        try:
            return __import__(name)
        except (ImportError, OSError):  # OSError: the bindings are there, libseccomp.so is not
            continue
    return None


@functools.lru_cache(maxsize=1)
def _seccomp_bpf() -> bytes | None:
    """The filter as a BPF program for ``bwrap --seccomp``: allow by default, refuse the listed calls."""
    sc = _seccomp_module()
    if sc is None:
        return None
    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    for name in _DENIED_SYSCALLS:
        try:
            filt.add_rule(sc.ERRNO(errno.EPERM), name)
        except (ValueError, RuntimeError, OSError):  # a call this libseccomp does not know
            continue
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # its flags are behind a pointer: libc falls back to clone
    for flag in _CLONE_NS_FLAGS:
        filt.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for request in (_TIOCSTI, _TIOCLINUX):
        filt.add_rule(sc.ERRNO(errno.EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    filt.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.NE, 1))  # AF_UNIX only
    fd = os.memfd_create("steplabel-seccomp")
    try:
        with os.fdopen(os.dup(fd), "wb") as fh:
            filt.export_bpf(fh)
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def _bwrap_path() -> str | None:
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.access(p, os.X_OK)), None)


@functools.lru_cache(maxsize=1)
def probe() -> SandboxSupport:
    """The best sandbox level this machine offers, checked by starting a real (empty) bwrap sandbox."""
    bwrap = _bwrap_path()
    seccomp = _seccomp_module()
    sc_name = seccomp.__name__ if seccomp else None
    if bwrap is None:
        return SandboxSupport("weak", None, None, sc_name, f"bubblewrap (bwrap) is not installed; {_INSTALL_HINT}")
    try:
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        trial = run_python("pass", wall_s=10, _level="namespaces")
    except (OSError, subprocess.SubprocessError) as exc:
        return SandboxSupport("weak", bwrap, None, sc_name, f"bwrap cannot start: {exc}")
    if trial.status != "ok":
        why = (trial.stderr.strip().splitlines() or [trial.detail])[-1]
        return SandboxSupport("weak", bwrap, version, sc_name,
                              f"bwrap cannot create namespaces here ({why}); user namespaces may be disabled")
    if sc_name is None or _seccomp_bpf() is None:
        return SandboxSupport("namespaces", bwrap, version, None, f"libseccomp's Python bindings are missing; {_INSTALL_HINT}")
    return SandboxSupport("isolated", bwrap, version, sc_name, "")


def require(allow_weak: bool = False) -> SandboxSupport:
    """The level to run code checks at; raises :class:`SandboxUnavailable` when it is below ``isolated``
    and ``allow_weak`` is false."""
    support = probe()
    if support.level != "isolated" and not allow_weak:
        raise SandboxUnavailable(
            f"code checks refused: the sandbox here is only {support.level!r} ({support.reason}); "
            "or set allow_weak_sandbox: true to accept a weaker one")
    return support


_SELF_TEST = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def fails(f):
    try:
        f()
    except OSError:
        return True
    return False
print(os.getuid() == 65534 and open("/proc/self/status").read().split("CapEff:")[1].split()[0] == "0" * 16)
print(sorted(p for p in os.listdir("/proc") if p.isdigit()) == ["1", "2", "3"])
print(sorted(l.split(":")[0].strip() for l in open("/proc/self/net/dev").readlines()[2:]) == ["lo"])
print(fails(lambda: open("/usr/steplabel-self-test", "w")) and not os.path.exists("/etc/passwd"))
print(libc.ptrace(16, 1, 0, 0) == -1 and ctypes.get_errno() == 1)
"""
_SELF_TEST_NAMES = ("unprivileged uid, no capabilities", "own pid namespace", "no network", "read-only, minimal filesystem",
                    "seccomp refuses ptrace")


def self_test(allow_weak: bool = False) -> dict[str, bool]:
    """Runs a probe snippet in the sandbox and says which isolation properties hold (all true when isolated)."""
    result = run_python(_SELF_TEST, allow_weak=allow_weak, wall_s=10, memory_mb=256)
    lines = result.stdout.split()
    return {name: i < len(lines) and lines[i] == "True" for i, name in enumerate(_SELF_TEST_NAMES)}


def _python_roots(python: str) -> list[str]:
    """Directories the interpreter needs, bound read-only at the same paths: its prefix and, for a venv,
    the venv and the base installation it points to."""
    roots = {os.path.dirname(os.path.dirname(os.path.abspath(python))),
             os.path.dirname(os.path.dirname(os.path.realpath(python)))}
    if python == sys.executable:
        roots |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    cfg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(python))), "pyvenv.cfg")
    if os.path.isfile(cfg):
        with open(cfg, encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition("=")
                if key.strip() == "home" and value.strip():
                    roots.add(os.path.dirname(os.path.realpath(value.strip())))
    roots = {os.path.realpath(r) if not os.path.islink(r) else r for r in roots}
    if "/" in roots:
        raise SandboxUnavailable(f"{python}: an interpreter installed at / cannot be bound read-only on its own")
    kept = sorted(r for r in roots if os.path.isdir(r))
    return [r for r in kept if not any(r != o and r.startswith(o + "/") for o in kept) and not r.startswith("/usr/")
            and r != "/usr"]


def _bwrap_argv(bwrap: str, python: str, binds: dict[str, str], tmpfs_mb: int, seccomp_fd: int | None,
                info_fd: int, code_fd: int) -> list[str]:
    """The bwrap command line; ``binds`` maps each sandbox path to the host path bound read-only there."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox", "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8", "--setenv", "HOME", _CWD,
            "--setenv", "TMPDIR", _CWD, "--setenv", "PYTHONHASHSEED", "0"]
    # The writable tmpfs first: an interpreter that lives under it (a checkout in /tmp) is bound on top of it.
    argv += ["--size", str(tmpfs_mb * 1024 * 1024), "--tmpfs", _CWD]
    for dest, src in binds.items():
        argv += ["--ro-bind", src, dest]
    for link in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(link):
            argv += ["--symlink", os.readlink(link), link]
    argv += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--file", str(code_fd), f"{_CWD}/snippet.py",
             "--remount-ro", "/", "--chdir", _CWD, "--info-fd", str(info_fd)]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return argv + ["--", python]


def _bind_sources(python: str) -> list[str]:
    sources = ["/usr"]
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.isdir(path) and not os.path.islink(path):
            sources.append(path)
    if os.path.isfile("/etc/ld.so.cache"):
        sources.append("/etc/ld.so.cache")
    return sources + _python_roots(python)


def _traversable(path: str) -> bool:
    """Whether any user can reach ``path`` (every directory above it has the others' x bit)."""
    parent = os.path.dirname(path)
    while parent != "/":
        if not os.stat(parent).st_mode & 0o001:
            return False
        parent = os.path.dirname(parent)
    return True


# As root, bwrap runs as SANDBOX_UID, which may not reach the interpreter (pyenv under a 0700 /root). This
# wrapper, in a private mount namespace of its own, first binds such paths (as root) onto a tmpfs that it
# mounts over an existing directory there (invisible to the host), then drops to SANDBOX_UID and runs bwrap.
_STAGE = r"""set -e
mount -t tmpfs -o mode=0755,size=64k steplabel-stage %(stage)s
i=0
while [ "$1" != -- ]; do mkdir %(stage)s/$i; mount --bind -o ro "$1" %(stage)s/$i; i=$((i + 1)); shift; done
shift
exec setpriv --reuid=%(uid)d --regid=%(uid)d --clear-groups -- "$@"
"""
_STAGE_CANDIDATES = ("/tmp", "/mnt", "/media", "/srv", "/opt", "/var/tmp", "/run")


def _stage_dir(sources: list[str]) -> str:
    """A directory the staging tmpfs may cover: one that holds none of the paths the sandbox binds (a checkout
    under /tmp keeps its venv visible)."""
    for candidate in _STAGE_CANDIDATES:
        if os.path.isdir(candidate) and not os.path.islink(candidate) and not any(
                s == candidate or s.startswith(candidate + "/") for s in sources):
            return candidate
    raise SandboxUnavailable("no directory to stage the interpreter in: every one of "
                             f"{', '.join(_STAGE_CANDIDATES)} holds a path the sandbox must see")


def _launch_argv(python: str, build) -> tuple[list[str], bool]:
    """The full command (bwrap, wrapped when root must stage paths) and whether Popen must drop to
    SANDBOX_UID itself. ``build(binds)`` returns the bwrap argv for a {sandbox path: host path} map."""
    sources = _bind_sources(python)
    if os.geteuid() != 0:
        return build({s: s for s in sources}), False
    hidden = [s for s in sources if not _traversable(s)]
    if not hidden:
        return build({s: s for s in sources}), True
    stage = _stage_dir(sources)
    binds = {s: s for s in sources if s not in hidden} | {s: f"{stage}/{i}" for i, s in enumerate(hidden)}
    wrapper = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
               _STAGE % {"uid": SANDBOX_UID, "stage": stage}, "stage", *hidden, "--"]
    return wrapper + build(binds), False


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
    tmpfs_mb: int = 16,
    python: str | None = None,
    allow_weak: bool = False,
    _level: str | None = None,
) -> SandboxResult:
    """Run ``code`` as ``snippet.py`` in the sandbox and report how it ended; never raises for anything the
    code does (only :class:`SandboxUnavailable` when the isolation cannot be had).

    ``status``: ``ok`` (exit 0), ``error`` (non-zero exit; ``detail`` is the last line of stderr),
    ``timeout`` (wall clock or CPU limit; ``detail`` says which), ``killed`` (a signal; ``detail`` names it),
    ``output_limit`` (more than ``max_output_bytes`` of stdout + stderr). ``layers`` lists what applied.
    """
    level = _level or require(allow_weak).level
    python = python or sys.executable
    limits = [max(1, int(cpu_s + 0.999)), int(memory_mb) << 20, int(file_size_kb) << 10, int(max_processes),
              int(max_open_files)]
    t0 = time.monotonic()
    report_r, report_w = os.pipe()
    try:
        argv_tail = ["-I", "-B", "-c", PRELUDE, *map(str, limits), str(report_w)]
        if level == "weak":
            proc, kind, detail, out_b, err_b, layers = _run_weak(code, python, argv_tail, report_w, t0, wall_s,
                                                                 max_output_bytes)
        else:
            proc, kind, detail, out_b, err_b, layers = _run_bwrap(code, python, argv_tail, report_w, t0, wall_s,
                                                                  max_output_bytes, tmpfs_mb, level == "isolated")
        report = _read_report(report_r)
    finally:
        os.close(report_r)
    return _result(kind, detail, proc.returncode, report, limits[0], out_b, err_b, t0, proc.pid, layers)


def _read_report(fd: int) -> tuple[int, float] | None:
    """The prelude's "<exit code or -signal> <CPU s>" line, or None when it did not write one (killed)."""
    os.set_blocking(fd, False)
    try:
        code, cpu = os.read(fd, 64).split()
        return int(code), float(cpu)
    except (OSError, ValueError):
        return None


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)  # no MFD_CLOEXEC: it is handed to bwrap
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _run_bwrap(code: str, python: str, argv_tail: list[str], report_w: int, t0: float, wall_s: float, cap: int,
               tmpfs_mb: int, seccomp: bool):
    bwrap = _bwrap_path()
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed; {_INSTALL_HINT}")
    opened: list[int] = []
    passed = [report_w]
    try:
        code_fd = _memfd("snippet", code.encode("utf-8", "surrogatepass"))
        opened.append(code_fd)
        seccomp_fd = None
        if seccomp:
            seccomp_fd = _memfd("seccomp", _seccomp_bpf() or b"")
            opened.append(seccomp_fd)
        info_r, info_w = os.pipe()
        opened.append(info_w)
        argv, drop = _launch_argv(
            python, lambda binds: _bwrap_argv(bwrap, python, binds, tmpfs_mb, seccomp_fd, info_w, code_fd) + argv_tail)
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
            pass_fds=tuple(opened + passed), start_new_session=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, cwd="/",
            user=SANDBOX_UID if drop else None, group=SANDBOX_UID if drop else None,
            extra_groups=[] if drop else None,
        )
    finally:
        for fd in opened:
            os.close(fd)
    init = _read_init_pid(info_r, t0 + wall_s)
    layers = ("bwrap", "userns", "pidns", "netns", "mountns", "ipcns", "ro_root", "tmpfs", "rlimits") + (
        ("seccomp",) if seccomp else ()) + (("host_uid_nobody",) if os.geteuid() == 0 else ())
    kind, detail, out_b, err_b = _pump(proc, t0, wall_s, cap)
    _finish(proc, init)
    return proc, kind, detail, out_b, err_b, layers


def _read_init_pid(fd: int, deadline: float) -> int | None:
    """bwrap's ``--info-fd`` JSON holds the host pid of the namespace's init (what must die at the end)."""
    data = b""
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
            if b"}" in data:
                break
    finally:
        os.close(fd)
    try:
        return int(json.loads(data.decode("utf-8", "replace"))["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None


def _finish(proc: subprocess.Popen, init: int | None) -> None:
    """SIGKILL bwrap and the namespace init (the kernel then kills everything inside), reap bwrap, and wait
    (at most a second) until the init is gone."""
    pidfd = None
    if init is not None:
        try:
            pidfd = os.pidfd_open(init)
        except OSError:
            pidfd = None
    for pid in (proc.pid, init):
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    proc.wait()
    if pidfd is not None:
        try:
            select.select([pidfd], [], [], 1.0)
        finally:
            os.close(pidfd)


def _run_weak(code: str, python: str, argv_tail: list[str], report_w: int, t0: float, wall_s: float, cap: int):
    """rlimits in a new session and a temp dir: for machines without bwrap, and only when allowed."""
    workdir = tempfile.mkdtemp(prefix="steplabel-sandbox-")
    try:
        with open(os.path.join(workdir, "snippet.py"), "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(code)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir, "PYTHONHASHSEED": "0"}
        proc = subprocess.Popen([python, *argv_tail], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                close_fds=True, pass_fds=(report_w,))
        os.close(report_w)
        kind, detail, out_b, err_b = _pump(proc, t0, wall_s, cap)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # best effort: weak mode does not contain hostile code
    return proc, kind, detail, out_b, err_b, ("session", "rlimits", "tempdir")


_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(data: bytes) -> str:
    """Output as text that any later encoder accepts: invalid UTF-8 replaced, lone surrogates removed."""
    return _SURROGATES.sub("\ufffd", data.decode("utf-8", "replace"))


def _result(kind: str | None, detail: str | None, rc: int | None, report: tuple[int, float] | None,
            cpu_limit: int, out_b: bytes, err_b: bytes, t0: float, pid: int, layers: tuple[str, ...]) -> SandboxResult:
    """Map how the run ended to a :class:`SandboxResult`. The prelude's report gives the code's own exit
    (-S for signal S) and CPU time: a SIGKILL is the CPU limit only when the CPU was used up. Without a
    report (the supervisor itself was killed) bwrap's 128 + S stands for signal S."""
    stdout, stderr = clean_text(out_b), clean_text(err_b)
    cpu_used = 0.0
    if report is not None:
        rc, cpu_used = report
    elif rc is not None and 128 < rc < 128 + 65 and "bwrap" in layers:
        rc = 128 - rc
    if kind is None:
        if rc == 0:
            kind = "ok"
        elif rc is not None and (rc == -signal.SIGXCPU or (rc == -signal.SIGKILL and cpu_used >= cpu_limit - 0.05)):
            kind, detail = "timeout", f"cpu limit ({cpu_used:.2f} s CPU)"
        elif rc is not None and rc < 0:
            kind, detail = "killed", f"signal {_signal_name(-rc)}"
        else:
            kind = "error"
            lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
            detail = lines[-1] if lines else f"exit code {rc}"
    return SandboxResult(kind, rc, stdout, stderr, time.monotonic() - t0, detail or "", pid, layers)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _exited(pid: int, timeout: float) -> bool:
    """Whether ``pid`` (our child) exits within ``timeout`` s, without reaping it (its rusage is read later)."""
    fd = os.pidfd_open(pid)
    try:
        return bool(select.select([fd], [], [], max(0.0, timeout))[0])
    finally:
        os.close(fd)


def _pump(proc: subprocess.Popen, t0: float, wall_s: float, cap: int) -> tuple[str | None, str | None, bytes, bytes]:
    """Read stdout/stderr until EOF, the wall deadline, or the output cap: (status, detail, out, err); the
    status is None when the process ended on its own."""
    sel = selectors.DefaultSelector()
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    for f in bufs:
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    total = 0
    deadline = t0 + wall_s
    kind = detail = None
    try:
        while sel.get_map() and kind is None:
            left = deadline - time.monotonic()
            if left <= 0:
                kind, detail = "timeout", f"wall clock > {wall_s:g} s"
                break
            for key, _ in sel.select(timeout=min(left, 0.5)):
                try:
                    chunk = os.read(key.fileobj.fileno(), 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                bufs[key.fileobj] += chunk[: max(cap - total, 0)]
                total += len(chunk)
                if total > cap:
                    kind, detail = "output_limit", f"more than {cap} bytes of output"
                    break
        if kind is None and not _exited(proc.pid, deadline - time.monotonic()):
            kind, detail = "timeout", f"wall clock > {wall_s:g} s"  # pipes closed, but no exit in time
    finally:
        sel.close()
        for f in bufs:
            f.close()
    return kind, detail, bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr])
