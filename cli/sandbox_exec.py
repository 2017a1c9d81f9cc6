"""``steplabel sandbox-exec FILE.py``: run a file through exactly the sandbox the code verifier uses."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from steplabel.checks.code_verifier_config import CodeVerifierConfig
from steplabel.checks.sandbox import SandboxUnavailable, run_python
from steplabel.cli.common import console, fail


def sandbox_exec_command(
    file: Annotated[Path, typer.Argument(help="the Python file to run")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    allow_weak: Annotated[bool, typer.Option("--allow-weak-sandbox", help="run even without bubblewrap + seccomp")] = False,
) -> None:
    """Run FILE in the code verifier's sandbox (its default limits) and print status, exit code and output."""
    try:
        code = file.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as error:
        fail(f"{file}: {error.strerror or error}")
    cfg = CodeVerifierConfig(allow_weak_sandbox=allow_weak)
    try:
        r = run_python(code, cpu_s=cfg.cpu_s, wall_s=cfg.wall_s, memory_mb=cfg.memory_mb,
                       max_output_bytes=cfg.max_output_bytes, max_processes=cfg.max_processes, tmpfs_mb=cfg.tmpfs_mb,
                       allow_weak=cfg.allow_weak_sandbox)
    except SandboxUnavailable as error:
        fail(str(error))
    out = {"status": r.status, "exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
           "detail": r.detail, "wall_s": round(r.wall_s, 3), "layers": list(r.layers)}
    if as_json:
        sys.stdout.write(json.dumps(out) + "\n")
        return
    console.print(f"status {r.status} (exit code {r.exit_code}) {r.detail} in {r.wall_s:.2f} s; layers: {', '.join(r.layers)}",
                  highlight=False, markup=False)
    for name in ("stdout", "stderr"):
        if out[name]:
            console.print(f"--- {name}\n{out[name].rstrip()}", highlight=False, markup=False)
