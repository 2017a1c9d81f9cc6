"""Step splitting: the unit every PRM label and rollout prefix is built on."""

import pytest

from steplabel.rollouts.steps import METHODS, join_steps, split_steps


def test_blank_line_splits_paragraphs_and_drops_empties() -> None:
    text = "  First we add.\n\n\nThen   \n  \n we multiply.\n\n  \n"
    assert split_steps(text) == ["First we add.", "Then", "we multiply."]


def test_blank_line_keeps_single_newlines_inside_a_step() -> None:
    assert split_steps("a = 1\nb = 2\n\nc = 3") == ["a = 1\nb = 2", "c = 3"]


def test_step_pattern_keeps_prefix_and_joins_answer_line() -> None:
    text = (
        "Let's think.\n"
        "Step 1: 3 + 4 = 7.\n"
        "step 2: 7 * 2 = 14.\n"
        "More detail.\n"
        "STEP 3: 14 - 2 = 12.\n\n"
        "The answer is 12."
    )
    assert split_steps(text, "step_pattern") == [
        "Let's think.",
        "Step 1: 3 + 4 = 7.",
        "step 2: 7 * 2 = 14.\nMore detail.",
        "STEP 3: 14 - 2 = 12.\nThe answer is 12.",
    ]


@pytest.mark.parametrize("answer_line", ["#### 12", "So the final answer is $\\boxed{12}$.", "**Answer:** 12"])
def test_step_pattern_trailing_answer_forms(answer_line: str) -> None:
    steps = split_steps(f"Step 1: a\nStep 2: b\n\n{answer_line}\n", "step_pattern")
    assert steps == ["Step 1: a", f"Step 2: b\n{answer_line}"]


def test_step_pattern_drops_whitespace_preamble_and_handles_no_steps() -> None:
    assert split_steps("\n  \nStep 1: x\nStep 2: y", "step_pattern") == ["Step 1: x", "Step 2: y"]
    assert split_steps("  no numbered steps here ", "step_pattern") == ["no numbered steps here"]
    # "Step 1:" in the middle of a line is not a step boundary.
    assert split_steps("Step 1: see Step 2: later", "step_pattern") == ["Step 1: see Step 2: later"]


def test_token_chunks_never_split_words_and_merge_tiny_tail() -> None:
    words = [f"w{i}" for i in range(10)]
    assert split_steps(" ".join(words), "token_chunks", chunk_words=4) == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9"]
    # 9 words in chunks of 4: the 1-word tail is folded into the previous chunk.
    assert split_steps(" ".join(words[:9]), "token_chunks", chunk_words=4) == ["w0 w1 w2 w3", "w4 w5 w6 w7 w8"]
    text = "supercalifragilistic\nwords\tacross   whitespace"
    assert split_steps(text, "token_chunks", chunk_words=2) == ["supercalifragilistic words", "across whitespace"]
    assert split_steps("   ", "token_chunks") == []
    with pytest.raises(ValueError, match="chunk_words"):
        split_steps("a b", "token_chunks", chunk_words=0)


def test_unknown_method_names_valid_ones() -> None:
    with pytest.raises(ValueError, match="blank_line.*step_pattern.*token_chunks"):
        split_steps("x", "sentences")
    with pytest.raises(ValueError, match="valid methods"):
        join_steps(["x"], "sentences")


@pytest.mark.parametrize(
    ("method", "text"),
    [
        ("blank_line", "A.\n\nB.\nB2.\n\nC."),
        ("step_pattern", "Intro\nStep 1: a\nStep 2: b\nThe answer is 3."),
        ("token_chunks", " ".join(str(i) for i in range(100))),
    ],
)
def test_join_is_inverse_of_split_for_prefixes(method: str, text: str) -> None:
    steps = split_steps(text, method, chunk_words=10)
    for k in range(1, len(steps) + 1):
        assert split_steps(join_steps(steps[:k], method), method, chunk_words=10) == steps[:k]


def test_join_separators() -> None:
    assert join_steps(["a", "b"], "blank_line") == "a\n\nb"
    assert join_steps(["a", "b"], "step_pattern") == "a\nb"
    assert join_steps(["a", "b"], "token_chunks") == "a b"
    assert set(METHODS) == {"blank_line", "step_pattern", "token_chunks"}
