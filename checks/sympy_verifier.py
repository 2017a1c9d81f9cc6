"""Tool-grounded step verification with sympy (DESIGN.md section 7; ALGORITHMS.md section 5).

``verify_step`` finds the checkable claims in one reasoning step and checks each with exact sympy
arithmetic:

* equality chains ``12 * 5 = 60``, ``3 + 4 = 7 = 7 * 1``, BIG-Bench-Mistake style
  ``((-1 + 2) * (3 - -4)) = (1 * 7) = 7`` (each adjacent pair of the chain is one claim);
* substitutions: ``$3x + 2 = 11$ so $x = 3$`` plugs ``x = 3`` into the step's equations;
* identities with variables (``2x + 3x = 5x``) can only be *verified* (an equation is not a false identity);
* percentages (``20% of 50 = 10``), fractions, ``\\frac``, ``\\times``, ``\\cdot``, ``\\div``, ``×``, ``÷``,
  ``−``, currency signs, thousands commas and units (``5 cm``) are normalised away;
* approximations (``≈``, ``~``, ``about``) are checked at ``approx_rel_tol``; a right side that is the left
  side rounded at its shown decimals is accepted.

Precision beats recall: a correct step must almost never come out ``refuted``. Anything ambiguous (a left side
that may be the tail of a sentence, dates, times, ranges, step numbers, mixed units, function calls,
self-corrections) is skipped rather than checked.

Parsing is a small hand-written recursive-descent parser over a whitelisted token set that builds sympy
numbers directly: no ``eval``, no ``sympify`` of model text. Powers are guarded (``max_exponent``,
``max_digits``) so ``10^10^10`` cannot hang a worker.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import sympy

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
    bindings: dict[str, sympy.Expr] = field(default_factory=dict, repr=False)


@dataclass
class SolutionVerdict:
    verdicts: list[str]
    first_refuted: int
    evidence: list[str | None]
    steps: list[StepVerdict] = field(default_factory=list, repr=False)


class _Unknown(Exception):
    """A part cannot be parsed or evaluated safely; the claim is skipped."""


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------

_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
_SQRT = re.compile(r"\\sqrt\s*\{([^{}]*)\}")
_TEXT = re.compile(r"\\(?:text|mathrm|mathbf|textbf|operatorname|mbox)\s*\{([^{}]*)\}")
_LATEX_SIMPLE = [
    (re.compile(r"\\(?:times|cdot|ast)(?![A-Za-z])"), " * "),
    (re.compile(r"\\div(?![A-Za-z])"), " / "),
    (re.compile(r"\\(?:approx|simeq|sim)(?![A-Za-z])"), " ≈ "),
    (re.compile(r"\\(?:neq|ne|leq|le|geq|ge|lt|gt|pm|mp|to|rightarrow|Rightarrow|implies|iff)(?![A-Za-z])"), " ; "),
    (re.compile(r"\\pi(?![A-Za-z])"), "π"),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])"), ""),
    (re.compile(r"\\[,;:! ]|\\q?quad(?![A-Za-z])"), " "),
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\\[\[\]()]"), " "),
    (re.compile(r"\\boxed"), ""),
]
_THOUSANDS = re.compile(r"(?<![\d.,])(\d{1,3})((?:,\d{3})+)(?![\d,]|\.\d)")
_THOUSANDS_DEC = re.compile(r"(?<![\d.,])(\d{1,3})((?:,\d{3})+)(\.\d+)")
_TIME = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s*[ap]\.?m\.?)?\b", re.IGNORECASE)
_DATE = re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b|\b\d{1,2}-\d{1,2}-\d{4}\b")
_ORDINAL = re.compile(r"\b\d+(?:st|nd|rd|th)\b", re.IGNORECASE)
_RANGE = re.compile(r"(?<![\w.\-])(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)(?![\w.])")
_ENUM = re.compile(r"^\s*(?:\d+[.)]|\(\d+\)|[a-zA-Z][.)]|\([a-zA-Z]\)|[-*•])\s+", re.MULTILINE)
_STEP_LABEL = re.compile(r"\b(?:step|thought|part|case|line|equation|eq\.?)\s*#?\d+\s*[:.)]?", re.IGNORECASE)
_APPROX_WORDS = re.compile(
    r"=\s*(?:about|approximately|approx\.?|roughly|around|nearly|almost|circa|~)\s*", re.IGNORECASE
)
_TILDE = re.compile(r"(?<![\w)])~\s*(?=[\d.(\-])")
_POW_STARS = re.compile(r"(?<=[\d)a-zA-Z])\s*\*\*\s*(?=[\d(\-])")
_WORD_OPS = [
    (re.compile(r"(?<=\d)\s+(?:times|multiplied\s+by)\s+(?=\d)", re.IGNORECASE), " * "),
    (re.compile(r"(?<=\d)\s+plus\s+(?=\d)", re.IGNORECASE), " + "),
    (re.compile(r"(?<=\d)\s+minus\s+(?=\d)", re.IGNORECASE), " - "),
    (re.compile(r"(?<=\d)\s+divided\s+by\s+(?=\d)", re.IGNORECASE), " / "),
    (re.compile(r"(?<=\d)\s*(?:x|X|×)\s*(?=\d)"), " * "),
    (re.compile(r"(?<=\d)\s*(?:%|percent)\s+of\s+(?=[\d(])", re.IGNORECASE), "% * "),
    (re.compile(r"(?<=\d)\s*percent\b", re.IGNORECASE), "%"),
]
_UNICODE = str.maketrans(
    {
        "×": "*",
        "·": "*",
        "⋅": "*",
        "∗": "*",
        "÷": "/",
        "−": "-",
        "–": " to ",  # en dash: almost always a range (3–5)
        "—": " ; ",
        "≃": "≈",
        "≅": "≈",
        "²": "^2",
        "³": "^3",
        "√": "sqrt",
        "$": " ",
        "€": " ",
        "£": " ",
        "¥": " ",
        "₹": " ",
        "\u00a0": " ",
        "\u2009": " ",
        "≠": ";",
        "≤": ";",
        "≥": ";",
        "<": ";",
        ">": ";",
        "→": ";",
        "⇒": ";",
        "{": "(",
        "}": ")",
    }
)


def _normalize(text: str) -> str:
    s = text
    s = re.sub(r"==+>|=+>|<=+|>=|!=|:=", " ; ", s)
    s = s.replace("==", "=")
    for _ in range(6):  # nested \frac
        new = _FRAC.sub(r"((\1)/(\2))", s)
        new = _SQRT.sub(r"sqrt(\1)", new)
        new = _TEXT.sub(r" \1 ", new)
        if new == s:
            break
        s = new
    s = _FRAC_SHORT.sub(r"((\1)/(\2))", s)
    for pat, rep in _LATEX_SIMPLE:
        s = pat.sub(rep, s)
    s = re.sub(r"\\[A-Za-z]+", " ; ", s)  # any other LaTeX command is not arithmetic we understand
    s = s.translate(_UNICODE)
    s = _POW_STARS.sub("^", s)
    s = s.replace("**", " ")  # markdown bold
    s = _STEP_LABEL.sub(" ; ", s)
    s = _ENUM.sub(" ", s)
    s = _APPROX_WORDS.sub(" ≈ ", s)
    s = _TILDE.sub(" ≈ ", s)
    s = _TIME.sub(" ZZTIME ", s)
    s = _DATE.sub(" ZZDATE ", s)
    s = _ORDINAL.sub(" ZZORD ", s)
    s = _THOUSANDS_DEC.sub(lambda m: m.group(1) + m.group(2).replace(",", "") + m.group(3), s)
    s = _THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(",", ""), s)

    def _range(m: re.Match[str]) -> str:
        a, b = float(m.group(1)), float(m.group(2))
        return f"{m.group(1)} to {m.group(2)}" if a < b else m.group(0)

    s = _RANGE.sub(_range, s)
    for pat, rep in _WORD_OPS:
        s = pat.sub(rep, s)
    return s


# --------------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<num>(?:\d+\.\d+|\d+|\.\d+)(?:[eE][+-]?\d+(?![A-Za-z]))?)"
    r"|(?P<word>[A-Za-z][A-Za-z']*)"
    r"|(?P<op>[-+*/^])"
    r"|(?P<lp>[(\[])"
    r"|(?P<rp>[)\]])"
    r"|(?P<eq>=)"
    r"|(?P<approx>≈)"
    r"|(?P<pct>%)"
    r"|(?P<pi>π)"
    r"|(?P<other>.)",
    re.DOTALL,
)

_MATH_KINDS = {"num", "var", "op", "lp", "rp", "eq", "approx", "pct", "pi", "func"}
_FUNCS = {"sqrt"}
_FUNC_WORDS = {
    "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "lg", "arcsin", "arccos", "arctan",
    "max", "min", "gcd", "lcm", "mod", "abs", "floor", "ceil", "det", "f", "g", "h", "p", "q",
}
# A word right before an expression that makes the expression part of something larger.
_OPERATOR_WORDS = {
    "of", "times", "by", "plus", "minus", "over", "into", "half", "twice", "double", "triple", "thrice",
    "quarter", "third", "per", "than", "each", "every", "and", "add", "adding", "subtract", "subtracting",
    "multiply", "multiplying", "divide", "dividing", "from", "to", "with", "mod", "modulo", "remainder",
    "squared", "cubed", "root", "power", "exponent", "choose", "factorial", "percent", "least", "most",
    "x",  # "32 x (30/60) = 16": a multiplication sign the expression did not take in
}
# A word right after an expression that changes its value.
_TRAILING_WORDS = {
    "times", "squared", "cubed", "hundred", "thousand", "million", "billion", "trillion", "dozen", "of", "per",
    "percent", "k", "m", "mod", "modulo", "remainder", "r", "rem", "factorial", "choose", "to",
    "thousands", "millions", "billions", "hundreds", "dozens", "lakh", "crore",
}
_UNIT_STOP = {
    "and", "or", "so", "is", "are", "was", "were", "then", "which", "that", "to", "from", "of", "by", "the",
    "a", "an", "in", "on", "at", "for", "as", "if", "we", "it", "this", "but", "not", "be", "with", "into",
    "times", "plus", "minus", "over", "per", "divided", "multiplied", "equals", "gives", "yields", "hence",
    "thus", "therefore", "because", "since", "when", "where", "while", "than", "remainder", "r", "mod", "x",
    "hundred", "thousand", "million", "billion", "trillion", "dozen", "squared", "cubed", "ZZTIME", "ZZDATE",
    "ZZORD", "e", "i",
}
_UNIT_LETTERS = {"m", "g", "s", "h", "l", "L", "t", "K", "V", "W", "A", "J", "N"}


@dataclass
class _Tok:
    kind: str
    text: str
    glued: bool  # no whitespace before it
    unit: str | None = None


def _tokenize(s: str) -> list[_Tok]:
    raw: list[_Tok] = []
    glued = True
    for m in _TOKEN.finditer(s):
        kind = m.lastgroup or "other"
        if kind == "ws":
            glued = False
            continue
        raw.append(_Tok(kind, m.group(), glued))
        glued = True
    # words: variables (single letters next to math), function names, units attached to numbers
    out: list[_Tok] = []
    i = 0
    while i < len(raw):
        t = raw[i]
        if t.kind == "word":
            prev = out[-1] if out else None
            nxt = raw[i + 1] if i + 1 < len(raw) else None
            after = raw[i + 2] if i + 2 < len(raw) else None
            if t.text in _FUNCS and nxt is not None and nxt.kind == "lp" and nxt.glued:
                out.append(_Tok("func", t.text, t.glued))
                i += 1
                continue
            # a unit after a number: "5 cm", "12 apples" followed by an operator / relation / end
            if (
                prev is not None
                and prev.kind == "num"
                and prev.unit is None
                and t.text not in _UNIT_STOP
                and t.text.lower() not in _UNIT_STOP
                and (len(t.text) > 1 or (not t.glued and t.text in _UNIT_LETTERS))
                and (nxt is None or nxt.kind in {"op", "eq", "approx", "rp", "other"})
                and not (nxt is not None and nxt.kind == "op" and nxt.text == "/" and after is not None
                         and after.kind == "word")
            ):
                prev.unit = t.text.lower().rstrip("s") or t.text
                i += 1
                continue
            if len(t.text) == 1 and t.text not in {"I"}:
                math_left = prev is not None and (
                    prev.kind in {"op", "eq", "approx", "lp"} or (t.glued and prev.kind in {"num", "rp"})
                )
                math_right = nxt is not None and (
                    nxt.kind in {"op", "eq", "approx", "rp"} or (nxt.glued and nxt.kind in {"lp", "num"})
                )
                if (math_left or math_right) and not (prev is not None and prev.kind == "word"
                                                       and t.text == "a" and not math_right):
                    out.append(_Tok("var", t.text, t.glued))
                    i += 1
                    continue
        out.append(t)
        i += 1
    return out


# --------------------------------------------------------------------------------------------------
# Parser -> sympy
# --------------------------------------------------------------------------------------------------


@dataclass
class _Part:
    toks: list[_Tok]
    text: str
    has_pct: bool = False
    units: set[str] = field(default_factory=set)
    unitless_numbers: int = 0
    literal_decimals: int | None = None  # set when the part is a bare number literal
    bare_var: str | None = None
    is_bare: bool = False  # a lone number (maybe signed or parenthesised)
    has_implicit_after_div: bool = False


class _Parser:
    def __init__(self, toks: list[_Tok], cfg: SympyVerifierConfig, pct: bool) -> None:
        self.toks = toks
        self.i = 0
        self.cfg = cfg
        self.pct = pct  # read "n%" as n/100 (True) or as n (False)
        self.after_div = False
        self.implicit_after_div = False

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        t = self.peek()
        if t is None:
            raise _Unknown("unexpected end")
        self.i += 1
        return t

    def parse(self) -> sympy.Expr:
        e = self.expr()
        if self.peek() is not None:
            raise _Unknown(f"trailing {self.peek().text!r}")
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
                        raise _Unknown("division by zero")
                    e = e / r
                    self.after_div = True
            elif t.glued and t.kind in {"num", "var", "lp", "func", "pi"} and self._prev_is_operand():
                if t.kind == "num" and self.toks[self.i - 1].kind == "num":
                    raise _Unknown("two numbers in a row")
                if self.after_div:
                    self.implicit_after_div = True
                e = e * self.power()
            else:
                break
            self._guard(e)
        return e

    def _prev_is_operand(self) -> bool:
        p = self.toks[self.i - 1] if self.i > 0 else None
        return p is not None and p.kind in {"num", "var", "rp", "pi", "pct"}

    def unary(self) -> sympy.Expr:
        t = self.peek()
        if t is not None and t.kind == "op" and t.text in "+-":
            self.i += 1
            v = self.unary()
            return -v if t.text == "-" else v
        return self.power()

    def power(self) -> sympy.Expr:
        base = self.atom()
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
            raise _Unknown("symbolic power")
        if exp.is_Integer:
            if abs(int(exp)) > self.cfg.max_exponent:
                raise _Unknown("exponent too large")
        elif exp.is_Rational:
            if abs(exp.p) > self.cfg.max_exponent or exp.q > 64:
                raise _Unknown("exponent too large")
        else:
            fe = float(exp.evalf(20))
            if not math.isfinite(fe) or abs(fe) > self.cfg.max_exponent:
                raise _Unknown("exponent too large")
        if base == 0 and (exp.is_negative or exp == 0):
            raise _Unknown("0 ** non-positive")
        fb = abs(float(base.evalf(20))) if base.is_number else 1.0
        if fb > 1 and abs(float(exp.evalf(20))) * math.log10(fb) > self.cfg.max_digits:
            raise _Unknown("power too large")
        v = base**exp
        self._guard(v)
        return v

    def atom(self) -> sympy.Expr:
        t = self.take()
        if t.kind == "num":
            if len(t.text) > self.cfg.max_literal_digits:
                raise _Unknown("literal too long")
            v: sympy.Expr = sympy.Rational(t.text) if "e" not in t.text.lower() else sympy.Rational(
                sympy.Float(t.text, 30)
            )
            if "e" in t.text.lower():
                mant, _, ex = t.text.lower().partition("e")
                if abs(int(ex)) > self.cfg.max_exponent:
                    raise _Unknown("exponent too large")
                v = sympy.Rational(mant) * sympy.Integer(10) ** int(ex)
            nxt = self.peek()
            if nxt is not None and nxt.kind == "pct":
                self.i += 1
                if self.pct:
                    v = v / 100
            return v
        if t.kind == "var":
            return sympy.Symbol(t.text)
        if t.kind == "pi":
            return sympy.pi
        if t.kind == "lp":
            e = self.expr()
            r = self.take()
            if r.kind != "rp" or (t.text == "(") != (r.text == ")"):
                raise _Unknown("unbalanced brackets")
            nxt = self.peek()
            if nxt is not None and nxt.kind == "pct":
                self.i += 1
                if self.pct:
                    e = e / 100
            return e
        if t.kind == "func":
            lp = self.take()
            if lp.kind != "lp":
                raise _Unknown("function without argument")
            arg = self.expr()
            if self.take().kind != "rp":
                raise _Unknown("unbalanced brackets")
            if arg.is_number and arg.is_negative:
                raise _Unknown("sqrt of a negative")
            return sympy.sqrt(arg)
        raise _Unknown(f"unexpected {t.text!r}")

    def _guard(self, e: sympy.Expr) -> None:
        if e.is_Rational and e != 0:
            if max(abs(e.p), e.q).bit_length() > self.cfg.max_digits * 3.33:
                raise _Unknown("number too large")
        if e.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
            raise _Unknown("undefined value")


def _strip_edge_brackets(toks: list[_Tok]) -> list[_Tok]:
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


def _make_part(toks: list[_Tok]) -> _Part:
    toks = _strip_edge_brackets(toks)
    if toks:
        toks = [_Tok(toks[0].kind, toks[0].text, True, toks[0].unit)] + toks[1:]
    text = ""
    for j, t in enumerate(toks):
        text += ("" if t.glued or j == 0 else " ") + t.text + (f" {t.unit}" if t.unit else "")
    p = _Part(toks=toks, text=text)
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


def _eval(part: _Part, cfg: SympyVerifierConfig, pct: bool) -> tuple[sympy.Expr, bool]:
    parser = _Parser(part.toks, cfg, pct)
    v = parser.parse()
    return v, parser.implicit_after_div


# --------------------------------------------------------------------------------------------------
# Finding chains
# --------------------------------------------------------------------------------------------------


@dataclass
class _Chain:
    parts: list[_Part | None]  # None: not a complete expression
    rels: list[str]  # "=" or "≈" between parts[i] and parts[i + 1]
    first_after_word: bool


_GLUE_BREAKS = set("|!'\"#&@\\_`?")


def _chains(tokens: list[_Tok]) -> list[_Chain]:
    chains: list[_Chain] = []
    i = 0
    n = len(tokens)
    while i < n:
        if tokens[i].kind not in _MATH_KINDS:
            i += 1
            continue
        j = i
        while j < n and tokens[j].kind in _MATH_KINDS:
            j += 1
        run = tokens[i:j]
        prev = tokens[i - 1] if i > 0 else None
        nxt = tokens[j] if j < n else None
        i = j
        if not any(t.kind in {"eq", "approx"} for t in run):
            continue
        groups: list[list[_Tok]] = [[]]
        rels: list[str] = []
        for t in run:
            if t.kind in {"eq", "approx"}:
                groups.append([])
                rels.append("≈" if t.kind == "approx" else "=")
            else:
                groups[-1].append(t)
        parts: list[_Part | None] = [_make_part(g) if g else None for g in groups]
        parts = [p if p is not None and p.toks else None for p in parts]
        # left side may be the tail of a larger phrase
        first_tok = run[0]
        drop_first = False
        if prev is not None:
            if prev.kind == "word":
                low = prev.text.lower()
                if first_tok.glued or low in _OPERATOR_WORDS or low in _FUNC_WORDS:
                    drop_first = True
            elif prev.kind == "other" and first_tok.glued and prev.text in _GLUE_BREAKS:
                drop_first = True
        if first_tok.kind == "op" and first_tok.text in "*/^+":
            drop_first = True
        if drop_first:
            parts[0] = None
        # right side may continue into words ("= 5 million", "= 10!")
        if nxt is not None:
            if nxt.kind == "word" and (nxt.glued or nxt.text.lower() in _TRAILING_WORDS):
                parts[-1] = None
            elif nxt.kind == "other" and nxt.glued and nxt.text in _GLUE_BREAKS:
                parts[-1] = None
        if run[-1].kind == "op":
            parts[-1] = None
        chains.append(_Chain(parts, rels, first_after_word=prev is not None and prev.kind == "word"))
    return chains


# --------------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------------


def _fmt(v: sympy.Expr) -> str:
    if v.is_Rational:
        return str(v) if v.q == 1 or v.q > 10**6 else f"{v} (= {float(v):.10g})"
    try:
        return f"{float(v.evalf(30)):.10g}"
    except (TypeError, ValueError):
        return str(v)


def _rounding_ok(value: sympy.Expr, literal: sympy.Expr, decimals: int) -> bool:
    """Is ``literal`` (shown with ``decimals`` decimals) ``value`` rounded or truncated there?"""
    exact = sympy.Rational(value) if value.is_Rational else sympy.Rational(str(sympy.N(value, 40)))
    unit = sympy.Rational(1, 10**decimals)
    diff = abs(exact - literal)
    return bool(diff <= unit / 2 + sympy.Rational(1, 10**30) or (diff < unit and abs(literal) <= abs(exact)))


def _numbers_equal(a: sympy.Expr, b: sympy.Expr, cfg: SympyVerifierConfig, rel_tol: float) -> bool:
    if a.is_Rational and b.is_Rational and rel_tol <= 1e-12:
        return bool(a == b)
    fa, fb = float(sympy.N(a, 30)), float(sympy.N(b, 30))
    return math.isclose(fa, fb, rel_tol=max(rel_tol, 1e-15), abs_tol=cfg.abs_tol)


def _compare(
    lp: _Part, rp: _Part, lvals: list[sympy.Expr], rvals: list[sympy.Expr], rel: str, cfg: SympyVerifierConfig
) -> bool:
    tol = cfg.approx_rel_tol if rel == "≈" else cfg.rel_tol
    for a in lvals:
        for b in rvals:
            if _numbers_equal(a, b, cfg, tol):
                return True
            if cfg.allow_rounding or rel == "≈":
                if rp.literal_decimals is not None and _rounding_ok(a, b, rp.literal_decimals):
                    return True
                if lp.literal_decimals is not None and _rounding_ok(b, a, lp.literal_decimals):
                    return True
    return False


_NEGATION = re.compile(
    r"\b(?:wait|oops|mistake|mistaken|incorrect|wrong|not|isn't|aren't|doesn't|don't|cannot|can't|false|error|"
    r"typo|correction|corrected|actually|instead|should\s+be|recheck|re-check|double-check|suppose|assume|"
    r"hypothetically|if\s+we\s+had|would\s+be|nope|no,)\b|≠|!=|\?",
    re.IGNORECASE,
)


def _values(part: _Part, cfg: SympyVerifierConfig) -> tuple[list[sympy.Expr], bool]:
    """Values of a part under each reading of ``%`` (as /100 and, when ambiguous, as a bare number)."""
    v, amb = _eval(part, cfg, pct=True)
    vals = [v]
    if part.has_pct:
        v2, amb2 = _eval(part, cfg, pct=False)
        vals.append(v2)
        amb = amb or amb2
    return vals, amb


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def _claim_text(lp: _Part, rp: _Part, rel: str) -> str:
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
    negated = bool(_NEGATION.search(text))
    tokens = _tokenize(_normalize(text))
    chains = _chains(tokens)
    claims: list[Claim] = []

    # in-step bindings: a bare variable in a chain with numeric parts
    local: dict[str, set[sympy.Expr]] = {}
    local_expr: dict[str, bool] = {}
    numeric_cache: dict[int, tuple[list[sympy.Expr], bool] | None] = {}

    def numeric(part: _Part | None, subst: dict[str, sympy.Expr] | None = None) -> tuple[list[sympy.Expr], bool] | None:
        if part is None:
            return None
        key = id(part)
        if subst is None and key in numeric_cache:
            return numeric_cache[key]
        try:
            vals, amb = _values(part, cfg)
            if subst is not None:
                vals = [v.subs(subst) if v.free_symbols else v for v in vals]
            if any(v.free_symbols or not v.is_number or v.has(sympy.zoo, sympy.nan) for v in vals):
                res = None
            elif any(v.is_real is False for v in vals):
                res = None
            else:
                res = (vals, amb)
        except (_Unknown, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError):
            res = None
        if subst is None:
            numeric_cache[key] = res
        return res

    for ch in chains:
        for k, p in enumerate(ch.parts):
            if p is None or p.bare_var is None:
                continue
            nums = [q for q in ch.parts if q is not None and q.bare_var is None]
            vals = [numeric(q) for q in nums]
            vals = [v for v in vals if v is not None and len(v[0]) == 1]
            if any(q is None for q in ch.parts):
                local.setdefault(p.bare_var, set()).add(sympy.Symbol("__ambiguous__"))
            elif vals:
                local.setdefault(p.bare_var, set()).add(vals[-1][0][0])
                adjacent = ch.parts[k + 1] if k + 1 < len(ch.parts) else None
                local_expr[p.bare_var] = adjacent is not None and not adjacent.is_bare
    unique_local = {v: next(iter(s)) for v, s in local.items() if len(s) == 1}
    subst_env: dict[str, sympy.Expr] = {**carried, **unique_local}
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
                        ok = _compare(other, other, [carried[var]], got[0], rel, cfg) or any(
                            _numbers_equal(carried[var], g, cfg, cfg.rel_tol) for g in got[0]
                        )
                        add(
                            Claim(
                                text=_claim_text(lp, rp, rel), lhs=lp.text, rhs=rp.text, kind="rebinding",
                                holds=ok if not (negated and not ok) else None,
                                lhs_value=_fmt(carried[var]), rhs_value=_fmt(got[0][0]),
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
                    lsym, _ = _eval(lp, cfg, pct=True)
                    rsym, _ = _eval(rp, cfg, pct=True)
                except (_Unknown, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError):
                    continue
                free = lsym.free_symbols | rsym.free_symbols
                if not free:
                    continue
                if free <= set(subst_syms):
                    ls = numeric(lp, subst_syms)
                    rs = numeric(rp, subst_syms)
                    if ls is None or rs is None:
                        continue
                    ok = _compare(lp, rp, ls[0], rs[0], rel, cfg)
                    amb = ls[1] or rs[1]
                    note = None
                    holds: bool | None = ok
                    if not ok and (negated or amb or unit_mix):
                        holds, note = None, "suppressed: ambiguous reading or hedged step"
                    add(
                        Claim(
                            text=_claim_text(lp, rp, rel), lhs=lp.text, rhs=rp.text, kind="substitution",
                            holds=holds, lhs_value=_fmt(ls[0][0]), rhs_value=_fmt(rs[0][0]),
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
            ok = _compare(lp, rp, ln[0], rn[0], rel, cfg)
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
                    lhs_value=_fmt(ln[0][0]), rhs_value=_fmt(rn[0][0]), note=note,
                )
            )

    refuted = [c for c in claims if c.holds is False]
    if refuted:
        verdict, evidence = REFUTED, refuted[0].describe()
    elif any(c.holds for c in claims):
        verdict, evidence = VERIFIED, None
    else:
        verdict, evidence = UNKNOWN, None
    new_bindings = dict(unique_local)
    step = StepVerdict(verdict=verdict, claims=claims, evidence=evidence, bindings=new_bindings)
    step._computed = {v for v in unique_local if local_expr.get(v)}  # type: ignore[attr-defined]
    return step


def verify_solution(steps: list[str], config: SympyVerifierConfig | None = None) -> SolutionVerdict:
    """Verify every step; variables given a number in one step (``A = ... = -14``) carry to later ones."""
    cfg = config or SympyVerifierConfig()
    bindings: dict[str, sympy.Expr] = {}
    computed: set[str] = set()
    results: list[StepVerdict] = []
    for text in steps:
        sv = verify_step(text, cfg, bindings=bindings if cfg.carry_bindings else None, computed=computed)
        results.append(sv)
        if cfg.carry_bindings:
            for var, val in sv.bindings.items():
                bindings[var] = val
                if var in sv._computed:  # type: ignore[attr-defined]
                    computed.add(var)
                else:
                    computed.discard(var)
    verdicts = [r.verdict for r in results]
    first = next((i for i, v in enumerate(verdicts) if v == REFUTED), -1)
    return SolutionVerdict(verdicts=verdicts, first_refuted=first, evidence=[r.evidence for r in results],
                           steps=results)
