"""Settings of the sympy step verifier (see docs/verification.md).

The verifier is tuned for precision: a correct step must almost never come out ``refuted``. Every knob
that trades recall for precision defaults to the safe side.
"""

from __future__ import annotations

from pydantic import Field

from steplabel.storage.strict import StrictConfig


class SympyVerifierConfig(StrictConfig):
    rel_tol: float = Field(1e-9, ge=0, description="relative tolerance of a numeric equality (irrationals, floats)")
    abs_tol: float = Field(1e-12, ge=0, description="absolute tolerance, for values near zero")
    allow_rounding: bool = Field(
        True,
        description="accept a right (or left) side that is the other side rounded or truncated at its shown decimals",
    )
    approx_rel_tol: float = Field(
        0.05, ge=0, description="relative tolerance of a claim written with an approximation sign (≈, ~, about)"
    )
    check_approximations: bool = Field(True, description="check ≈ claims at approx_rel_tol (else skip them)")
    check_substitutions: bool = Field(
        True, description="substitute variables assigned a number in the step (x = 3) into its equations"
    )
    carry_bindings: bool = Field(
        True,
        description="verify_solution: variables given a number by a computation (A = (2 + 3) = 5) or a 'Let x = 4' "
        "in an earlier step keep it later; a bare 'x = 3' (a root, a case, a line) or two different values never do",
    )
    check_rebinding: bool = Field(
        True,
        description="verify_solution: 'A = <expr>' where A was computed in an earlier step and expr is a different "
        "number is a refuted claim (only for A defined by a numeric expression, never reassigned in between)",
    )
    max_claims_per_step: int = Field(64, ge=1, description="claims beyond this are ignored")
    max_exponent: int = Field(1000, ge=1, description="an integer exponent larger than this makes a claim unknown")
    max_digits: int = Field(2000, ge=10, description="a result with more decimal digits than this is unknown")
    max_literal_digits: int = Field(60, ge=1, description="a number literal longer than this makes a claim unknown")
