"""Known-answer table for the sympy step verifier; the tricky correct steps must never be refuted."""

from __future__ import annotations

import pytest

from steplabel.checks.sympy_verifier import SympyVerifierConfig, verify_solution, verify_step

V, R, U = "verified", "refuted", "unknown"

TABLE = [
    # plain arithmetic
    ("12 * 5 = 60", V),
    ("12 * 5 = 61", R),
    ("3 + 4 = 7 = 7 * 1", V),
    ("3 + 4 = 7 = 7 * 2", R),
    ("So the total is 15 - 6 = 9 dollars.", V),
    ("6 ÷ 2 = 3 and 7 − 2 = 5", V),
    ("2 x 3 = 6", V),
    ("2 × 3 = 7", R),
    # LaTeX
    (r"$\frac{1}{2} + \frac{1}{3} = \frac{5}{6}$", V),
    (r"$\frac{1}{2} + \frac{1}{3} = \frac{2}{5}$", R),
    (r"$3 \times 4 = 12$ and $12 \div 4 = 3$", V),
    (r"$2 \cdot 3^2 = 18$", V),
    (r"\[ \sqrt{16} + 1 = 5 \]", V),
    # substitution
    ("$3x + 2 = 11$ so $x = 3$", V),
    ("$3x + 2 = 11$ so $x = 4$", R),
    ("2x + 3x = 5x", V),
    ("x^2 = 9, so x = 3 or x = -3", U),  # two values for x: no substitution (conservative)
    ("x^2 = 9, so x = 4", R),
    # percentages, currency, units, thousands
    ("20% of 50 = 10", V),
    ("20% of 50 = 12", R),
    ("10 / 50 * 100 = 20%", V),
    ("She pays $12 + $8 = $20.", V),
    ("5 cm + 3 cm = 8 cm", V),
    ("1,234 + 1,000 = 2,234", V),
    ("1,234 + 1,000 = 2,334", R),
    # rounding and approximations
    ("10/3 = 3.33", V),
    ("10/3 = 3.34", R),  # not 10/3 rounded (3.33) nor truncated at 2 decimals
    ("22/7 ≈ 3.14", V),
    ("The ratio is about 10/3 ≈ 3.3", V),
    ("10/3 ≈ 4.5", R),
    # BIG-Bench Mistake format
    ("Let's calculate A = ((-1 + 2) * (3 - -4)) = (1 * 7) = 7.", V),
    ("Let's calculate C = ((3 * 4 * 5) * (7 - -7 * 4)) = ((3 * 4 * 5) * (7 - 28)) = -1260.", R),
    ("Let's calculate D = (-1 * 1 * 2) = ((-1 * 1) * 2) = (-2) * 2) = (-4).", R),
    # tricky correct steps that must NOT be refuted
    ("I have 3 apples + 4 = 7 apples.", V),
    ("He bought 2 packs of 12 = 24 eggs.", U),
    ("Half of 10 + 2 = 7.", U),
    ("The meeting is at 3:45, so 15 = 4 is not a time.", U),
    ("Read pages 3-5 = 3 pages.", U),
    ("On 2023-01-15 = day 15.", U),
    ("1. 3 + 4 = 7", V),
    ("Step 2: 10 - 3 = 7", V),
    ("Step 2 = 5 apples", U),
    ("sin(30) + 1 = 1.5", U),
    ("log(100) = 2", U),
    ("The answer is 5! = 120.", U),
    ("2 hours = 120 minutes", U),
    ("1 dozen = 12", U),
    ("The speed is 60 km/h = 1 km/min", U),
    ("Wait, 3 * 4 = 11? No.", U),
    ("It is not true that 2 + 2 = 5.", U),
    ("3 + 4 = 7 million people", U),
    ("6/2(1+2) = 9", V),
    ("6/2(1+2) = 1", U),  # ambiguous implicit multiplication: never refuted
    ("No math here at all.", U),
    ("2^100000 = 5", U),  # exponent guard: unknown, not slow
    ("10^10^10 = 1", U),
]


@pytest.mark.parametrize(("text", "expected"), TABLE)
def test_table(text, expected):
    got = verify_step(text)
    assert got.verdict == expected, (text, got)
    if expected == R:
        assert got.evidence and "left" in got.evidence
    else:
        assert got.evidence is None


def test_table_is_big_enough():
    assert len(TABLE) >= 30 and sum(1 for _, e in TABLE if e == R) >= 8


def test_evidence_names_the_failing_claim():
    got = verify_step("First 2 + 2 = 4, then 4 * 3 = 13, then 13 + 1 = 14.")
    assert got.verdict == R
    assert got.evidence.startswith("4 * 3 = 13") and "left = 12" in got.evidence
    assert [c.holds for c in got.claims] == [True, False, True]


def test_rounding_can_be_switched_off():
    assert verify_step("10/3 = 3.33", SympyVerifierConfig(allow_rounding=False)).verdict == R
    assert verify_step("10/3 = 3.33").verdict == V


def test_max_claims_per_step():
    text = " ".join(f"{i} + 1 = {i + 1}." for i in range(10)) + " 1 + 1 = 3."
    assert verify_step(text, SympyVerifierConfig(max_claims_per_step=5)).verdict == V
    assert verify_step(text).verdict == R


def test_config_forbids_unknown_fields():
    with pytest.raises(Exception):
        SympyVerifierConfig(rel_tolerance=1e-3)


def test_solution_carries_bindings_and_finds_first_refuted():
    steps = [
        'This equation can be written as "A * B", where A = (2 + 3) and B = (4 - 1).',
        "Let's calculate A = (2 + 3) = 5.",
        "Let's calculate B = (4 - 1) = 3.",
        "Then, the final equation is A * B = 5 * 3 = 16. So the answer is 16",
    ]
    sv = verify_solution(steps)
    assert sv.verdicts == [U, V, V, R]
    assert sv.first_refuted == 3 and sv.evidence[3].startswith("5 * 3 = 16")
    # a copy error of a defined expression is caught by rebinding
    steps[1] = "Let's calculate A = (2 + 4) = 6."
    sv = verify_solution(steps)
    assert sv.first_refuted == 1 and "rebinding" not in (sv.evidence[1] or "")
    assert verify_solution(steps, SympyVerifierConfig(check_rebinding=False)).first_refuted == 3


def test_substitution_from_earlier_step():
    sv = verify_solution(["Let x = 4.", "Then 3x + 2 = 14.", "So 2x = 9."])
    assert sv.verdicts == [U, V, R] and sv.first_refuted == 2


def test_solution_with_no_claims():
    sv = verify_solution(["Think about it.", "The answer is yes."])
    assert sv.verdicts == [U, U] and sv.first_refuted == -1 and sv.evidence == [None, None]
