"""The LLM judge: prompt text, parsing of judge outputs, voting, and one-call batching on a scripted engine."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from steplabel.checks.judge import (
    JudgeFailure,
    JudgeItem,
    JudgeParse,
    JudgeVerdict,
    build_judge_prompt,
    judge_solutions,
    majority_vote,
    parse_judgement,
)
from steplabel.checks.judge_config import DEFAULT_JUDGE_TEMPLATE, JudgeConfig
from steplabel.rollouts.engines.base import GenerationRequest, derive_seed
from tests.scripted_engine import ScriptedEngine, seeded_index

STEPS = ("We have 3 apples.", "We buy 2 more, so 3 + 2 = 6.", "The answer is 6.")


def test_prompt_exact_text_for_three_steps():
    template = "Problem: {problem}\n\n{tagged_steps}\n\nIndex in \\boxed{}:"
    assert build_judge_prompt("How many apples?", STEPS, template) == (
        "Problem: How many apples?\n\n"
        "<paragraph_0>\nWe have 3 apples.\n</paragraph_0>\n\n"
        "<paragraph_1>\nWe buy 2 more, so 3 + 2 = 6.\n</paragraph_1>\n\n"
        "<paragraph_2>\nThe answer is 6.\n</paragraph_2>\n\n"
        "Index in \\boxed{}:"
    )


def test_default_prompt_and_literal_substitution():
    prompt = build_judge_prompt("Is {x} = {tagged_steps}?", STEPS)  # braces in the problem stay literal
    assert prompt.startswith("Below is a math problem")
    assert "Is {x} = {tagged_steps}?" in prompt  # one pass: the problem's own placeholder text is not replaced
    assert prompt.count("<paragraph_2>\nThe answer is 6.\n</paragraph_2>") == 1
    assert "\\boxed{}" in prompt and "-1" in prompt and "{problem}" not in prompt
    assert prompt == build_judge_prompt("Is {x} = {tagged_steps}?", STEPS, DEFAULT_JUDGE_TEMPLATE)


def test_config_defaults_and_validation():
    assert JudgeConfig().temperature == 0.0 and JudgeConfig().max_tokens == 1024 and JudgeConfig().samples == 1
    assert JudgeConfig(samples=8).temperature == 0.7
    assert JudgeConfig(samples=8, temperature=0.3).temperature == 0.3
    assert JudgeConfig(temperature=None).temperature == 0.0
    assert JudgeConfig.model_validate({"samples": "8"}).temperature == 0.7  # YAML/CLI strings coerce too
    assert JudgeConfig().stop == []
    with pytest.raises(ValidationError, match="tagged_steps"):
        JudgeConfig(template="{problem} only")
    with pytest.raises(ValidationError):
        JudgeConfig(samples=0)


N = 3  # steps in the parsed solution
PARSE_TABLE = [
    ("All paragraphs check out.\n\nFinal: \\boxed{-1}", -1, "ok", "-1"),
    ("Paragraph 2 claims 3 + 2 = 6, which is wrong.\n\\boxed{2}", 2, "ok", "2"),
    ("\\boxed{ 1 }", 1, "ok", "1"),
    ("First I thought \\boxed{0} but paragraph 0 is fine.\nSo the answer is \\boxed{1}.", 1, "ok", "1"),
    ("\\boxed{paragraph 2}", 2, "ok", "paragraph 2"),
    ("\\boxed{\\text{Paragraph\\_2}}".replace("\\_", "_"), 2, "ok", "\\text{Paragraph_2}"),
    ("\\boxed{<paragraph_0>}", 0, "ok", "<paragraph_0>"),
    ("$\\boxed{2}$", 2, "ok", "2"),
    ("\\boxed{**1**}", 1, "ok", "**1**"),
    ("\\boxed{\u22121}", -1, "ok", "\u22121"),
    ("\\boxed{+2.}", 2, "ok", "+2."),
    ("The error is in paragraph 1.", None, "unparsable", None),
    ("\\boxed{2.5}", None, "unparsable", "2.5"),
    ("\\boxed{none}", None, "unparsable", "none"),
    ("\\boxed{1, 2}", None, "unparsable", "1, 2"),
    ("\\boxed{}", None, "unparsable", ""),
    ("\\boxed{2} wait, actually \\boxed{x}", None, "unparsable", "x"),  # the last box decides, no fallback
    ("looks fine so \\boxed{-1} ... but paragraph 1 \\boxed{1", None, "unparsable", None),  # cut off
    ("\\boxed{7}", None, "out_of_range", "7"),
    ("\\boxed{3}", None, "out_of_range", "3"),  # n_steps == 3: the last valid index is 2
    ("\\boxed{-2}", None, "out_of_range", "-2"),
    ("", None, "unparsable", None),
    ("**Final answer: -1**", -1, "ok", "-1"),
    ("Final Answer: 2", 2, "ok", "2"),
    ("The final answer is paragraph 1.", 1, "ok", "1"),
    ("**Earliest error:** paragraph 2", 2, "ok", "2"),
    ("The earliest error occurs in paragraph_0.", 0, "ok", "0"),
    ("Final answer: 1.5", None, "unparsable", None),
    ("Final answer: 4", None, "out_of_range", "4"),
    ("<analysis_1>wrong sum</analysis_1>\n<conclusion>Incorrect</conclusion>", None, "unparsable", None),
]


@pytest.mark.parametrize(("text", "first_error", "status", "raw"), PARSE_TABLE)
def test_parse_judgement_table(text, first_error, status, raw):
    assert parse_judgement(text, N) == JudgeParse(first_error, status, raw)


def test_parse_rejects_empty_solution():
    with pytest.raises(ValueError):
        parse_judgement("\\boxed{0}", 0)


def ok(i: int) -> JudgeParse:
    return JudgeParse(i, "ok", str(i))


BAD = JudgeParse(None, "unparsable", None)
OUT = JudgeParse(None, "out_of_range", "9")


def test_majority_vote_plurality_and_rationale():
    parses = [ok(2), ok(1), ok(2), BAD, ok(2), OUT, ok(-1), ok(1)]
    texts = [f"critique {i}" for i in range(8)]
    v = majority_vote(parses, texts)
    assert v.first_error == 2 and v.votes == {-1: 1, 1: 2, 2: 3}
    assert v.unparsable == 2 and v.out_of_range == 1 and v.agreement == 3 / 8
    assert v.rationale == "critique 0" and v.samples == 8


@pytest.mark.parametrize(("parses", "winner"), [
    ([ok(3), ok(1), ok(3), ok(1)], 1),  # tie between errors: the earliest wins
    ([ok(-1), ok(2), ok(2), ok(-1)], 2),  # -1 loses a tie to any error index
    ([ok(-1), BAD, BAD], -1),  # a lone valid vote wins
    ([ok(0), ok(-1), ok(-1)], -1),  # a real majority for -1 wins
])
def test_majority_vote_ties(parses, winner):
    assert majority_vote(parses).first_error == winner


def test_majority_vote_all_unparsable_and_truncation():
    v = majority_vote([BAD, OUT], ["a", "b"])
    assert v.first_error is None and v.votes == {} and v.unparsable == 2 and v.agreement == 0.0
    assert v.rationale == "a"  # nothing parsed: the first sample's text is kept for inspection, not guessed from
    assert majority_vote([ok(1)], ["x" * 5000]).rationale == "x" * 4000
    assert majority_vote([ok(1)], ["abcdef"], max_rationale_chars=3).rationale == "abc"
    with pytest.raises(ValueError):
        majority_vote([ok(1)], ["a", "b"])


ITEMS = [
    JudgeItem("s-good", "Add 3 and 2.", ("3 + 2 = 5.", "The answer is 5.")),
    JudgeItem("s-bad", "Add 3 and 2.", STEPS),
    JudgeItem("s-mixed", "Add 3 and 2.", STEPS),
]


def judge_script(request: GenerationRequest, index: int) -> str:
    if "3 + 2 = 6" in request.prompt:
        return f"Paragraph 1 adds wrongly (sample {index}).\n\\boxed{{1}}"
    return "Everything is correct.\n\\boxed{-1}"


def test_judge_solutions_one_call_seeds_and_votes():
    engine = ScriptedEngine(judge_script)
    config = JudgeConfig(samples=4)
    out = judge_solutions(engine, ITEMS, config, base_seed=11)
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 3
    requests = engine.calls[0]
    assert all(r.n == 4 and r.temperature == 0.7 and r.max_tokens == 1024 for r in requests)
    seeds = [r.seed for r in requests]
    assert seeds == [derive_seed(11, item.solution_id, "judge") for item in ITEMS]
    assert len(set(seeds)) == 3  # the two identical solutions still get distinct seeds
    assert requests[1].prompt == requests[2].prompt
    assert out["s-good"].first_error == -1 and out["s-good"].votes == {-1: 4} and out["s-good"].agreement == 1.0
    bad = out["s-bad"]
    assert isinstance(bad, JudgeVerdict) and bad.first_error == 1 and bad.rationale.startswith("Paragraph 1 adds")
    assert bad.samples == 4 and bad.tokens > 0
    again = ScriptedEngine(lambda r, i: "\\boxed{-1}")
    judge_solutions(again, ITEMS, config, base_seed=11)
    assert [r.seed for r in again.calls[0]] == seeds  # reproducible
    other = ScriptedEngine(lambda r, i: "\\boxed{-1}")
    judge_solutions(other, ITEMS, config, base_seed=12)
    assert [r.seed for r in other.calls[0]] != seeds


def test_judge_solutions_votes_over_seeded_samples_and_records_unparsable():
    def script(request: GenerationRequest, index: int) -> str:
        return ["\\boxed{2}", "\\boxed{0}", "no idea", "\\boxed{2}", "\\boxed{9}"][index]

    out = judge_solutions(ScriptedEngine(script), [ITEMS[1]], JudgeConfig(samples=5))
    v = out["s-bad"]
    assert v.first_error == 2 and v.votes == {0: 1, 2: 2} and v.unparsable == 2
    assert [p.status for p in v.parses] == ["ok", "ok", "unparsable", "ok", "out_of_range"]
    # greedy default: one sample, temperature 0
    engine = ScriptedEngine(lambda r, i: str(seeded_index(r, i)))
    out = judge_solutions(engine, ITEMS[:1])
    assert engine.calls[0][0].n == 1 and engine.calls[0][0].temperature == 0.0
    assert out["s-good"].first_error is None and out["s-good"].unparsable == 1


def test_judge_solutions_engine_failure_and_input_checks():
    engine = ScriptedEngine(lambda r, i: "\\boxed{-1}", fail_when=lambda r: "HTTP 500: overloaded" if "6." in r.prompt else None)
    out = judge_solutions(engine, ITEMS, JudgeConfig(samples=2))
    assert len(engine.calls) == 1
    assert out["s-good"].first_error == -1
    assert isinstance(out["s-bad"], JudgeFailure) and "HTTP 500: overloaded" in out["s-bad"].reason
    assert isinstance(out["s-mixed"], JudgeFailure)
    assert judge_solutions(engine, []) == {} and len(engine.calls) == 1
    with pytest.raises(ValueError, match="duplicate"):
        judge_solutions(engine, [ITEMS[0], ITEMS[0]])
    with pytest.raises(ValueError, match="no steps"):
        judge_solutions(engine, [JudgeItem("e", "q", ())])
