"""The grader on the answer dev set built from MATH-500 / GSM8K gold answers (skips without ../shared/data).

Every surface form of a gold answer must be graded right and every wrong variant wrong; the grader must
never do worse than Math-Verify alone on any subset."""

import logging

import pytest

from benchmarks.grader_devset import GSM8K_MODELS, GSM8K_TEST, MATH500, build, run
from steplabel.rollouts.grading import Grader

pytestmark = pytest.mark.skipif(
    not (MATH500.exists() and GSM8K_TEST.exists() and GSM8K_MODELS.exists()), reason="../shared/data is not present"
)


@pytest.fixture(scope="module")
def result() -> dict:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    cases = build(gsm8k_limit=30, models_limit=150)
    sample = [c for i, c in enumerate(cases) if c.subset != "math" or i % 8 == 0]  # keep the test short
    with Grader() as grader:
        return run(sample, grader)


def test_grader_meets_the_agreement_targets(result: dict) -> None:
    subsets = result["subsets"]
    assert subsets["all (synthetic)"]["grader"] >= 98.0, result["grader_misses"]
    for name in ("gsm8k", "math", "olympiad", "gsm8k_models"):
        assert subsets[name]["grader"] >= 97.0, (name, result["grader_misses"])


def test_grader_is_never_worse_than_math_verify_alone(result: dict) -> None:
    for name, row in result["subsets"].items():
        assert row["grader"] >= row["math_verify"], name


def test_each_issue_class_is_handled(result: dict) -> None:
    forms = result["forms"]
    for form in ("final_answer", "list_dollars", "multi_boxed", "equation", "equation_no_marker",
                 "fraction_no_dollars", "family_or_system", "wrong_family_or_system", "units", "dollars"):
        assert forms[form]["grader"] == 100.0, (form, result["grader_misses"])
