from __future__ import annotations

import pytest

from steplabel.checks.hybrid import combine
from steplabel.checks.hybrid_config import HybridConfig

MC = [1.0, 0.5, 0.25, 0.0]


def test_default_refuted_overrides_mc():
    labels, first = combine(MC, ["verified", "refuted", "unknown", "unknown"])
    assert labels == [True, False, False, False] and first == 1


def test_mc_decides_when_tool_is_silent():
    labels, first = combine(MC, ["unknown"] * 4)
    assert labels == [True, True, True, False] and first == 3


def test_tool_does_not_override_when_disabled():
    cfg = HybridConfig(tool_overrides_mc=False)
    labels, first = combine(MC, ["unknown", "refuted", "unknown", "unknown"], cfg)
    assert labels == [True, True, True, False] and first == 3


def test_require_agreement_makes_refuted_bad_even_without_override():
    cfg = HybridConfig(tool_overrides_mc=False, require_agreement=True)
    labels, first = combine(MC, ["unknown", "unknown", "refuted", "verified"], cfg)
    assert labels == [True, True, False, False] and first == 2


def test_verified_rescue_and_threshold():
    cfg = HybridConfig(verified_rescues_mc=True, after_first_error_bad=False, mc_threshold=0.3)
    labels, first = combine(MC, ["unknown", "unknown", "verified", "unknown"], cfg)
    assert labels == [True, True, True, False] and first == 3
    labels, _ = combine(MC, ["unknown", "unknown", "unknown", "unknown"], cfg)
    assert labels == [True, True, False, False]


def test_after_first_error_bad_can_be_off():
    cfg = HybridConfig(after_first_error_bad=False)
    labels, first = combine([1.0, 0.0, 1.0], ["unknown", "unknown", "verified"], cfg)
    assert labels == [True, False, True] and first == 1
    labels, _ = combine([1.0, 0.0, 1.0], ["unknown", "unknown", "verified"])
    assert labels == [True, False, False]


def test_none_is_unknown_and_errors():
    assert combine([0.5], [None]) == ([True], -1)
    assert combine([], []) == ([], -1)
    with pytest.raises(ValueError):
        combine([0.5], ["maybe"])
    with pytest.raises(ValueError):
        combine([0.5, 0.5], ["unknown"])
    with pytest.raises(Exception):
        HybridConfig(tool_override=True)
