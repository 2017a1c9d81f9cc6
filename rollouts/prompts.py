"""Prompt text for solutions and rollouts, and its config (the run's ``prompt:`` section).

A rollout continues exactly ``prompt + steps[0] + sep + ... + steps[t-1] + sep``: the same bytes every
time for the same prefix, so llama.cpp's and vLLM's prefix caches reuse the shared part.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from steplabel.rollouts.steps import join_steps
from steplabel.storage.strict import StrictConfig

FEWSHOT_STEPS_TEMPLATE = """Question: Sara has 4 apples. She buys 3 more apples and then gives away 2. How many apples does Sara have now?
Step 1: Sara has 4 + 3 = 7 apples.
Step 2: After giving away 2 she has 7 - 2 = 5 apples.
The answer is 5.

Question: Ben buys 3 bags with 5 cards in each bag. He gives away 4 cards. How many cards does Ben have left?
Step 1: Ben has 3 * 5 = 15 cards.
Step 2: After giving away 4 he has 15 - 4 = 11 cards.
The answer is 11.

Question: A shop has 20 pens. It sells 6 pens in the morning and 3 pens in the afternoon. How many pens are left?
Step 1: After the morning the shop has 20 - 6 = 14 pens.
Step 2: After the afternoon it has 14 - 3 = 11 pens.
The answer is 11.

Question: {question}
"""


class PromptConfig(StrictConfig):
    """How solutions are prompted and cut into steps.

    ``template`` must contain ``{question}``; rollouts continue the byte-identical prompt followed by
    the solution's first t steps, so engines with prefix caching reuse the shared part.
    """

    template: str = FEWSHOT_STEPS_TEMPLATE
    step_format: Literal["step_pattern", "blank_line", "token_chunks"] = "step_pattern"
    chunk_words: int = Field(48, ge=4)
    stop: list[str] = Field(default_factory=lambda: ["\n\n", "\nQuestion:"])

    @field_validator("template")
    @classmethod
    def _has_question_slot(cls, template: str) -> str:
        if "{question}" not in template:
            raise ValueError("must contain {question}")
        return template


def solution_prompt(template: str, question: str) -> str:
    # str.replace, not str.format: templates may hold LaTeX braces such as \boxed{}.
    return template.replace("{question}", question.strip())


def prefix_prompt(template: str, question: str, steps: tuple[str, ...], step_format: str) -> str:
    # Joining one empty step more puts the separator after the last real step: the model starts a new one.
    return solution_prompt(template, question) + (join_steps([*steps, ""], step_format) if steps else "")
