"""Consensus filtering: keep a labelled solution only when an LLM judge agrees with its MC labels.

Rules and defaults: :mod:`steplabel.checks.consensus_config`. :func:`consensus` decides one solution from its MC
first error, the judge's first error (:mod:`steplabel.checks.judge`; None when the judge output was unparsable)
and its step labels; :func:`retention` is the kept fraction (the Qwen paper reports about 40%).

Per the Qwen paper the kept solutions are trained on their HARD labels, with the steps after the first
error removed; ``truncate_after_error`` returns the labels cut after the first bad step (the first False of
the given labels), otherwise the labels come back whole. A dropped solution carries no labels and a reason:

* ``judge_unparsable`` - the judge gave no valid index (kept only with ``keep_unparsable``, labels as given);
* ``consensus_disagree: mc=2 judge=4`` - first_error mode;
* ``consensus_disagree: steps 1,3 differ (judge=1)`` - genprm mode, the 0-based steps whose labels differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from steplabel.labelers.base import first_false
from steplabel.checks.consensus_config import ConsensusConfig

__all__ = ["ConsensusConfig", "ConsensusDecision", "judge_labels_from_first_error", "consensus", "retention"]


@dataclass(frozen=True)
class ConsensusDecision:
    keep: bool
    reason: str | None  # None when kept by agreement
    labels: list[bool] | None = None  # the labels to train on when kept (cut if truncate_after_error)


def judge_labels_from_first_error(first_error: int, n_steps: int) -> list[bool]:
    """Steps before the judge's first error good, that step and all later ones bad; -1 -> all good."""
    _check_index("judge first error", first_error, n_steps)
    if first_error == -1:
        return [True] * n_steps
    return [i < first_error for i in range(n_steps)]


def _check_index(what: str, index: int, n_steps: int) -> None:
    if isinstance(index, bool) or not isinstance(index, int) or not -1 <= index <= n_steps - 1:
        raise ValueError(f"{what} must be an integer in [-1, {n_steps - 1}], got {index!r}")


def _kept(labels: Sequence[bool], config: ConsensusConfig, reason: str | None = None) -> ConsensusDecision:
    kept = list(labels)
    if config.truncate_after_error:
        first = first_false(kept)
        if first != -1:
            kept = kept[: first + 1]
    return ConsensusDecision(True, reason, kept)


def consensus(
    mc_first_error: int,
    judge_first_error: int | None,
    labels: Sequence[bool],
    config: ConsensusConfig | None = None,
) -> ConsensusDecision:
    """Keep or drop one solution. ``labels``: its per-step labels (True = good), one per step.

    first_error mode compares ``mc_first_error`` with ``judge_first_error`` (-1 only agrees with -1);
    genprm mode compares ``labels`` with :func:`judge_labels_from_first_error` step by step. The judge's
    labels are bad from its index on, while RPE labels each step by its own ratio and may turn good again
    after a failing one (:func:`steplabel.labelers.rpe.rpe_labels`): such a solution always differs from
    the judge on the recovered steps and is dropped, as GenPRM drops any solution with a differing label.
    """
    cfg = config or ConsensusConfig()
    n_steps = len(labels)
    if n_steps == 0:
        raise ValueError("a solution needs at least one step label")
    _check_index("mc first error", mc_first_error, n_steps)
    if judge_first_error is None:
        if cfg.keep_unparsable:
            return _kept(labels, cfg, "judge_unparsable")
        return ConsensusDecision(False, "judge_unparsable")
    _check_index("judge first error", judge_first_error, n_steps)
    if cfg.mode == "first_error":
        if mc_first_error == -1 or judge_first_error == -1:
            agree = mc_first_error == judge_first_error
        else:
            agree = abs(judge_first_error - mc_first_error) <= cfg.tolerance
        if agree:
            return _kept(labels, cfg)
        return ConsensusDecision(False, f"consensus_disagree: mc={mc_first_error} judge={judge_first_error}")
    judged = judge_labels_from_first_error(judge_first_error, n_steps)
    differ = [i for i, (a, b) in enumerate(zip(labels, judged, strict=True)) if bool(a) != b]
    if not differ:
        return _kept(labels, cfg)
    steps = ",".join(str(i) for i in differ)
    return ConsensusDecision(False, f"consensus_disagree: steps {steps} differ (judge={judge_first_error})")


def retention(decisions: Sequence[ConsensusDecision]) -> float:
    """Kept / all; NaN for no decisions (as the benchmark metrics do for an empty subset)."""
    if not decisions:
        return math.nan
    return sum(d.keep for d in decisions) / len(decisions)
