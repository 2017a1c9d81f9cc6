"""What every labeler speaks: rollout queries out, rollout outcomes in, step labels at the end.

A labeler is a generator (docs/labelers.md). It yields a list of :class:`RolloutQuery` (prefixes to
continue, k samples each), receives the matching list of :class:`RolloutOutcome`, and finally returns
:class:`StepLabels`. The wave driver advances many of them together, so one engine call serves every
solution of a shard; the same labeler runs unchanged on a scripted engine, a CPU model or vLLM.

The model-based checks (the judge, the code verifier) are generators of the same kind that yield
:class:`~steplabel.rollouts.engines.base.GenerationRequest` (a complete prompt, sent as is, not graded) and receive
:class:`TextOutcome`, so
the same driver batches them across a shard.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from steplabel.rollouts.engines.base import GenerationRequest


@dataclass(frozen=True)
class SolutionTask:
    """A sampled solution cut into steps, with its graded final answer."""

    solution_id: str
    problem_id: str
    question: str
    reference: str
    steps: tuple[str, ...]
    final_correct: bool


@dataclass(frozen=True)
class RolloutQuery:
    """Continue ``question + steps`` ``k`` times and grade the final answers."""

    steps: tuple[str, ...]
    k: int


@dataclass(frozen=True)
class RolloutOutcome:
    """The graded samples of one query. A sample cut off by ``max_tokens`` (``truncated_flags``) has no final
    answer: it counts in ``total`` but is never correct, and it is not a wrong answer worth searching."""

    correct: int
    total: int
    tokens: int
    texts: tuple[str, ...] = ()
    correct_flags: tuple[bool, ...] = ()
    truncated_flags: tuple[bool, ...] = ()

    @property
    def mc(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass(frozen=True)
class TextOutcome:
    """What came back for a check's request. An engine error is handed to the check (which decides
    what it means, e.g. a step left unknown), not turned into a failure of the whole run."""

    texts: tuple[str, ...] = ()
    tokens: int = 0
    error: str | None = None


@dataclass
class StepLabels:
    """Per-step labels of one solution plus what they cost. Lists have one entry per labelled step: every
    step, except for SCAN negatives, which stop at the first error (the later steps carry no label)."""

    labels: list[bool]
    mc_scores: list[float]
    mc_correct: list[int]
    mc_total: list[int]
    soft_labels: list[float]
    first_error: int  # 0-based index of the first bad step, -1 when every step is good
    rollouts_used: int = 0
    tokens_generated: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_outcomes(
        cls,
        per_step: list[RolloutOutcome],
        labels: list[bool],
        soft_labels: list[float],
        spent: list[RolloutOutcome],
        extra: dict[str, object] | None = None,
    ) -> StepLabels:
        """Labels over one outcome per step; ``spent``: every outcome the labeler paid for (its cost)."""
        return cls(
            labels=labels,
            mc_scores=[o.mc for o in per_step],
            mc_correct=[o.correct for o in per_step],
            mc_total=[o.total for o in per_step],
            soft_labels=soft_labels,
            first_error=first_false(labels),
            rollouts_used=sum(o.total for o in spent),
            tokens_generated=sum(o.tokens for o in spent),
            extra=extra or {},
        )

    def __post_init__(self) -> None:
        sizes = {len(self.labels), len(self.mc_scores), len(self.mc_correct), len(self.mc_total), len(self.soft_labels)}
        if len(sizes) != 1:
            raise ValueError(f"step label lists differ in length: {sorted(sizes)}")


@dataclass
class Dropped:
    """A solution the labeler refused to label, and why: it goes to the rejects table, never into scores.

    Reasons: ``self_confidence_below_threshold`` (SCAN question under the SC threshold),
    ``scan_no_zero_mc`` (SCAN: a wrong solution whose scan found no prefix with MC = 0),
    ``question_filter_all_right_or_all_wrong`` (OmegaPRM tree mode's question filter),
    ``question_search_limit`` / ``question_rollout_budget`` (OmegaPRM tree mode: the question's budget was
    spent before this wrong solution's own search could start).
    """

    reason: str
    rollouts_used: int = 0
    tokens_generated: int = 0
    extra: dict[str, object] = field(default_factory=dict)


LabelerRun = Generator[list[RolloutQuery], list[RolloutOutcome], StepLabels | Dropped]
CheckRun = Generator[list[GenerationRequest], list[TextOutcome], Any]
"""A model-based check: yields engine requests, returns its verdict (a judge verdict, code verdicts...)."""


class Labeler(Protocol):
    """``shares_problem_state``: solutions of one problem read each other's state (a shared tree, SCAN's
    self-confidence), so a continuous driver advances them in lockstep rounds to keep labels independent
    of timing; False lets every solution run at its own pace. A labeler that does not say is taken as
    sharing."""

    name: str
    shares_problem_state: bool

    def label(self, task: SolutionTask) -> LabelerRun: ...


def first_false(labels: list[bool]) -> int:
    """ProcessBench convention: index of the earliest bad step, -1 when there is none."""
    return next((i for i, good in enumerate(labels) if not good), -1)
