"""Final-answer extraction from model responses and dataset gold fields.

Every rollout is graded by its final answer, and label noise is easier to audit
when we know *how* the answer was found, so each extraction records the rule
that fired.  Rules, highest priority first:

``boxed``       the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces); boxes that
                follow each other separated only by commas or "and" (``$\\boxed{-3}$, $\\boxed{4}$``)
                are one multi-part answer, joined with ", ".
``answer_is``   the last "The answer is X" / "final answer is X" / "answer: X".  A phrase
                nested in another ("Final Answer: The final answer is $57$.") yields 57, and
                when X holds math (``$..$``) only the math is kept.
``gsm8k``       the last ``#### X``.
``last_math``   no marker: the last math segment (``$..$``, ``\\(..\\)``, ``\\[..\\]``) when it
                ends after the last number outside math.  Adjacent segments joined by commas
                or "and"/"or" form one list (``$-3$, $1$, $4$`` -> ``-3, 1, 4``); in a chain
                ``a = b = c`` only the last side is kept.
``last_number`` the last number outside math.  A number inside a LaTeX expression written
                without ``$`` (``\\frac{7}{16}``) yields the whole expression, never 16.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RULES: tuple[str, ...] = ("boxed", "answer_is", "gsm8k", "last_math", "last_number")


@dataclass(frozen=True)
class ExtractedAnswer:
    """An extracted answer string and the rule (one of :data:`RULES`) that produced it."""

    value: str
    rule: str


_BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_PHRASE = r"\banswer\s*(?:is\s*:?|:)\s*"
_ANSWER_IS = re.compile(_ANSWER_PHRASE + r"(?P<ans>.+?)\s*(?=\.\s|\.?$|\n)", re.IGNORECASE | re.MULTILINE)
_NESTED_PHRASE = re.compile(r"^.*" + _ANSWER_PHRASE, re.IGNORECASE | re.DOTALL)
_GSM8K = re.compile(r"####\s*(?P<ans>[^\n]*)")
# A number: optional sign (not a binary minus like "3-5"), thousands groups or
# plain digits, optional decimals, optional "/int" fraction.
_NUMBER = r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|(?:(?<![\w)])-)?\.\d+"
_LAST_NUMBER = re.compile(_NUMBER)
# "12 apples", "-3.5 dollars", "50% of them": a number followed only by words.
_NUMBER_THEN_WORDS = re.compile(rf"^(?P<num>(?:{_NUMBER})%?)(?:\s+[A-Za-z][A-Za-z\s]*)?$")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# Math segments; "$$" before "$" so display math is one segment.  "\$" is a literal dollar.
_MATH = re.compile(r"\$\$(?P<a>.+?)\$\$|(?<!\\)\$(?P<b>[^$]+?)(?<!\\)\$|\\\((?P<c>.+?)\\\)|\\\[(?P<d>.+?)\\\]", re.DOTALL)
# Between two parts of one multi-part answer: commas, "and"/"or", spaces.
_LIST_GAP = re.compile(r"^(?:\s*(?:,|;|\band\b|\bor\b)\s*)+$|^\s*$")
_LATEX_COMMAND = re.compile(r"\\[a-zA-Z]+(?:\s*\{[^{}]*\})?")
_PROSE = re.compile(r"[A-Za-z]{3,}")
_TEXT_WRAPPER = re.compile(r"\\text\s*\{([^{}]*)\}")
_TRAILING_PUNCT = re.compile(r"[.,;:!?]+$")


def _balanced_end(text: str, start: int) -> int | None:
    """Index of the brace closing the group opened just before ``start``, or None."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """Every balanced ``\\boxed{}``/``\\fbox{}``: (start, end, stripped content)."""
    found = []
    for match in _BOXED_START.finditer(text):
        end = _balanced_end(text, match.end())
        if end is not None:
            found.append((match.start(), end + 1, text[match.end() : end].strip()))
    return found


def _last_boxed(text: str) -> str | None:
    """Content of the last box; boxes separated only by list glue (and ``$``) join into one list."""
    boxes = [b for b in _boxes(text) if b[2]]
    if not boxes:
        return None
    run = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if not _LIST_GAP.match(text[box[1] : run[0][0]].replace("$", "")):
            break
        run.insert(0, box)
    return ", ".join(_strip_answer_phrase(b[2]) for b in run)


def _strip_answer_phrase(ans: str) -> str:
    """"The final answer is 57" -> "57": a closing sentence is never the answer itself."""
    unwrapped = _TEXT_WRAPPER.sub(r"\1", ans)
    return _NESTED_PHRASE.sub("", unwrapped).strip() if _NESTED_PHRASE.match(unwrapped) else ans


def _math_segments(text: str) -> list[tuple[int, int, str]]:
    """Math segments as (start, end, content), skipping "$" pairs that enclose prose (currency)."""
    segments = []
    for m in _MATH.finditer(text):
        content = next(g for g in m.groups() if g is not None).strip()
        if content and not _PROSE.search(_LATEX_COMMAND.sub("", content)):
            segments.append((m.start(), m.end(), content))
    return segments


def _last_math_run(text: str, segments: list[tuple[int, int, str]]) -> str:
    """The last segment plus the segments glued to it by commas/"and"/"or" (one list answer)."""
    run = [segments[-1]]
    for seg in reversed(segments[:-1]):
        if not _LIST_GAP.match(text[seg[1] : run[0][0]]):
            break
        run.insert(0, seg)
    return ", ".join(_last_side(s[2]) for s in run)


def _last_side(expr: str) -> str:
    """In a chain ``a = b = c`` the answer is ``c``; a single equation (``y = 2x+1``) is kept whole."""
    sides = re.split(r"(?<![<>!\\])=(?!=)", expr)
    return sides[-1].strip() if len(sides) > 2 else expr


def _clean_span(ans: str) -> str:
    """Strip the decoration around an answer phrase, keeping only the math.

    ``**73**`` -> ``73``, ``$\\frac{1}{2}$.`` -> ``\\frac{1}{2}``, ``12 apples.`` -> ``12``,
    ``$1,234`` -> ``1234``, ``$x = 3$ for both`` -> ``x = 3``.  Other answers ("3, 4",
    ``2\\sqrt{2}``) are kept whole.
    """
    ans = _strip_answer_phrase(ans.replace("**", ""))
    segments = _math_segments(ans)
    if segments:
        ans = _last_math_run(ans, segments) if len(segments) > 1 else segments[0][2]
    ans = ans.replace("\\$", "").replace("$", "").strip()
    ans = _TRAILING_PUNCT.sub("", ans).strip()
    m = _NUMBER_THEN_WORDS.match(ans)
    if m:
        ans = _THOUSANDS_COMMA.sub("", m.group("num"))
    return ans


def _whole_expression(text: str, start: int, end: int) -> str | None:
    """The LaTeX token around a number (``\\frac{7}{16}``), or None when the number stands alone."""
    left = text.rfind(" ", 0, start) + 1
    right = text.find(" ", end)
    token = _TRAILING_PUNCT.sub("", text[left : len(text) if right < 0 else right])
    return token if "\\" in token else None


def _fallback(text: str) -> ExtractedAnswer | None:
    """No marker: whichever ends last of the last math run and the last number outside math."""
    segments = _math_segments(text)
    outside = text
    for start, end, _ in segments:  # blank out math so its numbers are not read as prose numbers
        outside = outside[:start] + " " * (end - start) + outside[end:]
    numbers = list(_LAST_NUMBER.finditer(outside))
    if segments and (not numbers or segments[-1][1] > numbers[-1].end()):
        return ExtractedAnswer(_clean_span(_last_math_run(text, segments)), "last_math")
    if not numbers:
        return None
    last = numbers[-1]
    whole = _whole_expression(outside, last.start(), last.end())
    return ExtractedAnswer(whole or last.group().replace(",", ""), "last_number")


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
    return _fallback(text)


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
        boxes = _boxes(raw)
        value = boxes[-1][2] if boxes else ""
    else:
        value = raw.strip()
    if not value:
        raise ValueError(f"no usable {style} reference answer in {raw[:80]!r}")
    return value
