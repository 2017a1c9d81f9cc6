"""Comparing the values of two sides: exact, at a tolerance, or as the other side rounded at its shown decimals."""

from __future__ import annotations

import math
import re

import sympy

from steplabel.checks.sympy_steps.parser import Part, evaluate
from steplabel.checks.sympy_verifier_config import SympyVerifierConfig


def fmt(v: sympy.Expr) -> str:
    if v.is_Rational:
        return str(v) if v.q == 1 or v.q > 10**6 else f"{v} (= {float(v):.10g})"
    try:
        return f"{float(v.evalf(30)):.10g}"
    except (TypeError, ValueError):
        return str(v)


def rounding_ok(value: sympy.Expr, literal: sympy.Expr, decimals: int) -> bool:
    """Is ``literal`` (shown with ``decimals`` decimals) ``value`` rounded or truncated there?"""
    exact = sympy.Rational(value) if value.is_Rational else sympy.Rational(str(sympy.N(value, 40)))
    unit = sympy.Rational(1, 10**decimals)
    diff = abs(exact - literal)
    return bool(diff <= unit / 2 + sympy.Rational(1, 10**30) or (diff < unit and abs(literal) <= abs(exact)))


def numbers_equal(a: sympy.Expr, b: sympy.Expr, cfg: SympyVerifierConfig, rel_tol: float) -> bool:
    if a.is_Rational and b.is_Rational and rel_tol <= 1e-12:
        return bool(a == b)
    fa, fb = float(sympy.N(a, 30)), float(sympy.N(b, 30))
    return math.isclose(fa, fb, rel_tol=max(rel_tol, 1e-15), abs_tol=cfg.abs_tol)


def compare(
    lp: Part, rp: Part, lvals: list[sympy.Expr], rvals: list[sympy.Expr], rel: str, cfg: SympyVerifierConfig
) -> bool:
    tol = cfg.approx_rel_tol if rel == "≈" else cfg.rel_tol
    for a in lvals:
        for b in rvals:
            if numbers_equal(a, b, cfg, tol):
                return True
            if cfg.allow_rounding or rel == "≈":
                if rp.literal_decimals is not None and rounding_ok(a, b, rp.literal_decimals):
                    return True
                if lp.literal_decimals is not None and rounding_ok(b, a, lp.literal_decimals):
                    return True
    return False


NEGATION = re.compile(
    r"\b(?:wait|oops|mistake|mistaken|incorrect|wrong|not|isn't|aren't|doesn't|don't|cannot|can't|false|error|"
    r"typo|correction|corrected|actually|instead|should\s+be|recheck|re-check|double-check|suppose|assume|"
    r"hypothetically|if\s+we\s+had|would\s+be|nope|no,)\b|≠|!=|\?",
    re.IGNORECASE,
)


def values(part: Part, cfg: SympyVerifierConfig) -> tuple[list[sympy.Expr], bool]:
    """Values of a part under each reading of ``%`` (as /100 and, when ambiguous, as a bare number)."""
    v, amb = evaluate(part, cfg, pct=True)
    vals = [v]
    if part.has_pct:
        v2, amb2 = evaluate(part, cfg, pct=False)
        vals.append(v2)
        amb = amb or amb2
    return vals, amb
