"""Final-answer extraction from model responses and dataset gold fields.

Every rollout is graded by its final answer, and label noise is easier to audit
when we know *how* the answer was found, so each extraction records the rule
that fired (DESIGN.md section 6).  Rules, highest priority first:

``boxed``       last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces)
``answer_is``   last "The answer is X" / "final answer is X" / "answer: X"
``gsm8k``       last ``#### X``
``last_number`` last number in the text (fallback; weakest evidence)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RULES: tuple[str, ...] = ("boxed", "answer_is", "gsm8k", "last_number")


@dataclass(frozen=True)
class ExtractedAnswer:
    """An extracted answer string and the rule (one of :data:`RULES`) that produced it."""

    value: str
    rule: str


_BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(
    r"\banswer\s*(?:is\s*:?|:)\s*(?P<ans>.+?)\s*(?=\.\s|\.?$|\n)",
    re.IGNORECASE | re.MULTILINE,
)
_GSM8K = re.compile(r"####\s*(?P<ans>[^\n]*)")
# A number: optional sign (not a binary minus like "3-5"), thousands groups or
# plain digits, optional decimals, optional "/int" fraction.
_NUMBER = r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|(?:(?<![\w)])-)?\.\d+"
_LAST_NUMBER = re.compile(_NUMBER)
# "12 apples", "-3.5 dollars", "50% of them": a number followed only by words.
_NUMBER_THEN_WORDS = re.compile(rf"^(?P<num>(?:{_NUMBER})%?)(?:\s+[A-Za-z][A-Za-z\s]*)?$")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{}``/``\\fbox{}`` with nested braces balanced, or None."""
    for match in reversed(list(_BOXED_START.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


def _clean_span(ans: str) -> str:
    """Strip the decoration around an answer phrase, keeping only the math.

    ``**73**`` -> ``73``, ``$\\frac{1}{2}$.`` -> ``\\frac{1}{2}``, ``12 apples.`` -> ``12``,
    ``$1,234`` -> ``1234``.  Non-numeric answers ("3, 4", ``2\\sqrt{2}``) are kept whole.
    """
    ans = ans.replace("**", "").replace("\\$", "").replace("$", "").strip()
    ans = ans.rstrip(".").strip()
    m = _NUMBER_THEN_WORDS.match(ans)
    if m:
        ans = _THOUSANDS_COMMA.sub("", m.group("num"))
    return ans


def extract_answer(text: str) -> ExtractedAnswer | None:
    """Find the final answer in a model response, recording which rule fired."""
    boxed = _last_boxed(text)
    if boxed:
        return ExtractedAnswer(boxed, "boxed")
    for rule, pattern in (("answer_is", _ANSWER_IS), ("gsm8k", _GSM8K)):
        matches = list(pattern.finditer(text.replace("**", "") if rule == "answer_is" else text))
        for m in reversed(matches):
            value = _clean_span(m.group("ans"))
            if value:
                return ExtractedAnswer(value, rule)
    numbers = _LAST_NUMBER.findall(text)
    if numbers:
        return ExtractedAnswer(numbers[-1].replace(",", ""), "last_number")
    return None


def reference_answer(raw: str, style: str = "auto") -> str:
    """Turn a dataset's gold field into the reference answer string.

    ``gsm8k``: text after the last ``####`` (thousands commas removed);
    ``boxed``: content of the last ``\\boxed{}``; ``plain``: the stripped field;
    ``auto``: gsm8k if ``####`` is present, else boxed if ``\\boxed`` is, else plain.
    """
    styles = ("auto", "gsm8k", "boxed", "plain")
    if style not in styles:
        raise ValueError(f"unknown reference style {style!r}; valid styles: {', '.join(styles)}")
    if style == "auto":
        style = "gsm8k" if "####" in raw else "boxed" if "\\boxed" in raw else "plain"
    if style == "gsm8k":
        if "####" not in raw:
            raise ValueError(f"gsm8k reference has no '####' marker: {raw[:80]!r}")
        value = _THOUSANDS_COMMA.sub("", raw.rsplit("####", 1)[1].strip())
    elif style == "boxed":
        value = _last_boxed(raw) or ""
    else:
        value = raw.strip()
    if not value:
        raise ValueError(f"no usable {style} reference answer in {raw[:80]!r}")
    return value
