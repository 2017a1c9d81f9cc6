"""GenPRM relative progress estimation against hand-computed ratios."""

from __future__ import annotations

import pytest

from steplabel.labelers.rpe import (
    RPELabeler,
    relative_progress,
    rpe_labels,
    zero_after_first_error,
)
from steplabel.labelers.rpe_config import RPEConfig
from tests.scripted_engine import ScriptedEngine
from tests.test_labelers import driver_for, make_task, planted


def test_ratios_threshold_and_zero_guard():
    mc = [0.5, 0.375, 0.5, 0.0, 0.25]
    assert zero_after_first_error(mc) == [0.5, 0.375, 0.5, 0.0, 0.0]
    labels, soft, ratios = rpe_labels(0.5, mc, 0.8)
    assert ratios == [1.0, 0.75, pytest.approx(4 / 3), 0.0, None]  # MC(t) = 0: no ratio
    assert labels == [True, False, True, False, False]
    assert soft == [1.0, 0.75, 1.0, 0.0, 0.0]
    assert relative_progress(0.0, [0.0]) == [None]
    assert rpe_labels(0.0, [0.5], 0.8)[0] == [True]  # question MC 0, yet step 1 can succeed: progress
    assert rpe_labels(0.0, [0.0, 0.5], 0.8)[0] == [False, False]


def test_a_ratio_exactly_at_the_threshold_is_progress():
    # 5/5 -> 4/5 is a ratio of exactly 0.8: GenPRM's rule is P_t >= 0.8, so the step is good.
    engine = ScriptedEngine(planted({0: 5, 1: 5, 2: 4}))
    labels = driver_for(engine).run([make_task(n_steps=3)], RPELabeler(RPEConfig(k=5))).labels["s1"]
    assert labels.extra["relative_progress"] == [1.0, pytest.approx(0.8), 1.25]
    assert labels.labels == [True, True, True] and labels.first_error == -1


def test_rpe_labeler_one_wave_with_the_question_prefix():
    engine = ScriptedEngine(planted({0: 4, 1: 4, 2: 2}))
    labels = driver_for(engine).run([make_task(n_steps=3, final_correct=False)], RPELabeler(RPEConfig(k=4))).labels["s1"]
    assert len(engine.calls) == 1 and [r.n for r in engine.calls[0]] == [4, 4, 4]
    assert labels.mc_scores == [1.0, 0.5, 0.0]
    assert labels.extra["relative_progress"] == [1.0, 0.5, 0.0]
    assert labels.labels == [True, False, False] and labels.first_error == 1
    assert labels.rollouts_used == 12


def test_a_falling_but_nonzero_mc_is_caught_where_hard_labels_miss_it():
    engine = ScriptedEngine(planted({0: 8, 1: 8, 2: 1, 3: 1}))
    labels = driver_for(engine).run([make_task(n_steps=4)], RPELabeler(RPEConfig(k=8))).labels["s1"]
    assert labels.first_error == 1  # MC 1 -> 1/8: hard MC > 0 would call it good
    assert labels.labels == [True, False, True, True]
