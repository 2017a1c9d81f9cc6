"""Relation chains ``a = b = c`` in a token stream, with the sides that may be part of a larger phrase dropped."""

from __future__ import annotations

from dataclasses import dataclass

from steplabel.checks.sympy_steps.parser import Part, make_part
from steplabel.checks.sympy_steps.tokens import MATH_KINDS, FUNC_WORDS, OPERATOR_WORDS, TRAILING_WORDS, Tok


@dataclass
class Chain:
    parts: list[Part | None]  # None: not a complete expression
    rels: list[str]  # "=" or "≈" between parts[i] and parts[i + 1]
    prev_word: str | None  # the word right before the chain ("let", "if", ...), lower case


_GLUE_BREAKS = set("|!'\"#&@\\_`?")


def _unclosed(toks: list[Tok], more: str, than: str) -> bool:
    """Does ``toks`` hold more brackets of kind ``more`` than of kind ``than``?"""
    return sum(t.kind == more for t in toks) > sum(t.kind == than for t in toks)


def find_chains(tokens: list[Tok]) -> list[Chain]:
    chains: list[Chain] = []
    i = 0
    n = len(tokens)
    while i < n:
        if tokens[i].kind not in MATH_KINDS:
            i += 1
            continue
        j = i
        while j < n and tokens[j].kind in MATH_KINDS:
            j += 1
        run = tokens[i:j]
        prev = tokens[i - 1] if i > 0 else None
        nxt = tokens[j] if j < n else None
        i = j
        if not any(t.kind in {"eq", "approx"} for t in run):
            continue
        groups: list[list[Tok]] = [[]]
        rels: list[str] = []
        for t in run:
            if t.kind in {"eq", "approx"}:
                groups.append([])
                rels.append("≈" if t.kind == "approx" else "=")
            else:
                groups[-1].append(t)
        parts: list[Part | None] = [make_part(g) if g else None for g in groups]
        parts = [p if p is not None and p.toks else None for p in parts]
        # left side may be the tail of a larger phrase
        first_tok = run[0]
        drop_first = False
        if prev is not None:
            if prev.kind == "word":
                low = prev.text.lower()
                if first_tok.glued or low in OPERATOR_WORDS or low in FUNC_WORDS:
                    drop_first = True
            elif prev.kind == "other" and first_tok.glued and prev.text in _GLUE_BREAKS:
                drop_first = True
            elif prev.text == "#" or (prev.text == "," and _unclosed(groups[0], "rp", "lp")):
                drop_first = True  # an unknown command's argument, or the tail of a tuple "(a, b) = ..."
        if first_tok.kind == "op" and first_tok.text in "*/^+":
            drop_first = True
        if drop_first:
            parts[0] = None
        # right side may continue into words ("= 5 million", "= 10!")
        if nxt is not None:
            if nxt.kind == "word" and (nxt.glued or nxt.text.lower() in TRAILING_WORDS):
                parts[-1] = None
            elif nxt.kind == "other" and nxt.glued and nxt.text in _GLUE_BREAKS:
                parts[-1] = None
            elif nxt.text == "#" or (nxt.text == "," and _unclosed(groups[-1], "lp", "rp")):
                parts[-1] = None  # "... = 3 \pm 2", "... = (c, d)"
        if run[-1].kind == "op":
            parts[-1] = None
        chains.append(Chain(parts, rels, prev_word=prev.text.lower() if prev is not None and prev.kind == "word" else None))
    return chains
