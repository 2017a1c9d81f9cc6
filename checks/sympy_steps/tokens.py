"""Tokens of normalised step text: numbers, variables, operators, units attached to numbers."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    r"|(?P<fact>!)"
    r"|(?P<other>.)",
    re.DOTALL,
)

MATH_KINDS = {"num", "var", "op", "lp", "rp", "eq", "approx", "pct", "pi", "func", "fact"}
# Letters that name functions in competition math: "f(0)" is an application, never f * 0.
FUNCTION_LETTERS = set("fghpqFGHPQ")
_FUNCS = {"sqrt"}
FUNC_WORDS = {
    "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "lg", "arcsin", "arccos", "arctan",
    "max", "min", "gcd", "lcm", "mod", "abs", "floor", "ceil", "det", "f", "g", "h", "p", "q",
}
# A word right before an expression that makes the expression part of something larger.
OPERATOR_WORDS = {
    "of", "times", "by", "plus", "minus", "over", "into", "half", "twice", "double", "triple", "thrice",
    "quarter", "third", "per", "than", "each", "every", "and", "add", "adding", "subtract", "subtracting",
    "multiply", "multiplying", "divide", "dividing", "from", "to", "with", "mod", "modulo", "remainder",
    "squared", "cubed", "root", "power", "exponent", "choose", "factorial", "percent", "least", "most",
    "x",  # "32 x (30/60) = 16": a multiplication sign the expression did not take in
}
# A word right after an expression that changes its value.
TRAILING_WORDS = {
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
class Tok:
    kind: str
    text: str
    glued: bool  # no whitespace before it
    unit: str | None = None


def tokenize(s: str) -> list[Tok]:
    raw: list[Tok] = []
    glued = True
    for m in _TOKEN.finditer(s):
        kind = m.lastgroup or "other"
        if kind == "ws":
            glued = False
            continue
        raw.append(Tok(kind, m.group(), glued))
        glued = True
    # words: variables (single letters next to math), function names, units attached to numbers
    out: list[Tok] = []
    i = 0
    while i < len(raw):
        t = raw[i]
        if t.kind == "word":
            prev = out[-1] if out else None
            nxt = raw[i + 1] if i + 1 < len(raw) else None
            after = raw[i + 2] if i + 2 < len(raw) else None
            if t.text in _FUNCS and nxt is not None and nxt.kind == "lp" and nxt.glued:
                out.append(Tok("func", t.text, t.glued))
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
                    out.append(Tok("var", t.text, t.glued))
                    i += 1
                    continue
        if t.kind == "fact" and not (t.glued and out and out[-1].kind in {"num", "rp"}):
            t = Tok("other", t.text, t.glued)  # an exclamation mark, not a factorial
        out.append(t)
        i += 1
    return out
