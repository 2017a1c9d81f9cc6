"""Layered answer grading that records which layer decided.

Math-Verify is the judge; the layers around it only add what it misses and never
overrule it wrongly.  Layers, in order:

``no_answer``   nothing was extracted -> wrong.
``string``      normalised strings are equal -> right (formatting-only differences).
``numeric``     both sides are plain numbers -> they decide (exact for two integers /
                fractions, relative tolerance 1e-4 once a decimal is involved; a ``%``
                may be read or ignored, Qwen-style).  Math-Verify compares the same two
                numbers with less precision (6 decimals, 15 digits), so a "wrong" here is
                one it could only contradict by rounding ("1e-4", 21-digit integers).
``equations``   a side is a tuple equation ``(a, b) = (1, 2)``: Math-Verify reads the right
                side as an interval and both misses ``a = 1, b = 2`` and accepts ``a = 2, b = 1``,
                so it judges the system ``a = 1, b = 2`` instead.
``math_verify`` Math-Verify ``verify(parse(gold), parse(pred))`` on the raw answers (gold
                first; the check is asymmetric on purpose), guarded against its tiny-value
                false positives (Math-Verify issue #14).
``interval``    Math-Verify said no, but the gold is an interval / union and the prediction
                an inequality in one variable describing the same set (or the reverse).
``family``      Math-Verify said no, but both are integer-parameter families (``k\\pi``,
                ``\\frac{\\pi}{2}+n\\pi, n \\in \\mathbb{Z}``) describing the same set of values.
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

from pydantic import Field

from steplabel.rollouts.answers import ExtractedAnswer, extract_answer
from steplabel.storage.strict import StrictConfig

LAYERS: tuple[str, ...] = (
    "no_answer", "string", "numeric", "equations", "math_verify", "interval", "family", "timeout", "unparsable",
)
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
    try:  # int() refuses literals over sys.get_int_max_str_digits() (4,300): such an answer is not a plain number
        if m.group("num") is not None:
            text = m.group("num")
            return _Number(Fraction(text), approx=not text.lstrip("+-").isdigit(), percent=pct)
        if m.group("a") is not None:
            value = Fraction(int(m.group("a")), int(m.group("b")))
        else:
            value = Fraction(int(m.group("fa")), int(m.group("fb")))
            value = -value if m.group("sign") else value
    except (ZeroDivisionError, ValueError):
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
    s = _SQRT_PARENS.sub(r"\\sqrt{\1}", s.strip())  # Math-Verify #41 drops \sqrt(2)
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


def _parse(s: str) -> list[Any]:
    """Math-Verify parse with its signal timeout off (we time the whole worker call instead)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    parsed = parse(_latex_for_parse(s), extraction_config=configs, parsing_timeout=None)
    return parsed or parse(s, extraction_config=configs, parsing_timeout=None)


def _verify(gold: list[Any], pred: list[Any]) -> bool:
    from math_verify import verify

    return bool(gold and pred and verify(gold, pred, timeout_seconds=None))


# -- rescue layers: only ever turn Math-Verify's "no" into "yes", each on one narrow shape --

_INTERVAL_MARKS = ("[", "]", "\\infty", "\\cup", "<", ">", "\\le", "\\ge")


def _as_set(value: Any) -> Any:
    """A sympy Set for an interval/union or a one-variable (in)equality chain; None otherwise."""
    import sympy

    if isinstance(value, (sympy.FiniteSet, set)) and value and all(isinstance(v, sympy.Rel) for v in value):
        value = sympy.Or(*value)  # "x \\le -1 \\text{ or } x \\ge 2" parses as a set of relations
    if isinstance(value, sympy.Set):
        return value
    if isinstance(value, sympy.Eq) and isinstance(value.rhs, sympy.Set):  # "x \\in [2, 5)"
        return value.rhs
    if isinstance(value, (sympy.Rel, sympy.And, sympy.Or)) and len(value.free_symbols) == 1:
        try:
            return value.as_set()
        except (NotImplementedError, TypeError, ValueError):
            return None
    return None


def _same_interval(gold: str, pred: str, gold_parsed: list[Any], pred_parsed: list[Any]) -> bool:
    """Interval/union vs an inequality describing the same set of reals (Math-Verify accepts only one order)."""
    import sympy

    if not all(any(mark in side for mark in _INTERVAL_MARKS) for side in (gold, pred)):
        return False  # "(2, 3)" alone may be a point; only rescue sides written as intervals/inequalities
    g, p = _as_set(gold_parsed[0]), _as_set(pred_parsed[0])
    if g is None or p is None or isinstance(g, sympy.FiniteSet) or isinstance(p, sympy.FiniteSet):
        return False
    g, p = g.doit(), p.doit()  # latex2sympy keeps products like (5*pi**2)/4 unevaluated
    return bool(g == p or g.symmetric_difference(p) == sympy.S.EmptySet)


_INTEGER_QUALIFIER = re.compile(
    r"[,;]?\s*(?:\\(?:text|mathrm)\s*\{\s*(?:for|where)\s*(?:all|any|some)?\s*\}|\\quad|\\,|\\;|\s)*"
    r"\(?\s*[kmn]\s*\\in\s*\\mathbb\s*\{?\s*Z\s*\}?\s*\)?"
    r"|[,;]?\s*\\text\s*\{\s*(?:for|where)\s+(?:any|all|some|an?)?\s*(?:integers?\s*)?\}?\s*[kmn]?\s*"
    r"(?:\\text\s*\{)?\s*(?:is\s+an?\s+)?(?:integers?)?\s*\}?\s*$"
)
_PARAMS = ("k", "n", "m")


def _families(s: str) -> list[tuple[Any, Any]] | None:
    """``a + p k`` families (offset a, step p) with k an integer parameter, or None if ``s`` is not that."""
    import sympy

    cleaned = _INTEGER_QUALIFIER.sub("", s).strip().rstrip(",")
    parsed = _parse(cleaned)
    if not parsed:
        return None
    value = parsed[0]
    items = list(value) if isinstance(value, (sympy.FiniteSet, set, tuple, list)) else [value]
    out = []
    for item in items:
        if isinstance(item, sympy.Eq):
            item = item.rhs
        if not isinstance(item, sympy.Expr):
            return None
        params = [sym for sym in item.free_symbols if sym.name in _PARAMS]
        if len(params) != 1 or len(item.free_symbols) != 1:
            return None
        step = sympy.diff(item, params[0])
        if step.free_symbols or step == 0:
            return None  # not linear in the parameter
        out.append((sympy.nsimplify(item.subs(params[0], 0)), step))
    return out


def _same_family(gold: str, pred: str, gold_parsed: list[Any], pred_parsed: list[Any]) -> bool:
    """``a + pk`` and ``b + qk`` (k integer) are the same set iff |p| = |q| and (a - b)/p is an integer."""
    import sympy

    g, p = _families(gold), _families(pred)
    if not g or not p:
        return False

    def same(x: tuple[Any, Any], y: tuple[Any, Any]) -> bool:
        ratio = sympy.simplify(x[1] / y[1])
        shift = sympy.simplify((x[0] - y[0]) / x[1])
        return bool(ratio in (1, -1) and shift.is_integer)

    return all(any(same(x, y) for y in p) for x in g) and all(any(same(y, x) for x in g) for y in p)


def _split_top(s: str) -> list[str]:
    """Split on commas outside brackets: "f(x), g(x)" -> ["f(x)", "g(x)"]."""
    parts, depth, current = [], 0, []
    for ch in s:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return parts


_TUPLE_EQUATION = re.compile(r"^\s*(?:\\left)?\((?P<lhs>.+)(?:\\right)?\)\s*=\s*(?:\\left)?\((?P<rhs>.+)(?:\\right)?\)\s*$")


def _unpack_tuple_equation(s: str) -> str:
    """``(a, b) = (1, 2)`` -> ``a = 1, b = 2``; anything else unchanged."""
    m = _TUPLE_EQUATION.match(s)
    if not m:
        return s
    lhs, rhs = _split_top(m.group("lhs")), _split_top(m.group("rhs"))
    if len(lhs) < 2 or len(lhs) != len(rhs):
        return s
    return ", ".join(f"{a} = {b}" for a, b in zip(lhs, rhs))


_RESCUES = (("interval", _same_interval), ("family", _same_family))


def _math_verify(gold: str, pred: str) -> tuple[bool, str]:
    """Math-Verify (gold first) with the #14 guard, then the rescue layers for its known misses."""
    unpacked = _unpack_tuple_equation(gold), _unpack_tuple_equation(pred)
    if unpacked != (gold, pred):
        return _verify(_parse(unpacked[0]), _parse(unpacked[1])), "equations"
    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False, "unparsable"
    if _verify(gold_parsed, pred_parsed):
        distinct = "%" not in gold + pred and _numerically_distinct(gold_parsed[0], pred_parsed[0])
        return not distinct, "math_verify"
    for layer, rescue in _RESCUES:
        try:
            if rescue(gold, pred, gold_parsed, pred_parsed):
                return True, layer
        except Exception:  # noqa: BLE001 - sympy cannot decide this shape: the rescue does not apply
            continue
    return False, "math_verify"


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


class GradingConfig(StrictConfig):
    """The run's ``grading:`` section. ``timeout_s`` can change a verdict, so it is part of the config hash."""

    timeout_s: float = Field(5.0, gt=0)


class Grader:
    """Thread-safe, memoised layered grader.

    String and numeric verdicts are computed in-process (microseconds); only
    the Math-Verify layer goes to the worker process, one request at a time.
    Verdicts, timeouts included, are cached per (pred, gold) pair as written
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
        key = (predicted.strip(), reference.strip())
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
        """Normalised forms decide only the cheap layers; Math-Verify sees the answers as written."""
        norm_pred, norm_gold = normalize_answer(pred), normalize_answer(gold)
        if not norm_pred:
            return Verdict(False, "no_answer")
        if norm_pred == norm_gold:
            return Verdict(True, "string")
        pred_num, gold_num = _parse_number(norm_pred), _parse_number(norm_gold)
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
