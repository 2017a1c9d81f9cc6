"""A simulated policy/completer with planted first errors: the ground truth for comparing labelers.

Benchmarks only, never a product default.

Each problem has a pass rate ``p`` (uniform in [p_low, p_high]) and a typical length. A continuation from a
prefix is a list of ``Step j: ...`` lines and ``The answer is X.``:

* from a prefix with no wrong step: right (all steps fine, right answer) with probability ``p``, else one
  planted wrong step at a uniform position among the new steps and a wrong answer (a right prefix that
  fails);
* from a prefix holding a wrong step: the right answer anyway with probability ``noise`` (a wrong prefix
  that still reaches the answer), else a wrong one.

A step is wrong iff its text holds ``[err]``. Solutions are continuations of the empty prefix, so their
first error is the first ``[err]`` step (-1 when none) and an erroneous solution can still end with the
right answer (probability ``noise``), as in ProcessBench. Samples are pseudo-random per request seed and
sample index, so the same prefix gives the same samples to every labeler.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from steplabel.labelers.base import SolutionTask
from steplabel.rollouts.engines.base import (
    Completion,
    GenerationRequest,
    GenerationResult,
    derive_seed,
    sample_seed,
)
from steplabel.rollouts.prompts import prefix_prompt
from steplabel.rollouts.steps import split_steps

TEMPLATE = "Question: {question}\n"
STEP_FORMAT = "step_pattern"
_ANSWER = re.compile(r"The answer is (\S+?)\.\s*$")


@dataclass(frozen=True)
class SimProblem:
    problem_id: str
    question: str
    answer: str
    p: float  # success probability of a continuation from a right prefix (also the pass rate from the question)
    length: int  # typical number of steps


@dataclass(frozen=True)
class SimSolution:
    task: SolutionTask
    first_error: int  # ground truth, -1 when every step is right


def build_prompt(question: str, steps: tuple[str, ...]) -> str:
    return prefix_prompt(TEMPLATE, question, steps, STEP_FORMAT)


def judge(text: str, reference: str) -> bool:
    match = _ANSWER.search(text.strip())
    return bool(match) and match.group(1) == reference


class SimulatedPolicy:
    """An :class:`steplabel.rollouts.engines.base.Engine` over a set of simulated problems."""

    model_name = "simulated-policy"

    def __init__(self, problems: Sequence[SimProblem], noise: float) -> None:
        self.by_question = {p.question: p for p in problems}
        self.noise = noise
        self.samples = 0

    def continuation(self, problem: SimProblem, prefix: Sequence[str], rng: random.Random) -> str:
        t = len(prefix)
        bad = any("[err]" in s for s in prefix)
        n_new = max(1, problem.length - t + rng.randint(-1, 1))
        wrong_at = -1
        if bad:
            right = rng.random() < self.noise
        else:
            right = rng.random() < problem.p
            if not right:
                wrong_at = rng.randrange(n_new)
        lines = []
        for j in range(n_new):
            tag = "[err]" if j == wrong_at else "[ok]"
            lines.append(f"Step {t + j + 1}: {tag} we work out part {rng.randint(1, 999)} of it.")
        answer = problem.answer if right else str(int(problem.answer) + 1 + rng.randrange(5))
        return "\n".join(lines) + f"\nThe answer is {answer}."

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results = []
        for request in requests:
            body = request.prompt[len("Question: "):]
            question, _, rest = body.partition("\n")
            problem = self.by_question[question]
            prefix = split_steps(rest, STEP_FORMAT) if rest.strip() else []
            completions = []
            for index in range(request.n):
                text = self.continuation(problem, prefix, random.Random(sample_seed(request.seed, index)))
                completions.append(Completion(text=text, finish_reason="stop", tokens=len(text.split())))
            self.samples += request.n
            results.append(GenerationResult(completions=completions))
        return results

    def close(self) -> None:
        pass


def make_problems(n: int, seed: int = 0, p_low: float = 0.45, p_high: float = 0.98,
                  min_len: int = 3, max_len: int = 12) -> list[SimProblem]:
    rng = random.Random(seed)
    return [
        SimProblem(f"sim{i}", f"Simulated problem {i}: find the number.", str(100 + i),
                   rng.uniform(p_low, p_high), rng.randint(min_len, max_len))
        for i in range(n)
    ]


def sample_solutions(policy: SimulatedPolicy, problems: Sequence[SimProblem], per_problem: int,
                     seed: int = 0) -> list[SimSolution]:
    """``per_problem`` solutions per problem: continuations of the bare question, with their ground truth."""
    out = []
    for problem in problems:
        for j in range(per_problem):
            rng = random.Random(derive_seed(seed, "solution", problem.problem_id, j))
            text = policy.continuation(problem, [], rng)
            steps = tuple(split_steps(text, STEP_FORMAT))
            first_error = next((i for i, s in enumerate(steps) if "[err]" in s), -1)
            task = SolutionTask(f"{problem.problem_id}-{j}", problem.problem_id, problem.question, problem.answer,
                                steps, judge(text, problem.answer))
            out.append(SimSolution(task, first_error))
    return out
