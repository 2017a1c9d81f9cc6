"""GenPRM relative progress estimation (RPE) labels: formulas in :mod:`steplabel.labelers.rpe_config`.

One wave per solution: k rollouts from the question (MC(s_1), the base of step 1's ratio) and from every
proper step prefix; the last step is its own graded final answer. ``extra["relative_progress"]`` holds
the raw ratios P_t (None where MC(s_t) = 0).
"""

from __future__ import annotations

from collections.abc import Sequence

from steplabel.labelers.base import (
    LabelerRun,
    RolloutOutcome,
    RolloutQuery,
    SolutionTask,
    StepLabels,
)
from steplabel.labelers.rpe_config import RPEConfig


def relative_progress(base_mc: float, mc: Sequence[float]) -> list[float | None]:
    """P_t = MC(s_{t+1}) / MC(s_t), MC(s_0) = base_mc; None where the denominator is 0 (after the first
    error), except step 1 from a question with MC 0, which counts as progress when MC(s_1) > 0.

    ``mc`` must already have every value after the first zero set to 0 (:func:`zero_after_first_error`).
    """
    before = [base_mc, *mc[:-1]]
    ratios: list[float | None] = [after / prev if prev > 0 else None for prev, after in zip(before, mc, strict=True)]
    if mc and base_mc == 0 and mc[0] > 0:
        ratios[0] = 1.0  # the question looked hopeless to the samples, yet step 1 can succeed: progress
    return ratios


def zero_after_first_error(mc: Sequence[float]) -> list[float]:
    out, seen_zero = [], False
    for value in mc:
        seen_zero = seen_zero or value == 0
        out.append(0.0 if seen_zero else value)
    return out


def rpe_labels(base_mc: float, mc: Sequence[float], threshold: float) -> tuple[list[bool], list[float], list[float | None]]:
    """(labels, soft labels, raw ratios) for per-step MC values and the question's MC.

    Each step is labelled by its own ratio (GenPRM Eq. 11): a step after a failing ratio is good again when
    its own ratio passes and MC is still above 0; only after the first MC = 0 is every label bad. The first
    error (ProcessBench) is the first failing ratio. Such non-monotone labels never match a judge's
    (good before its index, bad from it on), so the GenPRM consensus filter drops those solutions
    (:func:`steplabel.checks.consensus.consensus`, ``mode: genprm``).
    """
    ratios = relative_progress(base_mc, zero_after_first_error(mc))
    labels = [p is not None and p >= threshold for p in ratios]
    soft = [min(p, 1.0) if p is not None else 0.0 for p in ratios]
    return labels, soft, ratios


class RPELabeler:
    name = "rpe"
    shares_problem_state = False

    def __init__(self, config: RPEConfig) -> None:
        self.config = config

    def label(self, task: SolutionTask) -> LabelerRun:
        k = self.config.k
        prefixes = [task.steps[:t] for t in range(0, len(task.steps))]  # () = the question itself
        outcomes: list[RolloutOutcome] = yield [RolloutQuery(steps=p, k=k) for p in prefixes]
        base, per_prefix = outcomes[0], outcomes[1:]
        final = RolloutOutcome(correct=int(task.final_correct), total=1, tokens=0)
        per_step = [*per_prefix, final]
        mc = [o.mc for o in per_step]
        labels, soft, ratios = rpe_labels(base.mc, mc, self.config.threshold)
        return StepLabels.from_outcomes(
            per_step, labels, soft, spent=outcomes, extra={"relative_progress": ratios, "question_mc": base.mc}
        )
