"""OmegaPRM: binary search on planted errors, the pool and selection order, the tree search end to end."""

from __future__ import annotations

import json
import math

import pytest

from steplabel.labelers.base import Dropped, RolloutOutcome, SolutionTask, StepLabels
from steplabel.labelers.omegaprm import OmegaPRMLabeler, OmegaTree
from steplabel.labelers.omegaprm_config import OmegaPRMConfig
from steplabel.labelling.shard import filter_reason
from steplabel.rollouts.engines.base import GenerationRequest
from tests.scripted_engine import ScriptedEngine
from tests.test_labelers import driver_for, make_task, planted, steps_in_prompt


def error_at(first_error: int, n_correct: int = 2):
    """Prefixes of length <= first_error succeed n_correct of k times; longer ones never."""

    def script(request: GenerationRequest, index: int) -> str:
        ok = steps_in_prompt(request) <= first_error and index < n_correct
        return "Step 9: more.\nThe answer is 5." if ok else "Step 9: oops.\nThe answer is 7."

    return script


def test_binary_search_finds_the_planted_error_with_hand_computed_mc():
    # 8 steps, first error at step index 5: prefixes of length <= 5 can succeed, length >= 6 cannot.
    engine = ScriptedEngine(planted({4: 3, 5: 1, 6: 0}))
    result = driver_for(engine).run([make_task(n_steps=8, final_correct=False)], OmegaPRMLabeler(OmegaPRMConfig(k=4)))
    labels = result.labels["s1"]
    assert [steps_in_prompt(call[0]) for call in engine.calls] == [4, 6, 5]  # mid of (0,8), then (4,8), then (4,6)
    assert labels.first_error == 5
    assert labels.labels == [True] * 5 + [False] * 3
    # Steps 0-3 belong to the edge ending at prefix 4 (MC 3/4), step 4 to prefix 5 (1/4), step 5 to prefix 6 (0).
    assert labels.mc_scores == [0.75] * 4 + [0.25, 0.0, 0.0, 0.0]
    assert labels.soft_labels == labels.mc_scores  # soft is the default label mode
    assert labels.mc_total == [0, 0, 0, 4, 4, 4, 0, 1]
    assert labels.mc_correct == [0, 0, 0, 3, 1, 0, 0, 0]
    assert labels.rollouts_used == 12 and labels.tokens_generated == 12 * 7
    assert result.waves == 3
    assert labels.extra["paths"] == [{
        "steps": [f"Step {i}: line {i}" for i in range(1, 7)],
        "labels": [True] * 5 + [False],
        "mc": [0.75] * 4 + [0.25, 0.0],
        "soft": [0.75] * 4 + [0.25, 0.0],
    }]


@pytest.mark.parametrize("n_steps", [1, 2, 3, 5, 8, 16, 17])
def test_binary_search_every_planted_position_within_log_budget(n_steps):
    for error in range(n_steps):
        engine = ScriptedEngine(error_at(error))
        task = make_task(n_steps=n_steps, final_correct=False)
        labels = driver_for(engine).run([task], OmegaPRMLabeler(OmegaPRMConfig(k=2))).labels["s1"]
        assert labels.first_error == error, (n_steps, error)
        assert labels.rollouts_used <= 2 * math.ceil(math.log2(n_steps))  # k * ceil(log2 M) estimates at most


def test_hard_mode_and_correct_solutions_cost_nothing():
    engine = ScriptedEngine(error_at(1))
    config = OmegaPRMConfig(k=4, label_mode="hard")
    result = driver_for(engine).run([make_task("ok", n_steps=5), make_task("bad", n_steps=4, final_correct=False)],
                                    OmegaPRMLabeler(config))
    good = result.labels["ok"]
    assert good.labels == [True] * 5 and good.first_error == -1 and good.rollouts_used == 0
    bad = result.labels["bad"]
    assert bad.first_error == 1 and bad.soft_labels == [1.0, 0.0, 0.0, 0.0]


def outcome(flags: list[bool], texts: list[str]) -> RolloutOutcome:
    return RolloutOutcome(correct=sum(flags), total=len(flags), tokens=0, texts=tuple(texts), correct_flags=tuple(flags))


def test_pool_admits_wrong_rollouts_of_uncertain_states_and_selection_follows_q_plus_u():
    config = OmegaPRMConfig()
    tree = OmegaTree(config)
    words = lambda n: " ".join(["w"] * n)  # noqa: E731
    tree.record(tree.root, outcome([True, False, False, False], [words(7), words(5), words(50), words(500)]), pool=True)
    sure = tree.child(("a",))
    tree.record(sure, outcome([True, True], [words(3), words(3)]), pool=True)  # MC 1: nothing to search
    dead = tree.child(("b",))
    tree.record(dead, outcome([False, False], [words(3), words(3)]), pool=True)  # MC 0: nothing either
    mid = tree.child(("c",))
    tree.record(mid, outcome([True, True, True, False], [words(1)] * 3 + [words(10)]), pool=True)
    assert [(c.state.steps, c.words) for c in tree.pool] == [((), 5), ((), 50), ((), 500), (("c",), 10)]

    # Hand-computed: sum N = 4 (one estimate each); Q = .5^(1-MC) * .9^(words/500), U = .125*sqrt(4)/(1+N).
    first = tree.pool[3]
    assert tree.score(first) == pytest.approx(0.5**0.25 * 0.9 ** (10 / 500) + 0.125 * 2 / 2)
    assert tree.score(tree.pool[0]) == pytest.approx(0.5**0.75 * 0.9 ** (5 / 500) + 0.125 * 2 / 2)

    order = []
    while tree.pool:
        picked = tree.select()
        order.append((picked.state.steps, picked.words))
        assert picked not in tree.pool  # a selected pair never comes back
    assert order == [(("c",), 10), ((), 5), ((), 50), ((), 500)]
    assert mid.visits == 2 and tree.root.visits == 4  # the selected state's N is incremented each time


def test_visit_counts_steer_selection_away_from_a_selected_state():
    tree = OmegaTree(OmegaPRMConfig())
    tree.record(tree.root, outcome([True, False, False], ["x y", "x y", "x y"]), pool=True)
    other = tree.child(("s",))
    tree.record(other, outcome([True, False, False], ["x y", "x y", "x y"]), pool=True)
    # Equal Q and U: the earliest (the root's) goes first; then the root's N = 2 lowers its U.
    assert tree.select().state is tree.root
    assert tree.select().state is other


def tree_script(request: GenerationRequest, index: int) -> str:
    """A prefix is bad once it holds 'line 3' or 'bad'; a good prefix succeeds on sample 0 only (MC 1/4)."""
    body = request.prompt.split("Question:")[-1]
    bad = "line 3" in body or "bad" in body
    if not bad and index == 0:
        return "Step 1: fine.\nThe answer is 5."
    return "Step 1: ok.\nStep 2: bad.\nThe answer is 7."


def test_tree_search_order_paths_and_budget():
    config = OmegaPRMConfig(mode="tree", k=4, filter_k=4, search_limit=3)
    engine = ScriptedEngine(tree_script)
    task = make_task(n_steps=4, final_correct=False)
    labels = driver_for(engine).run([task], OmegaPRMLabeler(config, step_format="step_pattern")).labels["s1"]
    assert labels.first_error == 2 and labels.labels == [True, True, False, False]
    assert labels.extra["root_mc"] == 0.25
    assert labels.extra["searches"] == 3
    paths = labels.extra["paths"]
    assert [p["steps"] for p in paths] == [
        ["Step 1: line 1", "Step 2: line 2", "Step 3: line 3"],  # the solution itself
        ["Step 1: ok.", "Step 2: bad.\nThe answer is 7."],  # a wrong rollout of the root (earliest on a tie)
        # The root's N went up, so a rollout of the solution's good prefix wins the tie next.
        ["Step 1: line 1", "Step 2: line 2", "Step 1: ok.", "Step 2: bad.\nThe answer is 7."],
    ]
    assert paths[1]["labels"] == [True, False] and paths[1]["mc"] == [0.25, 0.0]
    assert [p["labels"] for p in paths][2] == [True, True, True, False]
    # Rollouts: root 4, solution prefixes 2 and 3 (4 each), one prefix per rollout search (4 each).
    assert labels.rollouts_used == 4 + 8 + 8
    assert [r.n for call in engine.calls for r in call] == [4, 4, 4, 4, 4]


@pytest.mark.parametrize(("root_answer", "root_mc"), [("5", 1.0), ("7", 0.0)])
def test_question_filter_drops_all_right_and_all_wrong_questions(root_answer, root_mc):
    def script(request: GenerationRequest, index: int) -> str:
        answer = root_answer if steps_in_prompt(request) == 0 else "5"
        return f"Step 1: x.\nThe answer is {answer}."

    config = OmegaPRMConfig(mode="tree", k=2, filter_k=4)
    engine = ScriptedEngine(script)
    tasks = [make_task("wrong", n_steps=3, final_correct=False), make_task("right", n_steps=2)]
    result = driver_for(engine).run(tasks, OmegaPRMLabeler(config))
    # The question is dropped: no solution is labelled or searched, and the pipeline rejects them with the reason.
    for sid in ("wrong", "right"):
        dropped = result.labels[sid]
        assert isinstance(dropped, Dropped) and filter_reason(dropped) == "question_filter_all_right_or_all_wrong"
        assert dropped.extra == {"root_mc": root_mc}
    assert result.labels["wrong"].rollouts_used + result.labels["right"].rollouts_used == 4  # the filter's only
    assert engine.samples == 4


def test_filter_reason_is_none_for_labelled_solutions():
    labels = driver_for(ScriptedEngine(error_at(1))).run([make_task(n_steps=3, final_correct=False)],
                                                          OmegaPRMLabeler(OmegaPRMConfig(k=2))).labels["s1"]
    assert isinstance(labels, StepLabels) and filter_reason(labels) is None


def test_rollout_budget_stops_new_searches():
    config = OmegaPRMConfig(mode="tree", k=4, filter_k=4, search_limit=100, rollout_budget=14)
    labels = driver_for(ScriptedEngine(tree_script)).run([make_task(n_steps=4, final_correct=False)],
                                                          OmegaPRMLabeler(config)).labels["s1"]
    # 12 rollouts after the solution's search (< 14): one more search (4), then 16 >= 14: none starts.
    assert labels.extra["searches"] == 2
    assert labels.rollouts_used == 16


def test_a_state_is_never_paired_with_its_own_extension():
    # Binary search on 8 steps estimates prefix 4 (good), 6 (bad), then 5 (good): 6 must move under 5.
    config = OmegaPRMConfig(k=4, label_mode="pairwise")
    labels = driver_for(ScriptedEngine(planted({4: 3, 5: 1, 6: 0}))).run(
        [make_task(n_steps=8, final_correct=False)], OmegaPRMLabeler(config)).labels["s1"]
    assert labels.first_error == 5
    assert labels.extra["pairs"] == []  # 5 and 6 lie on one line of actions, not siblings
    tree = OmegaTree(config)
    steps = tuple("abcdefgh")
    four, six = tree.child(steps[:4]), tree.child(steps[:6])
    five = tree.child(steps[:5])
    assert six.parent is five and five.parent is four and four.children == [five] and five.children == [six]
    other = tree.child(steps[:4] + ("x",))  # a real sibling action of 5 from state 4
    assert other.parent is four and four.children == [five, other]


def test_pairwise_mode_emits_bradley_terry_pairs():
    config = OmegaPRMConfig(mode="tree", k=4, filter_k=4, search_limit=3, label_mode="pairwise")
    labels = driver_for(ScriptedEngine(tree_script)).run([make_task(n_steps=4, final_correct=False)],
                                                          OmegaPRMLabeler(config)).labels["s1"]
    pairs = labels.extra["pairs"]
    # Under the solution's good prefix: the error edge (MC 0) and the searched rollout's first step (MC 1/4).
    assert {"prefix": ["Step 1: line 1", "Step 2: line 2"], "chosen": ["Step 1: ok."], "rejected": ["Step 3: line 3"],
            "mc_chosen": 0.25, "mc_rejected": 0.0, "p_chosen": 0.625} in pairs
    assert all(p["p_chosen"] == pytest.approx((1 + p["mc_chosen"] - p["mc_rejected"]) / 2) for p in pairs)
    assert all(p["mc_chosen"] > p["mc_rejected"] for p in pairs)


def test_unknown_fields_are_rejected():
    with pytest.raises(ValueError):
        OmegaPRMConfig(mode="tree", alpah=0.4)


def test_mc_threshold_treats_lucky_wrong_prefixes_as_failures():
    # True first error at step index 1: prefixes of 2-4 steps are wrong but reach the answer 1 of 8 times.
    mc = {1: 6, 2: 1, 3: 1, 4: 1, 5: 0, 6: 0, 7: 0}
    engine = ScriptedEngine(planted(mc))
    task = make_task(n_steps=8, final_correct=False)
    paper = driver_for(engine).run([task], OmegaPRMLabeler(OmegaPRMConfig(k=8))).labels["s1"]
    assert paper.first_error == 4  # MC 1/8 > 0 at prefix 4 sends the paper's rule to the right
    engine = ScriptedEngine(planted(mc))
    robust = driver_for(engine).run([task], OmegaPRMLabeler(OmegaPRMConfig(k=8, mc_threshold=0.25))).labels["s1"]
    assert robust.first_error == 1  # 1/8 at prefixes 4 and 2 is under 0.25: both count as failed
    assert robust.labels == [True] + [False] * 7


def test_hard_soft_labels_and_the_pool_follow_mc_threshold():
    mc = {1: 6, 2: 1, 3: 1, 4: 1, 5: 0, 6: 0, 7: 0}
    config = OmegaPRMConfig(k=8, mc_threshold=0.25, label_mode="hard")
    labels = driver_for(ScriptedEngine(planted(mc))).run([make_task(n_steps=8, final_correct=False)],
                                                         OmegaPRMLabeler(config)).labels["s1"]
    assert labels.first_error == 1
    assert labels.soft_labels == [1.0] + [0.0] * 7  # prefix 2 has MC 1/8 <= 0.25: bad, soft 0 as well
    tree = OmegaTree(OmegaPRMConfig(mc_threshold=0.25))
    low, high = tree.child(("low",)), tree.child(("high",))
    tree.record(low, outcome([True] + [False] * 7, ["w"] * 8), pool=True)  # MC 1/8: a failure to the search
    tree.record(high, outcome([True, True, True] + [False] * 5, ["w"] * 8), pool=True)  # MC 3/8
    assert {c.state.steps for c in tree.pool} == {("high",)} and len(tree.pool) == 5


def test_truncated_rollouts_never_enter_the_pool():
    config = OmegaPRMConfig(mode="tree", k=4, filter_k=4, search_limit=3)
    engine = ScriptedEngine(tree_script, truncate_when=lambda request, index: index > 0)  # every wrong one is cut
    labels = driver_for(engine).run([make_task(n_steps=4, final_correct=False)],
                                    OmegaPRMLabeler(config, step_format="step_pattern")).labels["s1"]
    assert labels.first_error == 2 and labels.extra["root_mc"] == 0.25
    assert labels.extra["searches"] == 1  # the solution's own search; no cut-off rollout was searched
    tree = OmegaTree(OmegaPRMConfig())
    tree.record(tree.root, RolloutOutcome(1, 3, 0, ("a", "b", "c"), (True, False, False), (False, True, False)),
                pool=True)
    assert [c.text for c in tree.pool] == ["c"]


@pytest.mark.parametrize(("limits", "reason"), [({"search_limit": 1}, "question_search_limit"),
                                                 ({"rollout_budget": 4}, "question_rollout_budget")])
def test_search_limit_and_rollout_budget_bound_the_whole_question(limits, reason):
    config = OmegaPRMConfig(mode="tree", k=4, filter_k=4, **limits)
    engine = ScriptedEngine(tree_script)
    tasks = [make_task("a", n_steps=4, final_correct=False), make_task("b", n_steps=5, final_correct=False),
             make_task("c", n_steps=2)]
    labels = driver_for(engine).run(tasks, OmegaPRMLabeler(config, step_format="step_pattern")).labels
    assert isinstance(labels["c"], StepLabels) and labels["c"].rollouts_used == 0  # correct: no search needed
    if reason == "question_search_limit":  # a's own search is the question's one search; b gets none
        assert labels["a"].extra["searches"] == 1 and labels["b"] == Dropped(reason, 0, 0, {"root_mc": 0.25})
        assert engine.samples == 4 + 8
    else:  # the root's 4 rollouts spend the budget: no wrong solution may start its search
        assert labels["a"] == Dropped(reason, 4, labels["a"].tokens_generated, {"root_mc": 0.25})
        assert labels["b"] == Dropped(reason, 0, 0, {"root_mc": 0.25})
        assert engine.samples == 4


def test_one_tree_per_question_shared_by_its_solutions():
    """The root is estimated once per question; siblings reuse states, share the search limit, and each
    pays only for its own queries."""
    config = OmegaPRMConfig(mode="tree", k=4, filter_k=4, search_limit=4, label_mode="pairwise")
    engine = ScriptedEngine(tree_script)
    same_steps = make_task("a", n_steps=4, final_correct=False)
    tasks = [same_steps, make_task("b", n_steps=4, final_correct=False), make_task("c", n_steps=2, final_correct=True)]
    other_question = SolutionTask("d", "p2", "What is 1 + 4?", "5", same_steps.steps, False)
    labeler = OmegaPRMLabeler(config, step_format="step_pattern")
    result = driver_for(engine).run([*tasks, other_question], labeler)
    labels = result.labels
    root_queries = [r for call in engine.calls for r in call if steps_in_prompt(r) == 0]
    assert len(root_queries) == 2  # one per question, not one per solution
    assert {labels[s].extra["root_mc"] for s in "abc"} == {0.25}
    # b has a's steps: every prefix it needs was estimated for a, so its search costs nothing
    assert labels["b"].first_error == labels["a"].first_error == 2 and labels["b"].rollouts_used == 0
    assert sum(labels[s].extra["searches"] for s in "abc") == config.search_limit
    assert sum(labels[s].rollouts_used for s in "abcd") == engine.samples  # every rollout paid for once
    assert sum(labels[s].tokens_generated for s in "abcd") == sum(
        len(c.split()) for call in engine.calls for r in call for c in [tree_script(r, i) for i in range(r.n)])
    handed = [json.dumps(p, sort_keys=True) for s in "abc" for p in labels[s].extra["pairs"]]
    assert handed and len(handed) == len(set(handed))  # the question's pairs, each on one sibling
    assert labeler._trees == {}  # freed when its last solution finished


def test_pairs_survive_a_sibling_that_fails_last():
    config = OmegaPRMConfig(mode="tree", k=4, filter_k=4, search_limit=3, label_mode="pairwise")
    right = SolutionTask("a", "p1", "What is 2 + 3?", "5", ("Step 1: line 1", "Step 2: line 2"), True)
    wrong = SolutionTask("b", "p1", "What is 2 + 3?", "5", tuple(f"Step {i + 1}: line {i + 1}" for i in range(6)), False)
    clean = ScriptedEngine(tree_script)
    driver_for(clean).run([right, wrong], OmegaPRMLabeler(config, step_format="step_pattern"))
    last = sum(len(call) for call in clean.calls)
    sent = {"n": 0}

    def fail_the_last_request(request: GenerationRequest) -> str | None:
        sent["n"] += 1
        return "boom" if sent["n"] == last else None

    result = driver_for(ScriptedEngine(tree_script, fail_when=fail_the_last_request)).run(
        [right, wrong], OmegaPRMLabeler(config, step_format="step_pattern"))
    assert "b" in result.failures and result.labels["a"].extra["pairs"]  # a's pairs are not lost with b

