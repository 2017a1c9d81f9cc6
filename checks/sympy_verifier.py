"""Tool-grounded step verification with sympy: the public entry (``verify_step``, ``verify_solution``).

``verify_step`` finds the checkable claims in one reasoning step and checks each with exact sympy arithmetic.
What it proves and what it leaves ``unknown`` is written up in ``docs/verification.md``; in short:

* equality chains ``12 * 5 = 60``, ``3 + 4 = 7 = 7 * 1``, BIG-Bench-Mistake style
  ``((-1 + 2) * (3 - -4)) = (1 * 7) = 7`` (each adjacent pair of the chain is one claim);
* substitutions: ``$3x + 2 = 11$ so $x = 3$`` plugs ``x = 3`` into the step's equations, so the lines of an
  equation being solved are checked as a transformation that keeps the solution, never as identities;
* a relation is refuted only when it is closed arithmetic or every variable in it is bound by the step or
  the solution so far; a variable that cancels (``2f(0)``) still counts as free;
* LaTeX with a meaning (``\\frac``, mixed numbers, ``\\sqrt``, ``\\sqrt[n]``, ``\\binom``, factorials, braced
  exponents) is rewritten; any other command (``\\gcd``, ``\\cos``, ``\\angle``, ``\\pm``, ``\\dots``) makes
  the sides next to it unknown; display blocks, ``\\quad`` and alignment rows are separate chains;
* approximations (``≈``, ``~``, ``about``) are checked at ``approx_rel_tol``; a right side that is the left
  side rounded at its shown decimals is accepted.

Precision beats recall: a correct step must almost never come out ``refuted``. Anything ambiguous (a left side
that may be the tail of a sentence, dates, times, ranges, tuples, function applications, alternatives,
hypotheses, self-corrections) is skipped rather than checked.

The sections live in :mod:`steplabel.checks.sympy_steps`: ``normalise`` (text -> token language), ``tokens``,
``parser`` (recursive descent to sympy numbers, no ``eval``, no ``sympify``; powers guarded by
``max_exponent`` and ``max_digits``), ``chains`` (relation chains) and ``compare`` (tolerances, rounding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy

from steplabel.checks.sympy_steps.chains import find_chains
from steplabel.checks.sympy_steps.compare import NEGATION, compare, fmt, numbers_equal, values
from steplabel.checks.sympy_steps.normalise import normalise
from steplabel.checks.sympy_steps.parser import Part, Unknown, evaluate
from steplabel.checks.sympy_steps.tokens import tokenize
from steplabel.checks.sympy_verifier_config import SympyVerifierConfig

VERIFIED, REFUTED, UNKNOWN = "verified", "refuted", "unknown"

__all__ = [
    "Claim",
    "StepVerdict",
    "SolutionVerdict",
    "SympyVerifierConfig",
    "verify_step",
    "verify_solution",
    "VERIFIED",
    "REFUTED",
    "UNKNOWN",
]


@dataclass
class Claim:
    """One checked relation ``lhs = rhs`` found in a step."""

    text: str
    lhs: str
    rhs: str
    kind: str  # "arithmetic" | "approx" | "substitution" | "identity" | "rebinding"
    holds: bool | None  # True / False; None when the check was suppressed (see ``note``)
    lhs_value: str | None = None
    rhs_value: str | None = None
    note: str | None = None

    def describe(self) -> str:
        vals = f" (left = {self.lhs_value}, right = {self.rhs_value})" if self.lhs_value is not None else ""
        note = f" [{self.note}]" if self.note else ""
        return f"{self.text}{vals}{note}"


@dataclass
class StepVerdict:
    verdict: str  # verified | refuted | unknown
    claims: list[Claim] = field(default_factory=list)
    evidence: str | None = None
    bindings: dict[str, sympy.Expr] = field(default_factory=dict, repr=False)  # values later steps may use
    defined: set[str] = field(default_factory=set, repr=False)  # of those, the ones given by a computation


@dataclass
class SolutionVerdict:
    verdicts: list[str]
    first_refuted: int
    evidence: list[str | None]
    steps: list[StepVerdict] = field(default_factory=list, repr=False)


# A bare "x = 3" right after one of these words is a hypothesis or a line, not a value of x.
_CONDITIONAL_WORDS = {"if", "when", "whenever", "suppose", "assume", "assuming", "unless", "at", "for",
                      "directrix", "line", "asymptote", "axis", "plane", "lines", "equation", "graph"}
# A step that offers alternatives ("x - 1 = 4 or x - 1 = -4") or argues under a hypothesis ("if", "case")
# need not satisfy every one of its equations with one value of the variable.
_ALTERNATIVES = re.compile(r"\b(?:or|either|if|case|suppose|assume|assuming)\b|\\pm|\\mp|±", re.IGNORECASE)


def _is_computation(part: Part) -> bool:
    """``(2 + 3)``, ``4 * 7 - 1``: an operation on numbers, not a literal such as ``3``, ``-2`` or ``\\frac{11}{2}``."""
    core = [t for t in part.toks if t.kind not in {"lp", "rp"}]
    if core and core[0].kind == "op":
        core = core[1:]  # a sign
    numbers = sum(t.kind == "num" for t in core)
    return numbers >= 3 or (numbers == 2 and any(t.kind == "op" and t.text != "/" for t in core))


def _claim_text(lp: Part, rp: Part, rel: str) -> str:
    return f"{lp.text} {rel} {rp.text}"


def verify_step(
    text: str,
    config: SympyVerifierConfig | None = None,
    *,
    bindings: dict[str, sympy.Expr] | None = None,
    computed: set[str] | None = None,
) -> StepVerdict:
    """Check the claims of one step.

    ``bindings`` are variable values carried from earlier steps (see :func:`verify_solution`); ``computed``
    names the carried variables whose value came from a computation, for which a rebinding to a different
    number is itself a refuted claim (``check_rebinding``).
    """
    cfg = config or SympyVerifierConfig()
    carried = dict(bindings or {})
    computed = computed or set()
    negated = bool(NEGATION.search(text))
    alternatives = bool(_ALTERNATIVES.search(text))
    tokens = tokenize(normalise(text))
    chains = find_chains(tokens)
    claims: list[Claim] = []

    # in-step bindings: a bare variable in a chain with numeric parts
    local: dict[str, set[sympy.Expr]] = {}
    defined: set[str] = set()  # given a value by a computation: carried, and a later rebinding is checked
    declared: set[str] = set()  # "Let x = 4": carried
    numeric_cache: dict[int, tuple[list[sympy.Expr], bool] | None] = {}

    def numeric(part: Part | None, subst: dict[str, sympy.Expr] | None = None) -> tuple[list[sympy.Expr], bool] | None:
        if part is None:
            return None
        key = id(part)
        if subst is None and key in numeric_cache:
            return numeric_cache[key]
        names = {t.text for t in part.toks if t.kind == "var"}
        if names - set(subst_env if subst is not None else ()):
            return None  # a free variable (even one that cancels, like f in "2f(0)") makes the part unprovable
        try:
            vals, amb = values(part, cfg)
            if subst is not None:
                vals = [v.subs(subst) if v.free_symbols else v for v in vals]
            if any(v.free_symbols or not v.is_number or v.has(sympy.zoo, sympy.nan) for v in vals):
                res = None
            elif any(v.is_real is False for v in vals):
                res = None
            else:
                res = (vals, amb)
        except (Unknown, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError):
            res = None
        if subst is None:
            numeric_cache[key] = res
        return res

    subst_env: dict[str, sympy.Expr] = {}
    for ch in chains:
        for k, p in enumerate(ch.parts):
            if p is None or p.bare_var is None:
                continue
            nums = [q for q in ch.parts if q is not None and q.bare_var is None]
            vals = [numeric(q) for q in nums]
            vals = [v for v in vals if v is not None and len(v[0]) == 1]
            if any(q is None for q in ch.parts) or (k == 0 and ch.prev_word in _CONDITIONAL_WORDS):
                local.setdefault(p.bare_var, set()).add(sympy.Symbol("__ambiguous__"))
            elif vals:
                local.setdefault(p.bare_var, set()).add(vals[-1][0][0])
                adjacent = ch.parts[k + 1] if k + 1 < len(ch.parts) else None
                # "A = (2 + 3) = 5" defines A by a computation; a bare "x = 3" may be one root, a case or a line
                if k == 0 and adjacent is not None and _is_computation(adjacent):
                    defined.add(p.bare_var)
                elif k == 0 and ch.prev_word == "let":
                    declared.add(p.bare_var)
    unique_local = {v: next(iter(s)) for v, s in local.items() if len(s) == 1}
    subst_env.update({**carried, **unique_local})
    subst_syms = {sympy.Symbol(k): v for k, v in subst_env.items()}

    def add(claim: Claim) -> None:
        if len(claims) < cfg.max_claims_per_step:
            claims.append(claim)

    for ch in chains:
        for k, rel in enumerate(ch.rels):
            lp, rp = ch.parts[k], ch.parts[k + 1]
            if lp is None or rp is None:
                continue
            if rel == "≈" and not cfg.check_approximations:
                continue
            # rebinding: "A = <expr>" where A was computed in an earlier step
            if lp.bare_var is not None or rp.bare_var is not None:
                var, other = (lp.bare_var, rp) if lp.bare_var is not None else (rp.bare_var, lp)
                if (
                    cfg.check_rebinding
                    and var in carried
                    and var in computed
                    and other.bare_var is None
                    and not other.is_bare
                    and k == 0
                    and lp.bare_var is not None
                ):
                    got = numeric(other)
                    if got is not None and not got[1]:
                        ok = compare(other, other, [carried[var]], got[0], rel, cfg) or any(
                            numbers_equal(carried[var], g, cfg, cfg.rel_tol) for g in got[0]
                        )
                        add(
                            Claim(
                                text=_claim_text(lp, rp, rel), lhs=lp.text, rhs=rp.text, kind="rebinding",
                                holds=ok if not (negated and not ok) else None,
                                lhs_value=fmt(carried[var]), rhs_value=fmt(got[0][0]),
                                note=None if ok or not negated else "suppressed: step hedges or negates",
                            )
                        )
                continue
            mixed_units = len(lp.units | rp.units) > 1
            # "8 * 9 = 72 apples": bare operands with the unit on the result only is the everyday form.
            unit_on_result_only = not lp.units and rp.is_bare and len(rp.units) == 1 and rp.unitless_numbers == 0
            unit_mix = (bool(lp.units | rp.units) and (lp.unitless_numbers + rp.unitless_numbers) > 0
                        and not unit_on_result_only)
            if mixed_units:
                continue
            if lp.is_bare and rp.is_bare:
                continue  # "of 12 = 24", "1 dozen = 12": two lone numbers are never worth the risk
            ln, rn = numeric(lp), numeric(rp)
            kind = "approx" if rel == "≈" else "arithmetic"
            if ln is None or rn is None:
                if not cfg.check_substitutions:
                    continue
                # substitution / identity
                try:
                    lsym, _ = evaluate(lp, cfg, pct=True)
                    rsym, _ = evaluate(rp, cfg, pct=True)
                except (Unknown, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError):
                    continue
                free = lsym.free_symbols | rsym.free_symbols
                if not free:
                    continue
                if free <= set(subst_syms):
                    ls = numeric(lp, subst_syms)
                    rs = numeric(rp, subst_syms)
                    if ls is None or rs is None:
                        continue
                    ok = compare(lp, rp, ls[0], rs[0], rel, cfg)
                    amb = ls[1] or rs[1]
                    note = None
                    holds: bool | None = ok
                    if not ok and (negated or amb or unit_mix or alternatives):
                        holds, note = None, "suppressed: ambiguous reading or hedged step"
                    add(
                        Claim(
                            text=_claim_text(lp, rp, rel), lhs=lp.text, rhs=rp.text, kind="substitution",
                            holds=holds, lhs_value=fmt(ls[0][0]), rhs_value=fmt(rs[0][0]),
                            note=(note or "") + f" with {', '.join(f'{s}={subst_env[str(s)]}' for s in sorted(free, key=str))}",
                        )
                    )
                else:
                    try:
                        if sympy.expand(lsym - rsym) == 0:
                            add(Claim(text=_claim_text(lp, rp, rel), lhs=lp.text, rhs=rp.text, kind="identity",
                                      holds=True))
                    except Exception:  # noqa: BLE001 - sympy can raise many things on odd input
                        pass
                continue
            ok = compare(lp, rp, ln[0], rn[0], rel, cfg)
            holds = ok
            note = None
            if not ok:
                if ln[1] or rn[1]:
                    holds, note = None, "suppressed: a/b(c) is ambiguous"
                elif unit_mix:
                    holds, note = None, "suppressed: numbers with and without units"
                elif negated:
                    holds, note = None, "suppressed: step hedges or negates"
            add(
                Claim(
                    text=_claim_text(lp, rp, rel), lhs=lp.text, rhs=rp.text, kind=kind, holds=holds,
                    lhs_value=fmt(ln[0][0]), rhs_value=fmt(rn[0][0]), note=note,
                )
            )

    refuted = [c for c in claims if c.holds is False]
    if refuted:
        verdict, evidence = REFUTED, refuted[0].describe()
    elif any(c.holds for c in claims):
        verdict, evidence = VERIFIED, None
    else:
        verdict, evidence = UNKNOWN, None
    carry = {v: x for v, x in unique_local.items() if v in defined or v in declared}
    return StepVerdict(verdict=verdict, claims=claims, evidence=evidence, bindings=carry,
                       defined={v for v in carry if v in defined})


def verify_solution(steps: list[str], config: SympyVerifierConfig | None = None) -> SolutionVerdict:
    """Verify every step; variables given a number in one step (``A = ... = -14``) carry to later ones."""
    cfg = config or SympyVerifierConfig()
    bindings: dict[str, sympy.Expr] = {}
    computed: set[str] = set()
    conflicting: set[str] = set()  # given two different values (two cases, two roots): never carried again
    results: list[StepVerdict] = []
    for text in steps:
        sv = verify_step(text, cfg, bindings=bindings if cfg.carry_bindings else None, computed=computed)
        results.append(sv)
        if cfg.carry_bindings:
            for var, val in sv.bindings.items():
                if var in conflicting or (var in bindings and bindings[var] != val and var not in sv.defined):
                    conflicting.add(var)
                    bindings.pop(var, None)
                    computed.discard(var)
                    continue
                bindings[var] = val
                if var in sv.defined:
                    computed.add(var)
                else:
                    computed.discard(var)
    verdicts = [r.verdict for r in results]
    first = next((i for i, v in enumerate(verdicts) if v == REFUTED), -1)
    return SolutionVerdict(verdicts=verdicts, first_refuted=first, evidence=[r.evidence for r in results],
                           steps=results)
