"""The hybrid rule: the labeler's own labels, corrected only where a tool refutes (or, opt-in, verifies) a step."""

from __future__ import annotations

import pytest

from steplabel.checks.hybrid import combine
from steplabel.checks.hybrid_config import HybridConfig

U, V, R = "unknown", "verified", "refuted"


def test_refuted_step_and_everything_after_it_are_bad():
    # the quick-start case: MC says every step is good (right final answer), sympy refutes step 1
    labels, first = combine([True, True, True, True], [V, R, U, V])
    assert labels == [True, False, False, False] and first == 1


def test_the_labelers_own_rule_is_kept_where_the_tool_is_silent():
    # non-monotone labels (Math-Shepherd hard, RPE ratios) are not reshaped into MC > 0 or first-error form
    labels, first = combine([True, False, True, False], [U, U, V, U])
    assert labels == [True, False, True, False] and first == 1
    # a labeler-bad step before the refuted one stays the first error
    labels, first = combine([True, False, True, True], [U, U, R, U])
    assert labels == [True, False, False, False] and first == 1


def test_only_refuted_steps_when_bad_after_refuted_is_off():
    cfg = HybridConfig(bad_after_refuted=False)
    labels, first = combine([True, True, True], [U, R, V], cfg)
    assert labels == [True, False, True] and first == 1


def test_verified_rescue_is_opt_in():
    assert combine([True, False, False], [U, V, U]) == ([True, False, False], 1)
    assert combine([True, False, False], [U, V, U], HybridConfig(verified_rescues=True)) == ([True, True, False], 2)
    # a refuted earlier step still wins over a later verified one
    assert combine([True, True, True], [R, V, V], HybridConfig(verified_rescues=True)) == ([False, False, False], 0)


def test_none_is_unknown_null_labels_pass_through_and_errors():
    assert combine([True], [None]) == ([True], -1)
    assert combine([], []) == ([], -1)
    assert combine([None, True], [U, R]) == ([None, False], 0)
    with pytest.raises(ValueError, match="unknown tool verdict 'maybe'"):
        combine([True], ["maybe"])
    with pytest.raises(ValueError, match="2 labeler labels but 1 tool verdicts"):
        combine([True, True], [U])
    with pytest.raises(Exception, match="Extra inputs are not permitted"):
        HybridConfig(tool_overrides_mc=True)
