"""An LLM judge that names the first wrong step of a solution (the Qwen "Lessons" LLM-as-judge, arXiv
2501.07301 §4.2, with ProcessBench's critique protocol, arXiv 2412.06559).

Settings and the default prompt: :mod:`steplabel.checks.judge_config`. The judge needs no reference answer and
no grading, so it is a check (:func:`judge_run`: one prompt query, then the vote) rather than a rollout
labeler; :func:`judge_solutions` runs the checks of every solution through the wave driver, so they go
out in ONE ``engine.generate`` call, ``n = samples`` each, with the seed
``derive_seed(base_seed, solution_id, "judge")`` (sample ``i`` uses ``seed + i``, see
:mod:`steplabel.rollouts.engines.base`).

Parsing (:func:`parse_judgement`), decided here and tested in tests/test_judge.py:

1. If the text contains ``\\boxed{``, the LAST ``\\boxed{...}`` (balanced braces) is the answer and nothing
   else is looked at. Its content may be wrapped in ``$``, ``**``, ``\\text{}``/``\\textbf{}``/``\\mathbf{}``,
   may carry a trailing period, a sign (``+2``, ``-1``, Unicode minus) and a ``paragraph``/``step`` prefix
   (``\\boxed{paragraph 2}``, ``\\boxed{<paragraph_2>}``): these all name one index unambiguously. Anything
   else (``2.5``, ``none``, ``2, 3``, an empty box) is ``unparsable``. A last ``\\boxed{`` that never closes
   (output cut at ``max_tokens``) is ``unparsable`` too: an earlier box may be an intermediate result.
2. With no ``\\boxed{`` at all, an explicit conclusion is accepted, and the last one wins:
   ``final answer[ is][:] [paragraph] N`` or ``earliest error[ is/occurs][ in/at][:] [paragraph] N``
   (case-insensitive, markdown ``*`` ignored). A number followed by a decimal part (``3.5``) does not count.
3. Otherwise the output is ``unparsable``. Nothing is guessed from the analysis text (e.g. Qwen's
   ``<conclusion>Incorrect</conclusion>`` without an index is unparsable).
4. An integer outside ``[-1, n_steps - 1]`` is ``out_of_range``.

Voting (:func:`majority_vote`): plurality over the samples with a valid index (as ProcessBench's
``Counter.most_common``), but ties are broken deterministically toward the EARLIEST error: the smallest
index ``k >= 0`` wins, and -1 ("no error") loses every tie. A tie means at least as many samples found an
error as found none; for consensus filtering the stricter reading can only drop a sample, never accept a
solution with a contested error as clean. ``agreement`` = winning votes / all samples (unparsable and
out-of-range samples count in the denominator). If no sample has a valid index, ``first_error`` is None.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from steplabel.labelers.base import CheckRun
from steplabel.labelers.driver import WaveDriver
from steplabel.checks.judge_config import JudgeConfig
from steplabel.rollouts.engines.base import Engine, GenerationRequest, derive_seed

__all__ = [
    "JudgeConfig",
    "JudgeItem",
    "JudgeParse",
    "JudgeVerdict",
    "JudgeFailure",
    "tag_steps",
    "build_judge_prompt",
    "parse_judgement",
    "majority_vote",
    "judge_request",
    "judge_run",
    "judge_solutions",
]

ParseStatus = Literal["ok", "unparsable", "out_of_range"]


@dataclass(frozen=True)
class JudgeItem:
    """One solution to judge: no reference answer needed."""

    solution_id: str
    problem: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class JudgeParse:
    """What one judge sample concluded. ``first_error`` is set only when ``status == "ok"``."""

    first_error: int | None
    status: ParseStatus
    raw_index: str | None  # the text the index was read from (box content or matched number), None if none


@dataclass(frozen=True)
class JudgeVerdict:
    first_error: int | None  # voted index, -1 = all steps correct, None = no sample gave a valid index
    votes: dict[int, int]  # valid index -> number of samples
    unparsable: int  # samples without a valid index (unparsable + out_of_range)
    agreement: float  # winning votes / all samples
    rationale: str  # text of the first sample that voted for the winner (no winner: the first sample), truncated
    samples: int = 0
    tokens: int = 0
    parses: tuple[JudgeParse, ...] = field(default=(), repr=False)

    @property
    def out_of_range(self) -> int:
        return sum(p.status == "out_of_range" for p in self.parses)


@dataclass(frozen=True)
class JudgeFailure:
    """The judge request failed in the engine (after its retries); ``reason`` carries the engine's message."""

    reason: str


# ---------------------------------------------------------------- prompt


_PLACEHOLDER = re.compile(r"\{problem\}|\{tagged_steps\}")


def tag_steps(steps: Sequence[str]) -> str:
    """``<paragraph_0>\\nstep\\n</paragraph_0>`` blocks, 0-indexed, separated by a blank line."""
    return "\n\n".join(f"<paragraph_{i}>\n{step}\n</paragraph_{i}>" for i, step in enumerate(steps))


def build_judge_prompt(problem: str, steps: Sequence[str], template: str | None = None) -> str:
    """The judge prompt: ``{problem}`` and ``{tagged_steps}`` replaced in one pass (no str.format).

    One pass means a problem that itself contains the text ``{tagged_steps}`` is not substituted again.
    """
    template = JudgeConfig().template if template is None else template
    values = {"{problem}": problem, "{tagged_steps}": tag_steps(steps)}
    return _PLACEHOLDER.sub(lambda m: values[m.group(0)], template)


# ---------------------------------------------------------------- parsing

_BOX = "\\boxed{"
_WRAPPERS = re.compile(r"^\\(?:text|textbf|mathbf|mathrm|mbox)\{(.*)\}$", re.S)
_INDEX_IN_BOX = re.compile(r"^(?:(?:paragraph|step)\s*_?\s*|<paragraph_)?([+-]?\d+)>?$", re.I)
_NUMBER = r"(?:paragraph|step)?\s*_?\s*([+-]?\d+)(?!\d|[.,]\d)"
_CONCLUSION = re.compile(
    r"(?:final\s+answer(?:\s+is)?"
    r"|earliest\s+(?:error|erroneous\s+paragraph|incorrect\s+paragraph|wrong\s+paragraph)"
    r"(?:\s+index)?(?:\s+(?:is|occurs))?(?:\s+(?:in|at))?)"
    r"\s*[:=]?\s*" + _NUMBER,
    re.I,
)


def _last_box(text: str) -> tuple[bool, str | None]:
    """(found a ``\\boxed{``, content of the last one or None when it never closes)."""
    start = text.rfind(_BOX)
    if start < 0:
        return False, None
    depth, i = 1, start + len(_BOX)
    while i < len(text):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return True, text[start + len(_BOX) : i]
        i += 1
    return True, None


def _clean_box(content: str) -> str:
    s = content.replace("\u2212", "-").strip()
    while True:
        before = s
        s = s.strip().strip("$").strip()
        if s.startswith("**") and s.endswith("**") and len(s) >= 4:
            s = s[2:-2]
        m = _WRAPPERS.match(s)
        if m:
            s = m.group(1)
        s = s.strip()
        if s.endswith("."):
            s = s[:-1]
        if s == before:
            return s


def _classify(raw: str, value: int, n_steps: int) -> JudgeParse:
    if -1 <= value <= n_steps - 1:
        return JudgeParse(value, "ok", raw)
    return JudgeParse(None, "out_of_range", raw)


def parse_judgement(text: str, n_steps: int) -> JudgeParse:
    """The first-error index a judge output concludes, or why none could be read (see the module doc)."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    text = text or ""
    found, content = _last_box(text)
    if found:
        if content is None:
            return JudgeParse(None, "unparsable", None)
        raw = content.strip()
        m = _INDEX_IN_BOX.match(_clean_box(content))
        if not m:
            return JudgeParse(None, "unparsable", raw)
        return _classify(raw, int(m.group(1)), n_steps)
    matches = list(_CONCLUSION.finditer(text.replace("*", "").replace("\u2212", "-")))
    if not matches:
        return JudgeParse(None, "unparsable", None)
    number = matches[-1].group(1)
    return _classify(number, int(number), n_steps)


# ---------------------------------------------------------------- voting


def _tie_key(item: tuple[int, int]) -> tuple[int, float]:
    index, count = item
    return (-count, index if index >= 0 else float("inf"))


def majority_vote(
    parses: Sequence[JudgeParse], texts: Sequence[str] | None = None, max_rationale_chars: int = 4000
) -> JudgeVerdict:
    """Plurality over valid indices; ties go to the earliest error, -1 loses ties (see the module doc)."""
    if texts is not None and len(texts) != len(parses):
        raise ValueError(f"{len(parses)} parses but {len(texts)} texts")
    votes = Counter(p.first_error for p in parses if p.status == "ok" and p.first_error is not None)
    invalid = len(parses) - sum(votes.values())
    ordered = dict(sorted(votes.items()))
    if not votes:  # keep what came back, so an unparsable judgement can be read, not just counted
        raw = texts[0][:max_rationale_chars] if texts else ""
        return JudgeVerdict(None, ordered, invalid, 0.0, raw, samples=len(parses), parses=tuple(parses))
    winner, count = min(votes.items(), key=_tie_key)
    rationale = ""
    if texts is not None:
        rationale = next(t for p, t in zip(parses, texts, strict=True) if p.status == "ok" and p.first_error == winner)
        rationale = rationale[:max_rationale_chars]
    return JudgeVerdict(winner, ordered, invalid, count / len(parses), rationale, samples=len(parses), parses=tuple(parses))


# ---------------------------------------------------------------- engine


def judge_request(item: JudgeItem, config: JudgeConfig, base_seed: int) -> GenerationRequest:
    return GenerationRequest(
        prompt=build_judge_prompt(item.problem, item.steps, config.template),
        n=config.samples,
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        stop=tuple(config.stop),
        seed=derive_seed(base_seed, item.solution_id, "judge"),
    )


def judge_run(item: JudgeItem, config: JudgeConfig, base_seed: int) -> CheckRun:
    """Judge one solution: ``samples`` critiques in one query, then the vote. Returns a
    :class:`JudgeVerdict`, or :class:`JudgeFailure` when the engine failed the request."""
    [outcome] = yield [judge_request(item, config, base_seed)]
    if outcome.error:
        return JudgeFailure(f"engine error on the judge request: {outcome.error}")
    if not outcome.texts:
        return JudgeFailure("engine returned no completions for the judge request")
    parses = [parse_judgement(t, len(item.steps)) for t in outcome.texts]
    verdict = majority_vote(parses, outcome.texts, config.max_rationale_chars)
    return replace(verdict, samples=len(outcome.texts), tokens=outcome.tokens)


def judge_solutions(
    engine: Engine, items: Sequence[JudgeItem], config: JudgeConfig | None = None, base_seed: int = 0
) -> dict[str, JudgeVerdict | JudgeFailure]:
    """Judge every item in one wave of the driver (ONE ``engine.generate`` call); a failed request gives
    :class:`JudgeFailure`.

    A verdict whose ``first_error`` is None (no sample parsed) is still a verdict: its ``parses`` record
    what came back, and the caller decides (consensus drops it unless ``keep_unparsable``).
    """
    cfg = config or JudgeConfig()
    seen: set[str] = set()
    for item in items:
        if item.solution_id in seen:
            raise ValueError(f"duplicate solution_id {item.solution_id!r}")
        seen.add(item.solution_id)
        if not item.steps:
            raise ValueError(f"solution {item.solution_id!r} has no steps to judge")
    if not items:
        return {}
    done = WaveDriver(engine).run_checks({item.solution_id: judge_run(item, cfg, base_seed) for item in items})
    return {item.solution_id: done.labels[item.solution_id] for item in items}
