"""Precision of the sympy verifier on prose: GSM8K's human reference solutions are correct, so a refuted
step there is (almost always) a false alarm. Skips where ../shared/data is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.verifiers import (
    GSM8K_MODEL_SOLUTIONS,
    gsm8k_reference_steps,
    gsm8k_right_answer_model_steps,
    reference_refutations,
)
from steplabel.checks.sympy_verifier import verify_step
from steplabel.checks.sympy_verifier_config import SympyVerifierConfig

GSM8K_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"


@pytest.mark.skipif(not GSM8K_TEST.exists(), reason="../shared/data is not present")
def test_reference_solutions_are_almost_never_refuted():
    result = reference_refutations(gsm8k_reference_steps(GSM8K_TEST), SympyVerifierConfig())
    assert result["solutions"] == 1319
    # Measured: 4 of 1319, each a literally false chain in the reference text (e.g. "$32 - $20 = $300").
    assert result["rate"] <= 0.005, result["refuted"]


@pytest.mark.skipif(not GSM8K_MODEL_SOLUTIONS.exists(), reason="../shared/data is not present")
def test_model_solutions_with_a_right_answer_are_rarely_refuted():
    result = reference_refutations(gsm8k_right_answer_model_steps(GSM8K_MODEL_SOLUTIONS), SympyVerifierConfig())
    assert result["solutions"] == 2001
    # Measured: 13 of 2001, every one false as written (e.g. "$4.20 + $9.45 + $1.35 = $14.99").
    assert result["rate"] <= 0.01, result["refuted"]
    assert any("5-3=2.5 minutes" in step for step, _ in result["refuted"])


@pytest.mark.parametrize(
    ("step", "verdict"),
    [
        ("Omar has 8 * 9 = 74 apples.", "refuted"),  # unit on the result only: still checked
        ("Omar has 8 * 9 = 72 apples.", "verified"),
        ("The horse runs 16 miles because 32 x (30/60) = 16", "unknown"),  # "x" before the expression
        ("Shiela wrote 15 pages x 1/3 = 5 pages.", "unknown"),
    ],
)
def test_units_and_multiplication_words(step, verdict):
    assert verify_step(step).verdict == verdict
