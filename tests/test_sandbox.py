"""The sandbox contains hostile snippets: each forbidden effect is checked directly, not just the status."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from steplabel.checks import sandbox
from steplabel.checks.sandbox import clean_text, run_python

pytestmark = pytest.mark.skipif(sandbox.probe().level != "isolated", reason="bubblewrap + libseccomp not available here")

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
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-aws")
    code = "import os\nprint(sorted(os.environ))\nprint(open('/proc/self/environ','rb').read())"
    r = run_python(code, **FAST)
    assert r.status == "ok" and "secret" not in r.stdout and "HF_TOKEN" not in r.stdout
    assert r.stdout.splitlines()[0] == "['HOME', 'LANG', 'PATH', 'PWD', 'PYTHONHASHSEED', 'TMPDIR']"


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


def test_fresh_namespaces_and_layers():
    code = ("import os\nprint(sorted(l.split(':')[0].strip() for l in open('/proc/self/net/dev').readlines()[2:]))\n"
            "print(sorted(p for p in os.listdir('/proc') if p.isdigit()))\nprint(sorted(os.listdir('/')))\n"
            f"print(os.path.exists({str(Path(__file__))!r}), os.path.exists('/etc/passwd'))")
    r = run_python(code, **FAST)
    net, pids, root, hidden = r.stdout.splitlines()
    assert r.status == "ok" and net == "['lo']"  # no network but a loopback
    assert pids == "['1', '2', '3']"  # bwrap's init, the prelude's supervisor, the code: nothing of the host
    assert "'home'" not in root and "'etc'" in root and hidden == "False False"  # only the interpreter's dirs
    assert {"bwrap", "pidns", "netns", "seccomp", "rlimits"} <= set(r.layers)


def test_raise_sigkill_is_killed_not_a_cpu_timeout():
    r = run_python("import signal\nsignal.raise_signal(signal.SIGKILL)", **FAST)
    assert (r.status, r.exit_code, r.detail) == ("killed", -9, "signal SIGKILL")


def test_process_limit_is_exact_inside_the_namespace():
    code = ("import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(5)\n"
            "            os._exit(0)\n        n += 1\nexcept OSError:\n    print(n)")
    r = run_python(code, **{**FAST, "max_processes": 8})
    assert r.status == "ok" and int(r.stdout) == 5  # 8 - init - supervisor - the code itself


def test_nothing_outlives_the_run():
    token = "linger" + uuid.uuid4().hex[:10]
    r = run_python(f"import subprocess\nsubprocess.Popen(['setsid', 'sh', '-c', 'exec -a {token} sleep 60'])", **FAST)
    assert r.status == "ok"
    alive = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, token)]
    assert alive == []


def _cmdline_has(pid: str, token: str) -> bool:
    try:
        return token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_output_is_always_encodable():
    r = run_python("import sys\nsys.stdout.buffer.write(b'a\\xed\\xa0\\x80b\\xff')", **FAST)
    assert r.stdout == "a\ufffd\ufffd\ufffdb\ufffd" and r.stdout.encode("utf-8")
    assert clean_text("x\ud800".encode("utf-8", "surrogatepass")) == "x\ufffd\ufffd\ufffd"


def test_refuses_without_isolation_and_weak_mode_when_allowed(monkeypatch):
    monkeypatch.setattr(sandbox, "probe", lambda: sandbox.SandboxSupport("namespaces", "/usr/bin/bwrap", "0.8.0", None,
                                                                         "libseccomp's Python bindings are missing"))
    with pytest.raises(sandbox.SandboxUnavailable, match="only 'namespaces' .libseccomp"):
        run_python("print(1)", **FAST)
    r = run_python("print(1)", allow_weak=True, **FAST)  # the best level available: bwrap without seccomp
    assert r.status == "ok" and "bwrap" in r.layers and "seccomp" not in r.layers


def test_probe_reports_isolated_here():
    support = sandbox.probe()
    assert support.level == "isolated" and support.reason == "" and support.bwrap_version.startswith("bubblewrap")


def test_an_interpreter_in_a_venv_under_tmp_runs(tmp_path):
    """A checkout under /tmp (CI's fresh clone) has its venv there; staging the base interpreter must not hide
    it, so the staging tmpfs goes over a directory that holds no bound path."""
    import subprocess
    import sys

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    r = run_python("import sys; print(sys.prefix)", python=str(venv / "bin" / "python"), **FAST)
    assert (r.status, r.stdout.strip()) == ("ok", str(venv)), r
    assert sandbox._stage_dir([str(venv), "/usr"]) != "/tmp"
