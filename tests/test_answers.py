"""Answer extraction: which rule fires matters for auditing label noise."""

import pytest

from steplabel.rollouts.answers import ExtractedAnswer, extract_answer, reference_answer


@pytest.mark.parametrize(
    ("text", "value", "rule"),
    [
        ("so $x = \\boxed{\\frac{1}{\\sqrt{2}}}$.", "\\frac{1}{\\sqrt{2}}", "boxed"),
        ("\\boxed{1} then corrected: \\boxed{\\{1, 2\\}}", "\\{1, 2\\}", "boxed"),
        ("\\fbox{7}", "7", "boxed"),
        ("The answer is 3. Actually \\boxed{4}", "4", "boxed"),  # boxed outranks answer_is
        ("The answer is 12 apples.", "12", "answer_is"),
        ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}", "answer_is"),
        ("So the final answer is $1,234.", "1234", "answer_is"),
        ("**Final Answer:** **73**", "73", "answer_is"),  # Math-Verify #76 markdown bold
        ("The answer is **73**.", "73", "answer_is"),
        ("Answer: (1, 2)", "(1, 2)", "answer_is"),
        ("The answer is 3.5. Let me double check 7.", "3.5", "answer_is"),
        ("The answer is 5.\nWait, the answer is -6.", "-6", "answer_is"),
        ("The answer is 2\\sqrt{2} units", "2\\sqrt{2} units", "answer_is"),  # not a leading number: kept whole
        ("The answer is 50%.", "50%", "answer_is"),
        ("Janet has 16 - 3 - 4 = 9 eggs.\n#### 18", "18", "gsm8k"),
        ("#### 1,234", "1234", "gsm8k"),
        ("We get 3 and then 1,234.5 in total.", "1234.5", "last_number"),
        ("x equals -7", "-7", "last_number"),
        ("compute 10-3", "3", "last_number"),  # binary minus is not a sign
        ("half is 1/2", "1/2", "last_number"),
        ("it is .5", ".5", "last_number"),
        # a closing sentence is never the answer itself (Minerva "Final Answer:" format)
        ("Final Answer: The final answer is $57$. I hope it is correct.", "57", "answer_is"),
        ("\\boxed{\\text{The final answer is } 57}", "57", "boxed"),
        ("The answer is $x = 3$ for both cases.", "x = 3", "answer_is"),
        # several answers
        ("The solutions are $-3$,$1$,$4$.", "-3, 1, 4", "last_math"),
        ("The pairs are $(2,3)$ and $(5,7)$.", "(2,3), (5,7)", "last_math"),
        ("The roots are $\\boxed{-3}$, $\\boxed{1}$ and $\\boxed{4}$.", "-3, 1, 4", "boxed"),
        ("First $\\boxed{2}$. Then we check more and get $\\boxed{5}$", "5", "boxed"),  # not one list
        # no marker: the whole final expression, never a number from inside it
        ("So the probability is \\frac{7}{16}.", "\\frac{7}{16}", "last_number"),
        ("So the probability is $\\frac{7}{16}$", "\\frac{7}{16}", "last_math"),
        ("Thus $P = \\frac{1}{2} \\cdot \\frac{7}{8} = \\frac{7}{16}$.", "\\frac{7}{16}", "last_math"),
        ("Solving, we find $y = 2x + 1$.", "y = 2x + 1", "last_math"),  # one equation is kept whole
        ("We get $x = 2$, so 5 apples remain.", "5", "last_number"),  # prose number after the math
        ("She pays $18 and $5 for eggs, so 23 total.", "23", "last_number"),  # currency is not math
    ],
)
def test_extract_answer(text: str, value: str, rule: str) -> None:
    assert extract_answer(text) == ExtractedAnswer(value, rule)


@pytest.mark.parametrize("text", ["", "no numbers at all", "\\boxed{}"])
def test_extract_answer_none(text: str) -> None:
    assert extract_answer(text) is None


def test_unbalanced_boxed_falls_through() -> None:
    assert extract_answer("\\boxed{3 and then 5") == ExtractedAnswer("5", "last_number")


@pytest.mark.parametrize(
    ("raw", "style", "expected"),
    [
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "gsm8k", "72"),
        ("... #### 1,234,567", "auto", "1234567"),
        ("Thus $\\boxed{\\frac{\\pi}{2}}$.", "boxed", "\\frac{\\pi}{2}"),
        ("Thus $\\boxed{\\frac{\\pi}{2}}$.", "auto", "\\frac{\\pi}{2}"),
        ("  \\frac{3}{4} ", "plain", "\\frac{3}{4}"),
        ("  (1, 2) ", "auto", "(1, 2)"),
    ],
)
def test_reference_answer(raw: str, style: str, expected: str) -> None:
    assert reference_answer(raw, style) == expected


@pytest.mark.parametrize(
    ("raw", "style"),
    [("   ", "plain"), ("no marker", "gsm8k"), ("#### ", "auto"), ("no box", "boxed"), ("\\boxed{}", "auto")],
)
def test_reference_answer_rejects_empty(raw: str, style: str) -> None:
    with pytest.raises(ValueError, match="reference"):
        reference_answer(raw, style)


def test_reference_answer_unknown_style() -> None:
    with pytest.raises(ValueError, match="gsm8k"):
        reference_answer("1", "latex")
