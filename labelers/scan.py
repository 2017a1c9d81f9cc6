"""SCAN: self-confidence, no rollouts for confident correct solutions, forward scan to the first zero.

Formulas, defaults and the SC estimate: :mod:`steplabel.labelers.scan_config`.

Per-problem self-confidence is shared through the labeler instance (one instance per shard run). SC is a
pass rate over every policy sample of the question: ``policy_samples`` (problem_id -> (correct, drawn),
from :func:`policy_pass_counts`) counts the pipeline's answerless, truncated and duplicate samples too;
without it, the graded final answers of the solutions being labelled are the samples. Every solution
first waits one wave (the driver's empty yield) so that all solutions of the shard have registered; then
the first solution of a problem that still needs samples issues one query with an empty prefix (the
policy's own samples from the question; a truncated or answerless sample counts as not correct) while
its siblings wait; if that solution is stopped (engine failure) a sibling takes over.

What comes back, as in SCAN's code:

* confident correct solutions: every step good, MC 1, no rollouts (``mc_total`` 0 but the last step);
* a question under the threshold with ``below_threshold: skip``: :class:`Dropped`
  (``self_confidence_below_threshold``), never a placeholder label;
* scanned solutions: ``mc_scores`` / ``mc_correct`` / ``mc_total`` are the scanned c_t, ``labels`` c_t > 0,
  ``soft_labels`` the tolerance-distance targets. A negative stops at its error step: its lists hold steps
  0..e only (the later steps carry no label). A wrong solution whose scan finds no c_t = 0 before its
  last step is :class:`Dropped` (``scan_no_zero_mc``: the annotator over-estimated, SCAN discards it); a
  one-step wrong solution is a negative at step 0 with no rollouts.

``extra`` (also of a dropped solution): ``self_confidence``, ``sc_samples``, ``confident`` and, when
labelled, ``scan_class`` (positive | negative).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence

from steplabel.labelers.base import Dropped, LabelerRun, RolloutQuery, SolutionTask, StepLabels
from steplabel.labelers.scan_config import ScanConfig
from steplabel.rollouts.sampling import SampledSolution, SampleReject


def tolerance_soft_labels(c: Sequence[float], error: int, n_steps: int, sc: float, d: int) -> list[float]:
    """SCAN targets for an n-step solution whose predicted first error is ``error`` (-1: none).

    ``c`` holds the MC values of the scanned steps 0..error. Steps e-d..e-1 get min(c_t / SC, 1)
    (1 when SC = 0 and c_t > 0), the error step 0, earlier steps 1, later steps 0.
    """
    if error < 0:
        return [1.0] * n_steps
    scores = [1.0] * error + [0.0] * (n_steps - error)
    for t in range(max(0, error - d), error):
        scores[t] = min(1.0, c[t] / sc) if sc > 0 else float(c[t] > 0)
    return scores


def balance(classes: Sequence[str], seed: int = 0) -> list[int]:
    """Indices kept after sampling positives and negatives down to the same count (SCAN process.py).

    ``classes`` are the ``extra["scan_class"]`` values; anything but positive / negative is dropped.
    """
    rng = random.Random(seed)
    pos = [i for i, c in enumerate(classes) if c == "positive"]
    neg = [i for i, c in enumerate(classes) if c == "negative"]
    n = min(len(pos), len(neg))
    return sorted(rng.sample(pos, n) + rng.sample(neg, n))


def policy_pass_counts(solutions: Sequence[SampledSolution],
                       rejects: Sequence[SampleReject]) -> dict[str, tuple[int, int]]:
    """problem_id -> (correct, drawn) over every policy sample: a kept solution counts its verdict, a
    duplicate the verdict of the kept sample it repeats, and an answerless, truncated, unsplittable or
    timed-out sample counts as drawn and not correct. A problem whose request failed drew nothing."""
    correct_ids = {s.solution_id for s in solutions if s.verdict.correct}
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in solutions:
        counts[s.problem.problem_id][0] += s.verdict.correct
        counts[s.problem.problem_id][1] += 1
    for r in rejects:
        if r.sample_index is None:  # the whole request failed: no sample was drawn
            continue
        counts[r.problem.problem_id][0] += r.reason == "duplicate_solution" and r.solution_id in correct_ids
        counts[r.problem.problem_id][1] += 1
    return {pid: (c, n) for pid, (c, n) in counts.items()}


class ScanLabeler:
    name = "scan"
    shares_problem_state = True  # self-confidence per problem

    def __init__(self, config: ScanConfig, policy_samples: Mapping[str, tuple[int, int]] | None = None) -> None:
        """``policy_samples``: problem_id -> (correct, drawn) of every policy sample (:func:`policy_pass_counts`)."""
        self.config = config
        self._policy = dict(policy_samples or {})
        self._answers: dict[str, list[bool]] = {}  # problem_id -> graded final answers of its solutions
        self._sc: dict[str, tuple[float, int]] = {}  # problem_id -> (SC, samples behind it)
        self._issuer: dict[str, str] = {}  # problem_id -> solution_id whose top-up query is in flight

    def self_confidence(self, problem_id: str) -> float | None:
        known = self._sc.get(problem_id)
        return known[0] if known else None

    def label(self, task: SolutionTask) -> LabelerRun:
        config = self.config
        pid = task.problem_id
        rollouts = tokens = 0
        if config.sc_from_solutions and pid not in self._sc:
            self._answers.setdefault(pid, []).append(task.final_correct)
        yield []  # barrier: every solution of the shard has registered its final answer
        while pid not in self._sc:
            if pid in self._issuer:
                yield []  # a sibling's query is in flight
                continue
            seen_correct, seen = 0, 0
            if config.sc_from_solutions:
                answers = self._answers.get(pid, [])
                seen_correct, seen = self._policy.get(pid, (sum(answers), len(answers)))
            need = config.sc_samples - seen
            if need <= 0:
                self._sc[pid] = (seen_correct / seen, seen)
                break
            self._issuer[pid] = task.solution_id
            try:
                outcomes = yield [RolloutQuery(steps=(), k=need)]
            except GeneratorExit:
                del self._issuer[pid]  # stopped (engine failure): a sibling takes over
                raise
            del self._issuer[pid]
            rollouts += outcomes[0].total
            tokens += outcomes[0].tokens
            total = seen + outcomes[0].total
            self._sc[pid] = ((seen_correct + outcomes[0].correct) / total if total else 0.0, total)

        sc, sc_n = self._sc[pid]
        confident = sc >= config.confidence_threshold
        n = len(task.steps)
        extra: dict[str, object] = {"self_confidence": sc, "sc_samples": sc_n, "confident": confident}

        if task.final_correct and confident:
            labels = StepLabels(
                labels=[True] * n, mc_scores=[1.0] * n, mc_correct=[0] * (n - 1) + [1], mc_total=[0] * (n - 1) + [1],
                soft_labels=[1.0] * n, first_error=-1,
            )
        elif not confident and config.below_threshold == "skip":
            return Dropped("self_confidence_below_threshold", rollouts, tokens, extra)
        else:
            correct: list[int] = []
            total: list[int] = []
            for t in range(n - 1):
                outcomes = yield [RolloutQuery(steps=task.steps[: t + 1], k=config.k)]
                rollouts += outcomes[0].total
                tokens += outcomes[0].tokens
                correct.append(outcomes[0].correct)
                total.append(outcomes[0].total)
                if outcomes[0].correct == 0:
                    break
            else:  # no zero before the last step: the last step is its own graded final answer
                if not task.final_correct and n > 1:  # over-estimated: SCAN discards it
                    return Dropped("scan_no_zero_mc", rollouts, tokens, extra)
                correct.append(int(task.final_correct))
                total.append(1)
            error = next((t for t, c in enumerate(correct) if c == 0), -1)
            mc = [c / m for c, m in zip(correct, total, strict=True)]  # steps 0..e for a negative
            labels = StepLabels(
                labels=[error == -1 or t < error for t in range(len(mc))],
                mc_scores=mc,
                mc_correct=correct,
                mc_total=total,
                soft_labels=tolerance_soft_labels(mc, error, len(mc), sc, config.tolerance),
                first_error=error,
            )
        extra["scan_class"] = "positive" if labels.first_error == -1 else "negative"
        labels.rollouts_used = rollouts
        labels.tokens_generated = tokens
        labels.extra = extra
        return labels
