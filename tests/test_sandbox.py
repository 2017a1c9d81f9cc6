"""The sandbox contains hostile snippets: each forbidden effect is checked directly, not just the status."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from steplabel.checks.sandbox import run_python

FAST = {"cpu_s": 1, "wall_s": 2, "memory_mb": 256, "max_output_bytes": 4000}


def _group_gone(pid: int | None) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _benign_still_works() -> None:
    r = run_python("print(6 * 7)", **FAST)
    assert r.status == "ok" and r.stdout.strip() == "42"


def test_benign_run_and_assertion():
    r = run_python("import sympy\nprint(sympy.Rational(1, 3) + sympy.Rational(1, 6))", memory_mb=512)
    assert (r.status, r.exit_code, r.stdout.strip()) == ("ok", 0, "1/2")
    r = run_python("assert 2 + 2 == 5, 'arith'", **FAST)
    assert r.status == "error" and r.detail.startswith("AssertionError") and "arith" in r.detail


def test_writes_inside_the_temp_dir_are_allowed_and_cwd_is_fresh():
    r = run_python("open('a.txt','w').write('hi')\nimport os\nprint(open('a.txt').read(), os.listdir('.'))", **FAST)
    assert r.status == "ok" and r.stdout.startswith("hi ") and "snippet.py" in r.stdout


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret-xyz")
    monkeypatch.setenv("OPENAI_API_KEY", "secret-key-abc")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-aws")
    code = (
        "import os\nprint(sorted(os.environ))\nprint(os.environ.get('HF_TOKEN'))\n"
        "print(open('/proc/self/environ','rb').read())\n"
        "try:\n    print(open('/proc/%d/environ' % os.getppid(),'rb').read())\nexcept Exception as e:\n    print(type(e).__name__)\n"
    )
    r = run_python(code, **FAST)
    out = r.stdout + r.stderr
    assert "secret" not in out
    assert "HF_TOKEN" not in out and "AWS_" not in out and "_KEY" not in out
    assert r.status == "ok" and "PermissionError" in out


HOSTILE = {
    "socket_dns": "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.connect(('1.1.1.1',53))\nprint('connected')",
    "socket_local": "import _socket\ns=_socket.socket()\ns.connect(('127.0.0.1',22))\nprint('connected')",
    "urllib": "import urllib.request\nprint(urllib.request.urlopen('http://1.1.1.1').read())\nprint('connected')",
    "subprocess": "import subprocess\nsubprocess.run(['sh','-c','touch {marker}'])\nprint('spawned')",
    "os_system": "import os\nos.system('touch {marker}')\nprint('spawned')",
    "execv": "import os\nos.execv('/bin/sh', ['sh','-c','touch {marker}'])",
    "posixsubprocess": "import _posixsubprocess, os\n_posixsubprocess.fork_exec(['/bin/touch','{marker}'],[b'/bin/touch'],True,(),None,None,-1,-1,-1,-1,-1,-1,-1,-1,False,False,None,None,None,-1,None,False)\nprint('spawned')",
    "pty_spawn": "import pty\npty.spawn(['/bin/sh','-c','touch {marker}'])",
    "fork_bomb": "import os\nwhile True:\n    os.fork()",
    "multiprocessing": "import multiprocessing as mp\np = mp.Process(target=open, args=('{marker}','w'))\np.start(); p.join()",
    "ctypes_system": "import ctypes\nctypes.CDLL(None).system(b'touch {marker}')",
    "ctypes_fork": "import ctypes\nctypes.pythonapi.fork()",
    "ctypes_memmove": "import ctypes\nctypes.memset(0, 0, 8)",
    "write_tmp": "open('{marker}','w').write('x')",
    "write_bashrc": "import os\nopen(os.path.expanduser('~') + '/../../root/.bashrc','a').write('pwned')\nopen('/root/.bashrc','a').write('pwned')",
    "write_work": "open('/work/escape-{uid}','w').write('x')",
    "write_via_chdir": "import os\nos.chdir('/tmp')\nopen('escape-{uid}-cd','w').write('x')",
    "symlink": "import os\nos.symlink('{marker}', 'link')\nopen('link','w').write('x')",
    "os_open": "import os\nfd = os.open('{marker}', os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')",
    "pathlib_write": "import pathlib\npathlib.Path('{marker}').write_text('x')",
    "rename_out": "import os\nopen('x','w').write('x')\nos.rename('x', '{marker}')",
    "kill_parent": "import os\nos.kill(os.getppid(), 9)",
    "killpg_parent": "import os\nos.killpg(os.getpgid(os.getppid()), 9)",
    "signal_thread": "import signal, threading\nsignal.pthread_kill(threading.main_thread().ident, 9)",
    "audit_monkeypatch": "import sys\nsys.audit = lambda *a: None\nsys.addaudithook = lambda h: None\nimport builtins\nbuiltins.__import__ = __import__\nopen('{marker}','w').write('x')",
    "gc_hook_hunt": "import gc\nfor o in gc.get_objects():\n    pass\nopen('{marker}','w').write('x')",
    "main_module_hunt": "import sys\nm = sys.modules['__main__']\nprint(sorted(vars(m)))\nopen('{marker}','w').write('x')",
    "frame_hunt": "import sys\ntry:\n    open('{marker}','w')\nexcept PermissionError as e:\n    tb = e.__traceback__\n    while tb.tb_next: tb = tb.tb_next\n    f = tb.tb_frame\n    for k, v in list(f.f_locals.items()):\n        pass\n    f.f_globals['__builtins__']\nopen('{marker}','w').write('x')",
    "resource_raise": "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nx = bytearray(10**10)",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_snippet_is_contained(name, tmp_path):
    uid = uuid.uuid4().hex
    marker = f"/tmp/escape-{uid}"
    code = HOSTILE[name].format(marker=marker, uid=uid)
    parent = os.getpid()
    r = run_python(code, **FAST)
    assert r.status in {"error", "timeout", "killed"}, (name, r)
    assert r.detail  # a clear reason
    for leaked in ("connected", "spawned"):
        assert leaked not in r.stdout
    assert not Path(marker).exists()
    assert not Path(f"/work/escape-{uid}").exists()
    assert not Path(f"/tmp/escape-{uid}-cd").exists()
    assert "pwned" not in (Path("/root/.bashrc").read_text() if Path("/root/.bashrc").exists() else "")
    os.kill(parent, 0)  # we are alive
    assert _group_gone(r.pid)
    _benign_still_works()


def test_cpu_bound_loop_times_out_on_cpu():
    r = run_python("while True:\n    pass", cpu_s=1, wall_s=5)
    assert r.status == "timeout" and "cpu" in r.detail
    assert _group_gone(r.pid)


def test_sleep_forever_times_out_on_wall_clock():
    r = run_python("import time\ntime.sleep(3600)", cpu_s=1, wall_s=1)
    assert r.status == "timeout" and "wall" in r.detail and r.wall_s < 3
    assert _group_gone(r.pid)


def test_signal_alarm_games_end_the_child_only():
    r = run_python("import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.alarm(1)\ntime.sleep(3600)",
                   cpu_s=1, wall_s=1.5)
    assert r.status == "timeout"
    r = run_python("import signal, time\nsignal.alarm(1)\ntime.sleep(5)", cpu_s=1, wall_s=3)
    assert r.status == "killed" and "SIGALRM" in r.detail
    _benign_still_works()


@pytest.mark.parametrize("code", ["x = bytearray(10**10)", "x = []\nwhile True:\n    x.append(' ' * 10**6)"])
def test_memory_bombs_fail_cleanly(code):
    r = run_python(code, cpu_s=2, wall_s=5, memory_mb=256)
    assert r.status in {"error", "killed"} and ("MemoryError" in r.detail or "signal" in r.detail), r
    _benign_still_works()


def test_thread_bomb_is_bounded():
    code = "import threading, time\nfor _ in range(100000):\n    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()"
    r = run_python(code, cpu_s=1, wall_s=2, memory_mb=256)
    assert r.status in {"error", "timeout"} and ("thread" in r.detail.lower() or "wall" in r.detail or "Memory" in r.detail)
    assert _group_gone(r.pid)


def test_huge_output_is_capped():
    r = run_python("while True:\n    print('x' * 10**6)", cpu_s=2, wall_s=5, max_output_bytes=10_000)
    assert r.status == "output_limit" and len(r.stdout) <= 10_000
    assert _group_gone(r.pid)


def test_huge_file_in_the_temp_dir_hits_rlimit_fsize():
    r = run_python("open('big.bin','wb').write(b'x' * 10**7)", file_size_kb=64, **{k: v for k, v in FAST.items()})
    assert r.status == "error" and "File too large" in r.detail


def test_network_namespace_or_hook_blocks_raw_network():
    code = "print(sorted(l.split(':')[0].strip() for l in open('/proc/self/net/dev').readlines()[2:]))"
    r = run_python(code, **FAST)
    if "netns" in r.layers:
        assert r.stdout.strip() == "['lo']"  # a fresh namespace: loopback only (and down)
    assert r.status == "ok"
    assert "audit_hook" in r.layers and "rlimits" in r.layers


def test_parent_is_unaffected_by_sigkill_of_group():
    r = run_python("import os\nprint(os.getpgid(0) == os.getpid())", **FAST)
    assert r.stdout.strip() == "True"  # the child leads its own group: killpg never reaches us
    assert os.getpgid(0) != r.pid
    assert signal.SIGKILL
