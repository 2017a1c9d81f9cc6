"""``steplabel doctor``: what this machine offers (sandbox level, engines, Prefect API, browser), with a
self-test of the sandbox."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from typing import Annotated, Any

import typer

from steplabel.checks import sandbox
from steplabel.cli.common import console


def machine_report() -> dict[str, Any]:
    """The facts ``doctor`` prints; the sandbox self-test runs only where bwrap can start."""
    support = sandbox.probe()
    checks = sandbox.self_test(allow_weak=True) if support.level != "weak" else {}
    return {
        "sandbox": {"level": support.level, "bwrap": support.bwrap_version, "seccomp": support.seccomp,
                    "reason": support.reason, "self_test": checks,
                    "code_checks": "run" if support.level == "isolated" and all(checks.values())
                    else "refused unless allow_weak_sandbox: true"},
        "engines": {name: importlib.util.find_spec(module) is not None
                    for name, module in (("llama_cpp", "llama_cpp"), ("vllm", "vllm"), ("openai", "httpx"))}
        | {"vllm_worker_python": os.environ.get("STEPLABEL_VLLM_PYTHON")},
        "prefect_api": os.environ.get("PREFECT_API_URL") or "ephemeral (no PREFECT_API_URL)",
        "browser": shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome"),
    }


def doctor_command(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Report what this machine offers: sandbox level (with a self-test), engines, Prefect API, browser."""
    report = machine_report()
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sb = report["sandbox"]
        console.print(f"sandbox: {sb['level']} ({sb['bwrap'] or 'no bwrap'}, seccomp via {sb['seccomp'] or 'nothing'})"
                      f"{' - ' + sb['reason'] if sb['reason'] else ''}", highlight=False, markup=False)
        for name, ok in sb["self_test"].items():
            console.print(f"  {'ok  ' if ok else 'FAIL'} {name}", highlight=False, markup=False)
        console.print(f"  code checks: {sb['code_checks']}", highlight=False, markup=False)
        console.print("engines: " + ", ".join(f"{k}={v}" for k, v in report["engines"].items()), highlight=False, markup=False)
        console.print(f"prefect api: {report['prefect_api']}", highlight=False, markup=False)
        console.print(f"browser: {report['browser'] or 'none (the report browser test skips)'}", highlight=False, markup=False)
    if report["sandbox"]["self_test"] and not all(report["sandbox"]["self_test"].values()):
        raise typer.Exit(1)
