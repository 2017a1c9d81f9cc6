from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from steplabel.checks.code_verifier import (
    build_prompt,
    extract_code,
    verdict_from_result,
    verify_steps_with_code,
)
from steplabel.checks.code_verifier_config import CodeVerifierConfig
from steplabel.rollouts.engines.base import Completion, GenerationRequest, GenerationResult
from steplabel.checks import sandbox
from steplabel.checks.sandbox import SandboxResult

STEPS = ["12 * 5 = 60", "60 + 7 = 68", "The answer is 68."]


def test_build_prompt_shows_context_and_step():
    p = build_prompt("What is 12*5+7?", STEPS, 1)
    assert "What is 12*5+7?" in p and "Step 1: 12 * 5 = 60" in p and "Step 2 to check:\n60 + 7 = 68" in p
    assert "<analyze>" in p and "```python" in p and "Step 3" not in p
    with pytest.raises(IndexError):
        build_prompt("q", STEPS, 3)


@pytest.mark.parametrize(
    ("output", "code"),
    [
        ("<analyze>x</analyze>\n<verify>\n```python\nassert 60 + 7 == 67\n```\n</verify>", "assert 60 + 7 == 67"),
        ("```python\nprint(1)\n```\nthen\n```python\nassert 2 == 2\n```", "assert 2 == 2"),
        ("```python\nprint(1)\n```\n<verify>\n```py\nassert 3 == 3\n```", "assert 3 == 3"),
        ("<verify>\n```python\nassert 4 == 4\n", "assert 4 == 4"),  # cut off by the stop string
        ("no code here", None),
        ("```python\n\n```", None),
    ],
)
def test_extract_code(output, code):
    assert extract_code(output) == code


def _sb(status, rc, stderr="", detail=""):
    return SandboxResult(status, rc, "", stderr, 0.1, detail)


def test_verdict_mapping():
    assert verdict_from_result(_sb("ok", 0)) == ("verified", None)
    v, ev = verdict_from_result(_sb("error", 1, "Traceback...\nAssertionError: 67 != 68", "AssertionError: 67 != 68"))
    assert v == "refuted" and ev == "AssertionError: 67 != 68"
    assert verdict_from_result(_sb("error", 1, "ZeroDivisionError: x", "ZeroDivisionError: x"))[0] == "unknown"
    v, ev = verdict_from_result(_sb("timeout", None, "", "wall clock > 5 s"))
    assert v == "unknown" and "timeout" in ev
    assert verdict_from_result(_sb("output_limit", None))[0] == "unknown"
    assert verdict_from_result(None)[0] == "unknown"


class FakeEngine:
    model_name = "fake"

    def __init__(self, outputs: list[str | None]):
        self.outputs = outputs
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(list(requests))
        out = []
        for text in self.outputs[: len(requests)]:
            if text is None:
                out.append(GenerationResult(error="boom"))
            else:
                out.append(GenerationResult(completions=[Completion(text, "stop", 7)]))
        return out

    def close(self) -> None:
        pass


def test_verify_steps_with_code_end_to_end_in_the_real_sandbox():
    outputs = [
        "<analyze>ok</analyze><verify>\n```python\nassert 12 * 5 == 60\nprint('ok')\n```",
        "<analyze>bad</analyze><verify>\n```python\nassert 60 + 7 == 68, 60 + 7\n```",
        "<verify>\n```python\nimport time\nwhile True: pass\n```",
        "I will not write code",
        None,
    ]
    engine = FakeEngine(outputs)
    steps = STEPS + ["x", "y"]
    cfg = CodeVerifierConfig(cpu_s=1, wall_s=2)
    got = verify_steps_with_code(engine, "What is 12*5+7?", steps, cfg)
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 5  # one batched call
    assert len({r.seed for r in engine.calls[0]}) == 5 and all(r.stop == ("</verify>",) for r in engine.calls[0])
    assert [g.verdict for g in got] == ["verified", "refuted", "unknown", "unknown", "unknown"]
    assert got[0].sandbox.stdout.strip() == "ok"
    assert got[1].evidence == "AssertionError: 67"
    assert "timeout" in got[2].evidence
    assert got[3].evidence.startswith("no python block") and got[4].evidence.startswith("engine error")


def test_verify_steps_with_code_hostile_check_is_contained(tmp_path):
    marker = tmp_path / "escaped"
    os.chmod(tmp_path, 0o777)
    code = f"import os\nos.system('touch {marker}')\nopen('{marker}', 'w').write('x')"
    engine = FakeEngine([f"<verify>\n```python\n{code}\n```"])
    got = verify_steps_with_code(engine, "q", ["s"], CodeVerifierConfig(cpu_s=1, wall_s=2))
    assert got[0].verdict == "unknown" and "FileNotFoundError" in got[0].evidence  # the host path is not there
    assert not marker.exists()


def test_code_checks_refuse_without_isolation_unless_weak_is_allowed(monkeypatch):
    weak = sandbox.SandboxSupport("weak", None, None, None, "bubblewrap (bwrap) is not installed")
    monkeypatch.setattr(sandbox, "probe", lambda: weak)
    engine = FakeEngine(["<verify>\n```python\nassert 1 + 1 == 2\n```"])
    with pytest.raises(sandbox.SandboxUnavailable, match="only 'weak' .bubblewrap .bwrap. is not installed.*allow_weak_sandbox"):
        verify_steps_with_code(engine, "q", ["s"], CodeVerifierConfig(cpu_s=1, wall_s=2))
    assert engine.calls == []  # refused before any engine time was spent
    got = verify_steps_with_code(engine, "q", ["s"], CodeVerifierConfig(cpu_s=1, wall_s=2, allow_weak_sandbox=True))
    assert got[0].verdict == "verified" and got[0].sandbox.layers == ("session", "rlimits", "tempdir")
