"""A built-in generator of easy multi-step arithmetic word problems with exact answers.

It is the offline default problem source: two operations on small numbers, the level at which the
embedded 270M base model solves some but not all samples (about 10% at temperature 0.8 with the
quick-start prompt, measured on 60 samples), which is what makes MC values informative.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

NAMES = [("Mia", "She"), ("Liam", "He"), ("Ava", "She"), ("Noah", "He"), ("Emma", "She"), ("Omar", "He")]
ITEMS = ["apples", "marbles", "stickers", "cookies", "pencils", "cards"]


@dataclass(frozen=True)
class WordProblem:
    question: str
    answer: int


def _buy_then_give(rng: random.Random) -> WordProblem:
    (name, pronoun), item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 6)
    c = rng.randint(1, min(a + b - 1, 6))
    question = f"{name} has {a} {item}. {pronoun} buys {b} more {item} and then gives away {c}. How many {item} does {name} have now?"
    return WordProblem(question, a + b - c)


def _groups_minus(rng: random.Random) -> WordProblem:
    (name, pronoun), item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 5), rng.randint(2, 5)
    c = rng.randint(1, min(a * b - 1, 9))
    question = f"{name} buys {a} bags with {b} {item} in each bag. {pronoun} gives away {c} {item}. How many {item} does {name} have left?"
    return WordProblem(question, a * b - c)


def _sell_twice(rng: random.Random) -> WordProblem:
    item = rng.choice(ITEMS)
    a = rng.randint(10, 20)
    b = rng.randint(2, 6)
    c = rng.randint(1, 6)
    question = f"A shop has {a} {item}. It sells {b} {item} in the morning and {c} {item} in the afternoon. How many {item} are left?"
    return WordProblem(question, a - b - c)


def _earn_then_spend(rng: random.Random) -> WordProblem:
    name, _ = rng.choice(NAMES)
    a, b = rng.randint(2, 6), rng.randint(2, 4)
    c = rng.randint(1, min(a * b - 1, 9))
    question = f"{name} earns {a} dollars a day for {b} days and then spends {c} dollars. How many dollars does {name} have left?"
    return WordProblem(question, a * b - c)


TEMPLATES: list[Callable[[random.Random], WordProblem]] = [
    _buy_then_give,
    _groups_minus,
    _sell_twice,
    _earn_then_spend,
]


def generate_problems(count: int, seed: int = 0) -> list[WordProblem]:
    """``count`` distinct problems, the same for the same seed on every machine."""
    rng = random.Random(seed)
    problems: list[WordProblem] = []
    seen: set[str] = set()
    while len(problems) < count:
        problem = TEMPLATES[len(problems) % len(TEMPLATES)](rng)
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems
