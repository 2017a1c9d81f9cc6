"""Data-driven check on BIG-Bench Mistake multistep arithmetic (skips when ../shared/data is absent)."""

from __future__ import annotations

import json

import pytest

from benchmarks.verifiers import (
    DEFAULT_DATA,
    confirmed_false,
    evaluate,
    independent_value,
)
from steplabel.checks.sympy_verifier import SympyVerifierConfig, verify_solution

pytestmark = pytest.mark.skipif(not DEFAULT_DATA.exists(), reason=f"{DEFAULT_DATA} not found")


@pytest.fixture(scope="module")
def rows():
    return [json.loads(line) for line in DEFAULT_DATA.read_text().splitlines() if line.strip()]


def test_false_alarm_rate_at_most_two_percent(rows):
    res = evaluate(rows, SympyVerifierConfig())
    # every refutation on a "no mistake" trace must be a claim that is really false (a label error)
    assert res["false_alarm_rate_audited"] <= 0.02
    assert res["acc_err"] >= 0.9 and res["step_precision_refuted_raw"] >= 0.85


def test_every_refuted_claim_on_unlabelled_traces_is_really_false(rows):
    for row in rows:
        if row["mistake_index"] is not None:
            continue
        sv = verify_solution(row["steps"])
        for step in sv.steps:
            for claim in step.claims:
                if claim.holds is False:
                    assert confirmed_false(claim), claim
                if claim.holds is True and claim.kind == "arithmetic":
                    a, b = independent_value(claim.lhs), independent_value(claim.rhs)
                    assert a is None or b is None or a == b, claim


def test_independent_value():
    assert independent_value("((-1 + 2) * (3 - -4))") == 7
    assert independent_value("2^10 / 4") == 256
    assert independent_value("x + 1") is None
