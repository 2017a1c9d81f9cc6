"""Stage 1: the policy samples N solutions per problem; each is cut into steps and its answer graded.

A sample that cannot be labelled (truncated, no steps, no final answer, a duplicate, an answer the
grader timed out on, an engine failure) becomes a :class:`SampleReject` with the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from steplabel.rollouts.engines.base import Engine, derive_seed
from steplabel.rollouts.grading import Grader, Verdict
from steplabel.rollouts.prompts import PromptConfig, solution_prompt
from steplabel.rollouts.sampling_params import SamplingConfig
from steplabel.rollouts.sources import Problem
from steplabel.rollouts.steps import split_steps


@dataclass(frozen=True)
class SampledSolution:
    solution_id: str
    problem: Problem
    text: str
    steps: tuple[str, ...]
    final_answer: str
    verdict: Verdict
    tokens: int


@dataclass(frozen=True)
class SampleReject:
    problem: Problem
    solution_id: str | None
    reason: str
    detail: str
    payload: str
    tokens: int
    sample_index: int | None = None  # None: the whole problem failed

    @property
    def item_id(self) -> str:
        """Unique per rejected item: a duplicate sample shares its solution_id with the kept one."""
        if self.sample_index is None:
            return self.problem.problem_id
        return f"{self.solution_id}#{self.sample_index}"


def solution_id(problem_id: str, text: str) -> str:
    return hashlib.sha256(f"{problem_id}\x00{text}".encode()).hexdigest()[:16]


def sample_solutions(
    engine: Engine, grader: Grader, problems: Sequence[Problem], prompt: PromptConfig, sampling: SamplingConfig,
    base_seed: int,
) -> tuple[list[SampledSolution], list[SampleReject]]:
    """``sampling.num_solutions`` samples per problem, cut into steps by ``prompt``'s format and graded."""
    requests = [
        sampling.request(solution_prompt(prompt.template, p.question), n=sampling.num_solutions, stop=prompt.stop,
                         seed=derive_seed(base_seed, p.problem_id, "solutions"))
        for p in problems
    ]
    solutions: list[SampledSolution] = []
    rejects: list[SampleReject] = []
    for problem, result in zip(problems, engine.generate(requests), strict=True):
        if result.error:
            rejects.append(SampleReject(problem, None, "engine_error", f"sampling solutions: {result.error}", "", 0))
            continue
        seen: set[str] = set()
        for index, completion in enumerate(result.completions):
            text = completion.text.strip()
            sid = solution_id(problem.problem_id, text)
            where = f"problem {problem.problem_id} sample {index}"

            def reject(reason: str, detail: str) -> None:
                rejects.append(SampleReject(problem, sid, reason, f"{where}: {detail}", text, completion.tokens, index))

            if sid in seen:
                reject("duplicate_solution", "same text as an earlier sample of this problem")
                continue
            seen.add(sid)
            if completion.finish_reason == "length":
                reject("truncated", f"hit max_tokens={sampling.max_tokens} before finishing")
                continue
            steps = tuple(split_steps(text, prompt.step_format, prompt.chunk_words))
            if not steps:
                reject("no_steps", f"no steps found with step_format={prompt.step_format!r}")
                continue
            extracted, verdict = grader.grade_response(text, problem.reference)
            if extracted is None:
                reject("no_final_answer", "no final answer found in the solution")
                continue
            if verdict.layer == "timeout":
                reject("grading_timeout", f"grading {extracted.value!r} against {problem.reference!r} timed out")
                continue
            solutions.append(
                SampledSolution(sid, problem, text, steps, extracted.value, verdict, completion.tokens)
            )
    return solutions, rejects
