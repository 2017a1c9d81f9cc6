"""Math-Shepherd MC labelling: k rollouts from every step prefix, one wave per solution.

Formulas and defaults: :mod:`steplabel.labelers.math_shepherd_config`. Every step is labelled, including steps
after the first error, as in the public Math-Shepherd data.
"""

from __future__ import annotations

from steplabel.labelers.base import (
    LabelerRun,
    RolloutOutcome,
    RolloutQuery,
    SolutionTask,
    StepLabels,
)
from steplabel.labelers.math_shepherd_config import MathShepherdConfig


class MathShepherdLabeler:
    name = "math_shepherd"
    shares_problem_state = False

    def __init__(self, config: MathShepherdConfig) -> None:
        self.config = config

    def label(self, task: SolutionTask) -> LabelerRun:
        k = self.config.k
        n_steps = len(task.steps)
        queries = [task.steps[:t] for t in range(1, n_steps)]
        outcomes: list[RolloutOutcome] = []
        if queries:
            outcomes = yield [RolloutQuery(steps=prefix, k=k) for prefix in queries]
        # The last step carries the final answer itself: graded once, no rollouts.
        final = RolloutOutcome(correct=int(task.final_correct), total=1, tokens=0)
        per_step = [*outcomes, final]
        mc = [o.mc for o in per_step]
        if self.config.label_mode == "hard":
            labels = [o.correct > 0 for o in per_step]
            soft = [float(good) for good in labels]
        else:
            labels = [value >= self.config.soft_threshold for value in mc]
            soft = mc
        return StepLabels.from_outcomes(per_step, labels, soft, spent=outcomes)
