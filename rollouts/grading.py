"""Layered answer grading that records which layer decided (DESIGN.md section 6, ECOSYSTEM.md 9.4).

Layers, in order:

``no_answer``   nothing was extracted -> wrong.
``string``      normalised strings are equal -> right.
``numeric``     both sides are plain numbers -> they decide (exact for two
                integers / fractions, relative tolerance 1e-4 once a decimal
                is involved; a ``%`` may be read or ignored, Qwen-style).
``math_verify`` Math-Verify ``verify(parse(gold), parse(pred))`` (gold first; the
                check is asymmetric on purpose), guarded against its tiny-value
                false positives (Math-Verify issue #14).
``timeout``     Math-Verify exceeded our wall-clock budget -> wrong.
``unparsable``  Math-Verify could not parse one of the sides (or raised, or its
                worker process died) -> wrong.

Math-Verify's own timeouts use ``signal.alarm``, which raises in non-main
threads (Math-Verify #11/#50/#55), so they are disabled and Math-Verify runs in
a separate worker process that we kill when it overruns.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import Any

from steplabel.rollouts.answers import ExtractedAnswer, extract_answer

LAYERS: tuple[str, ...] = ("no_answer", "string", "numeric", "math_verify", "timeout", "unparsable")
REL_TOL = Fraction(1, 10_000)
_CACHE_MAX = 200_000
_STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Verdict:
    """Whether the prediction matches the reference, and the layer (one of :data:`LAYERS`) that decided."""

    correct: bool
    layer: str


# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------

_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_BOXED_WHOLE = re.compile(r"^\\(?:boxed|fbox)\s*\{(.*)\}$", re.DOTALL)
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![a-zA-Z])")
_THIN_SPACES = re.compile(r"\\[!,;:]")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")
_SQRT_PARENS = re.compile(r"\\sqrt\(([^()]*)\)")  # malformed \sqrt(2): Math-Verify #41
_COMMA_NUMBER = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?$")
_ASSIGNMENT = re.compile(r"^[a-zA-Z]\s*=\s*([^=]+)$")
_MCQ_LETTER = re.compile(r"^\(([A-Z])\)$")
# Whitespace is dropped unless it separates two letters ("\pi r" must not become "\pir").
_SPACE = re.compile(r"(?<![a-zA-Z])\s+|\s+(?![a-zA-Z])")


def normalize_answer(s: str) -> str:
    """Canonicalise surface notation so that only formatting differences disappear.

    Deliberately conservative: it never deletes digits or compares substrings,
    so e.g. "1" and "21" stay different (the openr substring trap).
    """
    s = s.strip()
    boxed = _BOXED_WHOLE.match(s)
    if boxed:
        s = boxed.group(1)
    s = s.replace("\\$", "").replace("$", "")
    prev = None
    while prev != s:  # unwrap nested \text{\textbf{..}}
        prev, s = s, _TEXT_WRAPPERS.sub(r"\1", s)
    s = _LEFT_RIGHT.sub("", s)
    s = _THIN_SPACES.sub("", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\%", "%").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SQRT_PARENS.sub(r"\\sqrt{\1}", s)
    s = _SPACE.sub("", s.strip()).rstrip(".")
    if _COMMA_NUMBER.match(s):
        s = s.replace(",", "")
    assignment = _ASSIGNMENT.match(s)
    if assignment:
        s = assignment.group(1)
    letter = _MCQ_LETTER.match(s)
    if letter:
        s = letter.group(1)
    return s


# ---------------------------------------------------------------------------
# Plain-number layer
# ---------------------------------------------------------------------------

_DECIMAL = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_INT = r"[+-]?\d+"
_PLAIN_NUMBER = re.compile(
    rf"^(?:(?P<num>{_DECIMAL})"
    rf"|(?P<a>{_INT})/(?P<b>{_INT})"
    rf"|(?P<sign>-?)\\frac\{{(?P<fa>{_INT})\}}\{{(?P<fb>{_INT})\}})(?P<pct>%?)$"
)


@dataclass(frozen=True)
class _Number:
    """A plain number parsed exactly; ``approx`` marks decimals (tolerance applies), ``percent`` a trailing %."""

    value: Fraction
    approx: bool
    percent: bool

    def readings(self) -> tuple[Fraction, ...]:
        """Values this literal may mean: "50%" is 0.5 or (percent sign dropped) 50."""
        return (self.value / 100, self.value) if self.percent else (self.value,)


def _parse_number(s: str) -> _Number | None:
    m = _PLAIN_NUMBER.match(s)
    if m is None:
        return None
    pct = bool(m.group("pct"))
    if m.group("num") is not None:
        text = m.group("num")
        return _Number(Fraction(text), approx=not text.lstrip("+-").isdigit(), percent=pct)
    try:
        if m.group("a") is not None:
            value = Fraction(int(m.group("a")), int(m.group("b")))
        else:
            value = Fraction(int(m.group("fa")), int(m.group("fb")))
            value = -value if m.group("sign") else value
    except ZeroDivisionError:
        return None
    return _Number(value, approx=False, percent=pct)


def _numbers_agree(pred: _Number, gold: _Number) -> bool:
    """Exact for two exact literals (so 10000 != 10001), else |a-b| <= 1e-4 * max(|a|, |b|)."""
    approx = pred.approx or gold.approx
    for p in pred.readings():
        for g in gold.readings():
            if p == g or (approx and abs(p - g) <= REL_TOL * max(abs(p), abs(g))):
                return True
    return False


# ---------------------------------------------------------------------------
# Math-Verify worker process
# ---------------------------------------------------------------------------


def _latex_for_parse(s: str) -> str:
    """Wrap a bare answer in ``$..$`` so LatexExtractionConfig finds it (``%`` would start a TeX comment)."""
    s = re.sub(r"(?<!\\)%", r"\\%", s)
    return s if "$" in s or "\\boxed" in s else f"${s}$"


def _numerically_distinct(gold: Any, pred: Any) -> bool:
    """True when two closed-form numbers differ by more than REL_TOL.

    Math-Verify rounds to 6 decimals, so 1/2004! vs 1/2006! and 1/2^99 vs 1/2^98
    compare equal (issue #14); a high-precision evalf catches that cheaply.
    """
    import sympy

    if not (isinstance(gold, sympy.Expr) and isinstance(pred, sympy.Expr)):
        return False
    if not (gold.is_number and pred.is_number):
        return False
    a, b = sympy.N(gold, 50), sympy.N(pred, 50)
    if not (a.is_real and b.is_real and a.is_finite and b.is_finite):
        return False
    return bool(abs(a - b) > sympy.Rational(REL_TOL.numerator, REL_TOL.denominator) * max(abs(a), abs(b)))


def _math_verify(gold: str, pred: str) -> tuple[bool, str]:
    """Run parse/verify (gold first) with Math-Verify's signal timeouts disabled."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]

    def _parse(s: str) -> list[Any]:
        parsed = parse(_latex_for_parse(s), extraction_config=configs, parsing_timeout=None)
        return parsed or parse(s, extraction_config=configs, parsing_timeout=None)

    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False, "unparsable"
    correct = verify(gold_parsed, pred_parsed, timeout_seconds=None)
    if correct and "%" not in gold + pred and _numerically_distinct(gold_parsed[0], pred_parsed[0]):
        correct = False
    return bool(correct), "math_verify"


def _worker_main(conn: Connection) -> None:
    """Serve (gold, pred) requests until the pipe closes; importing here keeps the parent light."""
    import logging

    # Math-Verify warns on every call that its timeout is disabled; we enforce our own.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401  (warm the import before reporting ready)

    conn.send("ready")
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        try:
            conn.send(_math_verify(*request))
        except Exception:  # noqa: BLE001 - any parser/sympy crash means "could not grade"
            conn.send((False, "unparsable"))


class _Worker:
    """One spawned Math-Verify process; killed (and lazily replaced) when a call overruns."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="steplabel-math-verify")
        self._proc.start()
        child.close()
        if not self._conn.poll(_STARTUP_TIMEOUT_S) or self._conn.recv() != "ready":
            self.kill()
            raise RuntimeError("math-verify worker process failed to start")

    def call(self, gold: str, pred: str, timeout_s: float) -> tuple[bool, str] | None:
        """Result of the check, or None if it did not finish within ``timeout_s``."""
        self._conn.send((gold, pred))
        if self._conn.poll(timeout_s):
            return self._conn.recv()
        return None

    def kill(self) -> None:
        self._proc.kill()
        self._proc.join(5)
        self._conn.close()

    def stop(self) -> None:
        try:
            self._conn.send(None)
            self._proc.join(2)
        except OSError:
            pass
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()


# ---------------------------------------------------------------------------
# Grader
# ---------------------------------------------------------------------------


class Grader:
    """Thread-safe, memoised layered grader.

    String and numeric verdicts are computed in-process (microseconds); only
    the Math-Verify layer goes to the worker process, one request at a time.
    Verdicts, timeouts included, are cached per normalised (pred, gold) pair
    because rollout answers repeat heavily and a pathological pair must not
    cost ``timeout_s`` again.

    The worker uses the ``spawn`` start method (fork is unsafe once threads
    exist), so a script that grades at import time must sit behind
    ``if __name__ == "__main__":``, as with any spawn-based multiprocessing.
    """

    def __init__(self, timeout_s: float = 5.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self._cache: dict[tuple[str, str], Verdict] = {}
        self._cache_lock = threading.Lock()
        self._worker: _Worker | None = None
        self._worker_lock = threading.Lock()
        self._closed = False

    def grade(self, predicted: str | None, reference: str) -> Verdict:
        """Grade an extracted answer against an already-extracted reference answer."""
        if predicted is None or not predicted.strip():
            return Verdict(False, "no_answer")
        key = (normalize_answer(predicted), normalize_answer(reference))
        with self._cache_lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        verdict = self._grade_uncached(*key)
        with self._cache_lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = verdict
        return verdict

    def grade_response(self, response: str, reference: str) -> tuple[ExtractedAnswer | None, Verdict]:
        """Extract the final answer from a full response, then grade it."""
        extracted = extract_answer(response)
        return extracted, self.grade(extracted.value if extracted else None, reference)

    def _grade_uncached(self, pred: str, gold: str) -> Verdict:
        if not pred:
            return Verdict(False, "no_answer")
        if pred == gold:
            return Verdict(True, "string")
        pred_num, gold_num = _parse_number(pred), _parse_number(gold)
        if pred_num is not None and gold_num is not None:
            return Verdict(_numbers_agree(pred_num, gold_num), "numeric")
        correct, layer = self._run_math_verify(gold, pred)
        return Verdict(correct, layer)

    def _run_math_verify(self, gold: str, pred: str) -> tuple[bool, str]:
        with self._worker_lock:
            if self._closed:
                raise RuntimeError("Grader is closed")
            if self._worker is None:
                self._worker = _Worker()
            try:
                result = self._worker.call(gold, pred, self.timeout_s)
            except (EOFError, OSError):  # the worker died (e.g. killed for memory): could not grade
                result = (False, "unparsable")
            else:
                if result is not None:
                    return result
                result = (False, "timeout")
            self._worker.kill()
            self._worker = None
            return result

    def close(self) -> None:
        """Stop the worker process; the grader cannot run Math-Verify afterwards."""
        with self._worker_lock:
            self._closed = True
            if self._worker is not None:
                self._worker.stop()
                self._worker = None

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
