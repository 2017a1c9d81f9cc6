"""Recursive-descent parser from tokens to exact sympy numbers; no ``eval`` and no ``sympify`` of model text."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy

from steplabel.checks.sympy_steps.tokens import FUNCTION_LETTERS, Tok
from steplabel.checks.sympy_verifier_config import SympyVerifierConfig


class Unknown(Exception):
    """A part cannot be parsed or evaluated safely; the claim is skipped."""


@dataclass
class Part:
    toks: list[Tok]
    text: str
    has_pct: bool = False
    units: set[str] = field(default_factory=set)
    unitless_numbers: int = 0
    literal_decimals: int | None = None  # set when the part is a bare number literal
    bare_var: str | None = None
    is_bare: bool = False  # a lone number (maybe signed or parenthesised)
    has_implicit_after_div: bool = False


class Parser:
    def __init__(self, toks: list[Tok], cfg: SympyVerifierConfig, pct: bool) -> None:
        self.toks = toks
        self.i = 0
        self.cfg = cfg
        self.pct = pct  # read "n%" as n/100 (True) or as n (False)
        self.after_div = False
        self.implicit_after_div = False

    def peek(self) -> Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> Tok:
        t = self.peek()
        if t is None:
            raise Unknown("unexpected end")
        self.i += 1
        return t

    def parse(self) -> sympy.Expr:
        e = self.expr()
        if self.peek() is not None:
            raise Unknown(f"trailing {self.peek().text!r}")
        return e

    def expr(self) -> sympy.Expr:
        e = self.term()
        while (t := self.peek()) is not None and t.kind == "op" and t.text in "+-":
            self.i += 1
            r = self.term()
            e = e + r if t.text == "+" else e - r
            self._guard(e)
        return e

    def term(self) -> sympy.Expr:
        e = self.unary()
        while (t := self.peek()) is not None:
            if t.kind == "op" and t.text in "*/":
                self.i += 1
                r = self.unary()
                if t.text == "*":
                    e = e * r
                else:
                    if r == 0:
                        raise Unknown("division by zero")
                    e = e / r
                    self.after_div = True
            elif t.glued and t.kind in {"num", "var", "lp", "func", "pi"} and self._prev_is_operand():
                if t.kind == "num" and self.toks[self.i - 1].kind == "num":
                    raise Unknown("two numbers in a row")
                if self.after_div:
                    self.implicit_after_div = True
                e = e * self.power()
            else:
                break
            self._guard(e)
        return e

    def _prev_is_operand(self) -> bool:
        p = self.toks[self.i - 1] if self.i > 0 else None
        return p is not None and p.kind in {"num", "var", "rp", "pi", "pct", "fact"}

    def unary(self) -> sympy.Expr:
        t = self.peek()
        if t is not None and t.kind == "op" and t.text in "+-":
            self.i += 1
            v = self.unary()
            return -v if t.text == "-" else v
        return self.power()

    def power(self) -> sympy.Expr:
        base = self.postfix()
        t = self.peek()
        if t is not None and t.kind == "op" and t.text == "^":
            self.i += 1
            exp = self.unary()
            return self._pow(base, exp)
        return base

    def _pow(self, base: sympy.Expr, exp: sympy.Expr) -> sympy.Expr:
        if exp.free_symbols or base.free_symbols:
            if exp.is_Integer and abs(int(exp)) <= 64:
                return base**exp
            raise Unknown("symbolic power")
        if exp.is_Integer:
            if abs(int(exp)) > self.cfg.max_exponent:
                raise Unknown("exponent too large")
        elif exp.is_Rational:
            if abs(exp.p) > self.cfg.max_exponent or exp.q > 64:
                raise Unknown("exponent too large")
        else:
            fe = float(exp.evalf(20))
            if not math.isfinite(fe) or abs(fe) > self.cfg.max_exponent:
                raise Unknown("exponent too large")
        if base == 0 and (exp.is_negative or exp == 0):
            raise Unknown("0 ** non-positive")
        fb = abs(float(base.evalf(20))) if base.is_number else 1.0
        if fb > 1 and abs(float(exp.evalf(20))) * math.log10(fb) > self.cfg.max_digits:
            raise Unknown("power too large")
        v = base**exp
        self._guard(v)
        return v

    def postfix(self) -> sympy.Expr:
        """An atom followed by factorials: ``5!``, ``(n-2)!``; only small whole numbers are evaluated."""
        v = self.atom()
        while (t := self.peek()) is not None and t.kind == "fact":
            self.i += 1
            if not (v.is_Integer and 0 <= int(v) <= self.cfg.max_exponent):
                raise Unknown("factorial of a non-integer or of a large number")
            v = sympy.factorial(v)
            self._guard(v)
        return v

    def atom(self) -> sympy.Expr:
        t = self.take()
        if t.kind == "num":
            if len(t.text) > self.cfg.max_literal_digits:
                raise Unknown("literal too long")
            v: sympy.Expr = sympy.Rational(t.text) if "e" not in t.text.lower() else sympy.Rational(
                sympy.Float(t.text, 30)
            )
            if "e" in t.text.lower():
                mant, _, ex = t.text.lower().partition("e")
                if abs(int(ex)) > self.cfg.max_exponent:
                    raise Unknown("exponent too large")
                v = sympy.Rational(mant) * sympy.Integer(10) ** int(ex)
            nxt = self.peek()
            if nxt is not None and nxt.kind == "pct":
                self.i += 1
                if self.pct:
                    v = v / 100
            return v
        if t.kind == "var":
            nxt = self.peek()
            if t.text in FUNCTION_LETTERS and nxt is not None and nxt.kind == "lp" and nxt.glued:
                raise Unknown("function application")
            return sympy.Symbol(t.text)
        if t.kind == "pi":
            return sympy.pi
        if t.kind == "lp":
            e = self.expr()
            r = self.take()
            if r.kind != "rp" or (t.text == "(") != (r.text == ")"):
                raise Unknown("unbalanced brackets")
            nxt = self.peek()
            if nxt is not None and nxt.kind == "pct":
                self.i += 1
                if self.pct:
                    e = e / 100
            return e
        if t.kind == "func":
            lp = self.take()
            if lp.kind != "lp":
                raise Unknown("function without argument")
            arg = self.expr()
            if self.take().kind != "rp":
                raise Unknown("unbalanced brackets")
            if arg.is_number and arg.is_negative:
                raise Unknown("sqrt of a negative")
            return sympy.sqrt(arg)
        raise Unknown(f"unexpected {t.text!r}")

    def _guard(self, e: sympy.Expr) -> None:
        if e.is_Rational and e != 0:
            if max(abs(e.p), e.q).bit_length() > self.cfg.max_digits * 3.33:
                raise Unknown("number too large")
        if e.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
            raise Unknown("undefined value")


def _strip_edge_brackets(toks: list[Tok]) -> list[Tok]:
    """Drop unmatched brackets at the very edges ("(3 + 4" of "(3 + 4 = 7)", or "(-2) * 2)")."""
    stack: list[int] = []
    bad_close: list[int] = []
    for k, t in enumerate(toks):
        if t.kind == "lp":
            stack.append(k)
        elif t.kind == "rp":
            if stack:
                stack.pop()
            else:
                bad_close.append(k)
    bad_open = stack
    if not bad_open and not bad_close:
        return toks
    if bad_open != list(range(len(bad_open))) or bad_close != list(range(len(toks) - len(bad_close), len(toks))):
        return toks  # unmatched brackets inside: leave it to fail parsing
    return toks[len(bad_open) : len(toks) - len(bad_close)]


def make_part(toks: list[Tok]) -> Part:
    toks = _strip_edge_brackets(toks)
    if toks:
        toks = [Tok(toks[0].kind, toks[0].text, True, toks[0].unit)] + toks[1:]
    text = ""
    for j, t in enumerate(toks):
        text += ("" if t.glued or j == 0 else " ") + t.text + (f" {t.unit}" if t.unit else "")
    p = Part(toks=toks, text=text)
    p.has_pct = any(t.kind == "pct" for t in toks)
    for t in toks:
        if t.kind == "num":
            if t.unit:
                p.units.add(t.unit)
            else:
                p.unitless_numbers += 1
    core = [t for t in toks if t.kind not in {"lp", "rp"}]
    if core and core[0].kind == "op" and core[0].text in "+-":
        core = core[1:]
    if len(core) == 1 and core[0].kind == "num":
        p.is_bare = True
        p.literal_decimals = len(core[0].text.split(".")[1]) if "." in core[0].text else 0
    if len(core) == 2 and core[0].kind == "num" and core[1].kind == "pct":
        p.is_bare = True
    if len(toks) == 1 and toks[0].kind == "var":
        p.bare_var = toks[0].text
    return p


def evaluate(part: Part, cfg: SympyVerifierConfig, pct: bool) -> tuple[sympy.Expr, bool]:
    parser = Parser(part.toks, cfg, pct)
    v = parser.parse()
    return v, parser.implicit_after_div
