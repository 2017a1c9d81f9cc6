"""Split a solution into steps and join steps back into prefixes.

A PRM label is attached to each step, and Monte-Carlo rollouts continue from a
prefix of steps, so ``join_steps(split_steps(t, m)[:k], m)`` must give a prefix
the model can continue.  Three splitters are supported (OmegaPRM §4.2 treats any token span as a step and
aims for about 16 pieces per solution):

* ``blank_line``   - one step per paragraph (Math-Shepherd / PRM800K style).
* ``step_pattern`` - one step per ``Step k:`` line (models prompted to number steps).
* ``token_chunks`` - fixed-size word chunks (OmegaPRM style) for unstructured text.
"""

from __future__ import annotations

import re

METHODS: tuple[str, ...] = ("blank_line", "step_pattern", "token_chunks")

# How each method's steps are glued back into a prefix.  token_chunks loses the
# original whitespace (chunks were cut on any whitespace), so a single space is
# the only separator that never invents structure.
_JOINERS: dict[str, str] = {"blank_line": "\n\n", "step_pattern": "\n", "token_chunks": " "}

_BLANK_LINE = re.compile(r"\n\s*\n")
_STEP_START = re.compile(r"^(?=[ \t]*step[ \t]*\d+[ \t]*:)", re.IGNORECASE | re.MULTILINE)
# Lines that only announce the final answer; they belong to the last step
# instead of becoming a step of their own.
_ANSWER_LINE = re.compile(
    r"^\s*(?:(?:\*\*)?(?:the\s+)?(?:final\s+)?answer\b|####|.*\\boxed\s*\{)", re.IGNORECASE
)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown step method {method!r}; valid methods: {', '.join(METHODS)}")


def _clean(parts: list[str]) -> list[str]:
    return [p.strip() for p in parts if p.strip()]


def _split_step_pattern(text: str) -> list[str]:
    """Split at ``Step k:`` lines; keep real preamble, fold a trailing answer line into the last step."""
    parts = _STEP_START.split(text)
    preamble, steps = parts[0], parts[1:]
    if not steps:
        return _clean([text])
    out = _clean([preamble] + steps)
    last_lines = out[-1].splitlines()
    # Peel answer lines off the end (skipping blank lines) and re-attach them with a single newline.
    tail: list[str] = []
    while len(last_lines) > 1 and (not last_lines[-1].strip() or _ANSWER_LINE.match(last_lines[-1])):
        line = last_lines.pop()
        if line.strip():
            tail.insert(0, line.strip())
    out[-1] = "\n".join(["\n".join(last_lines).rstrip()] + tail)
    return out


def _split_token_chunks(text: str, chunk_words: int) -> list[str]:
    """Chunks of ``chunk_words`` words; a tail of at most a quarter chunk is merged so no step is a stray word."""
    if chunk_words < 1:
        raise ValueError(f"chunk_words must be >= 1, got {chunk_words}")
    words = text.split()
    chunks = [words[i : i + chunk_words] for i in range(0, len(words), chunk_words)]
    if len(chunks) > 1 and len(chunks[-1]) <= chunk_words // 4:
        chunks[-2].extend(chunks.pop())
    return [" ".join(c) for c in chunks]


def split_steps(text: str, method: str = "blank_line", chunk_words: int = 48) -> list[str]:
    """Split ``text`` into stripped, non-empty steps using ``method``."""
    _check_method(method)
    if method == "blank_line":
        return _clean(_BLANK_LINE.split(text))
    if method == "step_pattern":
        return _split_step_pattern(text)
    return _split_token_chunks(text, chunk_words)


def join_steps(steps: list[str], method: str) -> str:
    """Inverse of :func:`split_steps` used to build rollout prefixes.

    Separators: blank_line -> ``"\\n\\n"``, step_pattern -> ``"\\n"``, token_chunks -> ``" "``.
    Splitting the result again with the same method gives back ``steps`` (for
    token_chunks only when the chunk size is unchanged).
    """
    _check_method(method)
    return _JOINERS[method].join(steps)
