"""Prompt text for solutions and rollouts.

A rollout continues exactly ``prompt + steps[0] + sep + ... + steps[t-1] + sep``: the same bytes every
time for the same prefix, so llama.cpp's and vLLM's prefix caches reuse the shared part.
"""

from __future__ import annotations

from steplabel.rollouts.steps import join_steps


def solution_prompt(template: str, question: str) -> str:
    # str.replace, not str.format: templates may hold LaTeX braces such as \boxed{}.
    return template.replace("{question}", question.strip())


def prefix_prompt(template: str, question: str, steps: tuple[str, ...], step_format: str) -> str:
    # Joining one empty step more puts the separator after the last real step: the model starts a new one.
    return solution_prompt(template, question) + (join_steps([*steps, ""], step_format) if steps else "")
