"""SCAN: self-confidence, no rollouts for confident correct solutions, forward scan to the first zero.

Formulas, defaults and the SC estimate: :mod:`steplabel.labelers.scan_config`.

Per-problem self-confidence is shared through the labeler instance (one instance per shard run). Every
solution first waits one wave (the driver's empty yield) so that all solutions of the shard have
registered their graded final answers; then the first solution of a problem that still needs samples
issues one query with an empty prefix (the policy's own samples from the question) while its siblings
wait; if that solution is stopped (engine failure) a sibling takes over.

Per-step outputs: ``mc_scores`` / ``mc_correct`` / ``mc_total`` are the scanned c_t (the last step: its own
graded final answer); steps not rolled out have ``mc_total`` 0 (steps after the error: MC 0, label bad;
confident correct solutions: MC 1, label good). ``labels`` are c_t > 0 up to the error; ``soft_labels``
are the tolerance-distance targets. ``extra``: ``self_confidence``, ``sc_samples``, ``confident``,
``scan_class`` (positive | negative | filtered) and, when skipped, ``filtered``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from steplabel.labelers.base import LabelerRun, RolloutQuery, SolutionTask, StepLabels
from steplabel.labelers.scan_config import ScanConfig


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


class ScanLabeler:
    name = "scan"

    def __init__(self, config: ScanConfig) -> None:
        self.config = config
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
            seen = self._answers.get(pid, []) if config.sc_from_solutions else []
            need = config.sc_samples - len(seen)
            if need <= 0:
                self._sc[pid] = (sum(seen) / len(seen), len(seen))
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
            total = len(seen) + outcomes[0].total
            self._sc[pid] = ((sum(seen) + outcomes[0].correct) / total if total else 0.0, total)

        sc, sc_n = self._sc[pid]
        confident = sc >= config.confidence_threshold
        n = len(task.steps)
        extra: dict[str, object] = {"self_confidence": sc, "sc_samples": sc_n, "confident": confident}

        if task.final_correct and confident:
            labels = StepLabels(
                labels=[True] * n, mc_scores=[1.0] * n, mc_correct=[0] * (n - 1) + [1], mc_total=[0] * (n - 1) + [1],
                soft_labels=[1.0] * n, first_error=-1,
            )
            extra["scan_class"] = "positive"
        elif not confident and config.below_threshold == "skip":
            good = task.final_correct
            labels = StepLabels(
                labels=[good] * n, mc_scores=[float(good)] * n, mc_correct=[0] * (n - 1) + [int(good)],
                mc_total=[0] * (n - 1) + [1], soft_labels=[float(good)] * n, first_error=-1 if good else 0,
            )
            extra.update(scan_class="filtered", filtered="self_confidence_below_threshold")
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
                correct.append(int(task.final_correct))
                total.append(1)
            error = next((t for t, c in enumerate(correct) if c == 0), -1)
            mc = [c / m for c, m in zip(correct, total, strict=True)]
            pad = n - len(mc)
            labels = StepLabels(
                labels=[error == -1 or t < error for t in range(n)],
                mc_scores=mc + [0.0] * pad,
                mc_correct=correct + [0] * pad,
                mc_total=total + [0] * pad,
                soft_labels=tolerance_soft_labels(mc, error, n, sc, config.tolerance),
                first_error=error,
            )
            extra["scan_class"] = "positive" if error == -1 else "negative"
        labels.rollouts_used = rollouts
        labels.tokens_generated = tokens
        labels.extra = extra
        return labels
