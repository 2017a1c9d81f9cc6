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
    ("The answer is 5! = 120.", V),  # factorials have their meaning
    ("The answer is 5! = 121.", R),
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
    # competition-math LaTeX: equation solving is a transformation, never an identity
    (r"\begin{align*} 3x + 2 &= 11 \\ 3x &= 9 \\ x &= 3 \end{align*}", V),
    (r"\begin{align*} 3x + 2 &= 11 \\ 3x &= 9 \\ x &= 4 \end{align*}", R),
    (r"$a - b = 3 \quad\text{and}\quad a + b = 11$", U),
    (r"\[ 2 + 3 = 5 \] \[ 4 \cdot 2 = 8 \]", V),  # display blocks are separate chains
    (r"\[ 3x = 9 \] \[ x = 3 \]", V),
    (r"$x - 1 = 4 \quad \text{or} \quad x - 1 = -4$, so $x = 5$", V),  # one alternative holds
    (r"$x - 1 = 4 \quad \text{or} \quad x - 1 = -4$, so $x = 6$", U),  # alternatives are never refuted
    (r"If $x + 5$ and $3x - 6$ have opposite signs, then $x + 5 = -(3x - 6)$, and $x = \frac{11}{2}$", U),
    # assignments and definitions
    (r"$b = \frac{1}{2}$", U),
    (r"$M = \left(\frac{3}{2}, 1\right)$", U),
    (r"$P(n, r) = \frac{n!}{(n-r)!}$", U),
    (r"$(x_1, y_1) = (2, -3)$", U),
    (r"$(x,y) = (2^3 + 7, -3 \cdot 2^2 - 6 \cdot 2 - 5) = (15,-29)$", U),  # a tuple, not 2^3 + 7 = 15 ... -29
    (r"$2f(0) = f(0) - 1$", U),  # f is a function, f(0) is not f * 0
    (r"$\frac{p(3)}{p(4)} = \frac{-10A}{-11A}$", U),
    # notation: given its meaning, or left unknown
    (r"$\gcd(12, 18) = 6$", U),
    (r"$\cos \angle ABC = \frac{3}{5}$", U),
    (r"$\csc 30^\circ = 2$", U),
    (r"$\sin \left( -\frac{\pi}{6} \right) = -\frac{1}{2}$", U),
    (r"$\binom{10}{8} = \binom{10}{2} = 45$", V),
    (r"$\binom{10}{8} = 44$", R),
    (r"$\dbinom{4}{2} = 6$", V),
    (r"$\sqrt[3]{64} = 4$", V),
    (r"$\sqrt[3]{64} = 5$", R),
    (r"$\sqrt{2}\cdot\sqrt{3} = \sqrt{6}$", V),
    (r"$\frac{5}{\sqrt{80}\cdot\sqrt5}=\frac{5}{\sqrt{400}}=\frac{1}{4}$", V),
    (r"$\sqrt{2^{16}} = 2^8 = 256$", V),
    (r"$1\frac{4}{5} = \frac{9}{5}$", V),
    (r"$\boxed{15\frac{39}{40}} = \frac{639}{40}$", V),
    (r"Since $90^3=729,\!000$, AB is greater than 90.", V),
    (r"$0.\overline{00279} = \frac{279}{99999}$", U),
    (r"$x = \boxed{3 \pm 2 \sqrt{2}}$", U),
    (r"$\frac{8}{5} = 1.6$ and $\sqrt{2} \approx 1.41$", V),  # approximate results at the precision written
    (r"$\sqrt{2} \approx 1.5$", R),
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


def test_hypotheses_and_cases_are_not_carried():
    # "If k = 0" is a hypothesis and "y = 0" a line: neither gives a value to later steps
    sv = verify_solution(["If $k = 0,$ then the left side is undefined.", "So $4-k=-4,$ and $k=8$."])
    assert sv.first_refuted == -1
    sv = verify_solution(["The directrix is $y = 0.$", "Subtracting, we get $2y^2 - 40y + 118 = 0.$"])
    assert sv.first_refuted == -1
    # case 1 solves x = 11/2; case 2 solves x = 1/4 from a new equation: no rebinding, no carried x
    cases = [r"Case 1: \begin{align*} x+5&=3x-6 \\ -2x&=-11 \\ x&=\frac{11}{2} \end{align*}",
             r"Case 2: \begin{align*} x+5&=-(3x-6) \\ 4x&=1 \\ x&=\frac{1}{4} \end{align*}"]
    assert verify_solution(cases).verdicts == [V, V]


def test_solution_with_no_claims():
    sv = verify_solution(["Think about it.", "The answer is yes."])
    assert sv.verdicts == [U, U] and sv.first_refuted == -1 and sv.evidence == [None, None]
