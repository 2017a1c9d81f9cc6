"""GenPRM-style code verification of steps.

For step t a model gets the question, the earlier steps and step t, and answers with ``<analyze>...</analyze>``
then ``<verify>`` holding a fenced ```python block that asserts what step t claims. The last fenced python
block is run in :func:`steplabel.checks.sandbox.run_python`:

* exit 0                      -> ``verified``
* AssertionError              -> ``refuted`` (the assertion message/traceback tail is the evidence)
* anything else (no code, other exception, timeout, killed, output limit) -> ``unknown``

The pure parts (:func:`build_prompt`, :func:`extract_code`, :func:`verdict_from_result`) need no engine.
:func:`code_check_run` is the check as a generator for the wave driver (one engine request per step, all
in one yield), so the checks of a whole shard share one engine call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from steplabel.labelers.base import CheckRun
from steplabel.checks.code_verifier_config import CodeVerifierConfig
from steplabel.labelers.driver import WaveDriver
from steplabel.rollouts.engines.base import Engine, GenerationRequest, derive_seed
from steplabel.checks.sandbox import SandboxResult, require, run_python

__all__ = ["CodeVerdict", "build_prompt", "code_check_run", "extract_code", "verdict_from_result",
           "verify_steps_with_code"]

PROMPT_TEMPLATE = """You are checking one step of a math solution with Python.

Question:
{question}

Earlier steps:
{previous}

Step {index} to check:
{step}

First explain inside <analyze></analyze> what step {index} claims. Then, inside <verify></verify>, write one
```python``` block that recomputes the claim from the question and earlier steps and uses `assert` to check it
(print intermediate values). Use only the standard library and sympy. The check must fail with an
AssertionError exactly when step {index} is wrong.

<analyze>
"""

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_FENCE_OPEN = re.compile(r"```[ \t]*(?:python|py|python3)[ \t]*\n(.*)\Z", re.DOTALL | re.IGNORECASE)


@dataclass
class CodeVerdict:
    verdict: str  # verified | refuted | unknown
    code: str | None
    evidence: str | None
    sandbox: SandboxResult | None = None
    tokens: int = 0


def build_prompt(question: str, steps: Sequence[str], index: int) -> str:
    """Prompt asking for a Python check of ``steps[index]`` (0-based; shown 1-based to the model)."""
    if not 0 <= index < len(steps):
        raise IndexError(f"step index {index} out of range for {len(steps)} steps")
    previous = "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps[:index])) or "(none)"
    return PROMPT_TEMPLATE.format(question=question.strip(), previous=previous, index=index + 1,
                                  step=steps[index].strip())


def extract_code(output: str) -> str | None:
    """The last fenced python block of a model output (preferring the ``<verify>`` part; an unclosed final
    block counts), or None."""
    verify = output.rfind("<verify>")
    for text in ([output[verify:]] if verify != -1 else []) + [output]:
        blocks = [b for b in _FENCE.findall(text) if b.strip()]
        if blocks:
            return blocks[-1].strip("\n")
    tail = _FENCE_OPEN.search(output)
    if tail and tail.group(1).strip() and "```" not in tail.group(1):
        return tail.group(1).split("</verify>")[0].rstrip()
    return None


def verdict_from_result(result: SandboxResult | None) -> tuple[str, str | None]:
    """Map a sandbox run to (verdict, evidence)."""
    if result is None:
        return "unknown", "no python block in the model output"
    if result.status == "ok" and result.exit_code == 0:
        return "verified", None
    if result.status == "error" and _is_assertion(result.stderr):
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
        return "refuted", lines[-1] if lines else "AssertionError"
    return "unknown", f"sandbox {result.status}: {result.detail}".strip()


def _is_assertion(stderr: str) -> bool:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return bool(lines) and lines[-1].startswith("AssertionError")


def code_check_run(
    question: str,
    steps: Sequence[str],
    config: CodeVerifierConfig | None = None,
    *,
    runner: Callable[..., SandboxResult] = run_python,
    indices: Sequence[int] | None = None,
) -> CheckRun:
    """Checks of the steps ``indices`` (default: every step): one request per step, all yielded together, then
    one sandbox run per extracted block. Returns one :class:`CodeVerdict` per checked step, in order; an
    engine error leaves its step ``unknown`` with the error as evidence."""
    cfg = config or CodeVerifierConfig()
    if runner is run_python:  # refuse before any engine time is spent, with the reason on one line
        require(cfg.allow_weak_sandbox)
    indices = range(len(steps)) if indices is None else indices
    requests = [
        GenerationRequest(
            prompt=build_prompt(question, steps, i), n=1, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
            top_p=cfg.top_p, stop=cfg.stop, seed=derive_seed(cfg.seed, "code_verifier", question, i, steps[i]),
        )
        for i in indices
    ]
    if not requests:
        return []
    outcomes = yield requests
    out: list[CodeVerdict] = []
    for outcome in outcomes:
        if outcome.error or not outcome.texts:
            out.append(CodeVerdict("unknown", None, f"engine error: {outcome.error or 'no completion'}"))
            continue
        code = extract_code(outcome.texts[0])
        if code is None:
            out.append(CodeVerdict("unknown", None, "no python block in the model output", tokens=outcome.tokens))
            continue
        sb = runner(code, cpu_s=cfg.cpu_s, wall_s=cfg.wall_s, memory_mb=cfg.memory_mb,
                    max_output_bytes=cfg.max_output_bytes, max_processes=cfg.max_processes, tmpfs_mb=cfg.tmpfs_mb,
                    allow_weak=cfg.allow_weak_sandbox)
        verdict, evidence = verdict_from_result(sb)
        out.append(CodeVerdict(verdict, code, evidence, sb, tokens=outcome.tokens))
    return out


def verify_steps_with_code(
    engine: Engine,
    question: str,
    steps: Sequence[str],
    config: CodeVerifierConfig | None = None,
    *,
    runner: Callable[..., SandboxResult] = run_python,
    indices: Sequence[int] | None = None,
) -> list[CodeVerdict]:
    """:func:`code_check_run` for one solution on ``engine`` (one ``generate`` call)."""
    check = code_check_run(question, steps, config, runner=runner, indices=indices)
    return WaveDriver(engine).run_checks({"steps": check}).labels["steps"]
