"""Consensus filtering between MC labels and the judge: known decisions, GenPRM mode, retention."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from steplabel.checks.consensus import (
    ConsensusDecision,
    consensus,
    judge_labels_from_first_error,
    retention,
)
from steplabel.checks.consensus_config import ConsensusConfig
from steplabel.labelers.base import first_false
from steplabel.labelers.rpe import rpe_labels

G, B = True, False


def labels_for(first_error: int, n: int = 5) -> list[bool]:
    return [first_error == -1 or i < first_error for i in range(n)]


EXACT = ConsensusConfig()
TOL1 = ConsensusConfig(tolerance=1)
TOL9 = ConsensusConfig(tolerance=9)


@pytest.mark.parametrize(("mc", "judge", "config", "keep", "reason"), [
    (2, 2, EXACT, True, None),
    (-1, -1, EXACT, True, None),
    (2, 4, EXACT, False, "consensus_disagree: mc=2 judge=4"),
    (2, 3, EXACT, False, "consensus_disagree: mc=2 judge=3"),
    (2, 3, TOL1, True, None),
    (3, 2, TOL1, True, None),
    (2, 4, TOL1, False, "consensus_disagree: mc=2 judge=4"),
    (0, -1, TOL1, False, "consensus_disagree: mc=0 judge=-1"),  # -1 vs 0 differ by 1 but never agree
    (-1, 0, TOL9, False, "consensus_disagree: mc=-1 judge=0"),
    (-1, 4, TOL9, False, "consensus_disagree: mc=-1 judge=4"),
    (0, 4, TOL9, True, None),
    (2, None, EXACT, False, "judge_unparsable"),
    (-1, None, TOL9, False, "judge_unparsable"),
])
def test_first_error_mode_table(mc, judge, config, keep, reason):
    decision = consensus(mc, judge, labels_for(mc), config)
    assert (decision.keep, decision.reason) == (keep, reason)
    assert decision.labels == (labels_for(mc) if keep else None)


def test_keep_unparsable_and_truncation():
    labels = [G, B, G, B]  # Math-Shepherd style: steps after the first error keep their own labels
    d = consensus(1, None, labels, ConsensusConfig(keep_unparsable=True))
    assert d == ConsensusDecision(True, "judge_unparsable", [G, B, G, B])
    assert consensus(1, 1, labels, ConsensusConfig(truncate_after_error=True)).labels == [G, B]
    assert consensus(-1, -1, [G, G], ConsensusConfig(truncate_after_error=True)).labels == [G, G]
    assert consensus(1, 1, labels).labels == labels


def test_judge_labels_from_first_error():
    assert judge_labels_from_first_error(-1, 3) == [G, G, G]
    assert judge_labels_from_first_error(0, 3) == [B, B, B]
    assert judge_labels_from_first_error(1, 3) == [G, B, B]
    with pytest.raises(ValueError):
        judge_labels_from_first_error(3, 3)


GENPRM = ConsensusConfig(mode="genprm")


@pytest.mark.parametrize(("labels", "judge", "keep", "reason"), [
    ([G, G, B, B], 2, True, None),
    ([G, G, G, G], -1, True, None),
    ([B, B, B, B], 0, True, None),
    ([G, G, B, G], 2, False, "consensus_disagree: steps 3 differ (judge=2)"),  # a good step after the error
    ([G, B, B, B], 2, False, "consensus_disagree: steps 1 differ (judge=2)"),
    ([G, G, G, B], -1, False, "consensus_disagree: steps 3 differ (judge=-1)"),
    ([G, B, G, B], 2, False, "consensus_disagree: steps 1,2 differ (judge=2)"),
    ([G, G, B, B], None, False, "judge_unparsable"),
])
def test_genprm_mode_table(labels, judge, keep, reason):
    # the MC first error is not what GenPRM compares: labels are (RPE can differ from MC > 0)
    decision = consensus(1, judge, labels, GENPRM)
    assert (decision.keep, decision.reason) == (keep, reason)


def test_genprm_drops_rpe_labels_that_recover_after_a_failing_ratio():
    # MC 1 -> 0.5 (ratio 0.5, bad) -> 0.5 (ratio 1, good again) -> 1.0: RPE labels [G, B, G, G].
    labels, _, _ = rpe_labels(1.0, [1.0, 0.5, 0.5, 1.0], 0.8)
    assert labels == [G, B, G, G]
    assert consensus(first_false(labels), 1, labels, GENPRM) == ConsensusDecision(
        False, "consensus_disagree: steps 2,3 differ (judge=1)")
    # first_error mode compares only the first errors: the same labels agree with a judge saying 1.
    assert consensus(first_false(labels), 1, labels).keep


def test_genprm_ignores_tolerance():
    assert not consensus(2, 3, [G, G, B, B], ConsensusConfig(mode="genprm", tolerance=5)).keep


def test_input_checks_and_config():
    with pytest.raises(ValueError, match="judge first error"):
        consensus(1, 4, [G, B, B])
    with pytest.raises(ValueError, match="mc first error"):
        consensus(-2, 1, [G, B, B])
    with pytest.raises(ValueError):
        consensus(-1, -1, [])
    with pytest.raises(ValidationError):
        ConsensusConfig(tolerance=-1)
    with pytest.raises(ValidationError):
        ConsensusConfig(mode="majority")
    assert ConsensusConfig() == ConsensusConfig(mode="first_error", tolerance=0, keep_unparsable=False,
                                                truncate_after_error=False)


def test_retention():
    kept, dropped = ConsensusDecision(True, None, [G]), ConsensusDecision(False, "judge_unparsable")
    assert retention([kept, dropped, dropped, kept, dropped]) == pytest.approx(0.4)
    assert retention([kept]) == 1.0 and retention([dropped]) == 0.0
    assert math.isnan(retention([]))
