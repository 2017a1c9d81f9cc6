"""One shard of work as plain functions: sample, label, and turn the results into table rows.

The Prefect tasks in :mod:`steplabel.flows.pipeline` call these; tests call them directly with a scripted engine.
Every problem and sample of the shard ends up either in ``step_labels`` or in ``rejects`` with a reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import pyarrow as pa

from steplabel.checks.code_verifier import CodeVerdict, code_check_run
from steplabel.checks.consensus import consensus
from steplabel.checks.hybrid import combine
from steplabel.checks.hybrid_config import HybridConfig
from steplabel.checks.judge import JudgeFailure, JudgeItem, judge_solutions
from steplabel.checks.sympy_verifier import verify_solution
from steplabel.labelers.base import Dropped, SolutionTask, StepLabels, first_false
from steplabel.labelers.driver import Scheduling, WaveDriver, WaveStats
from steplabel.labelers.registry import make_labeler
from steplabel.labelers.scan import policy_pass_counts
from steplabel.labelling.config import LabellingConfig
from steplabel.rollouts.answers import extract_answer
from steplabel.rollouts.engines.base import Engine
from steplabel.rollouts.grading import Grader
from steplabel.rollouts.prompts import prefix_prompt
from steplabel.rollouts.sampling import SampledSolution, SampleReject, sample_solutions
from steplabel.rollouts.sources import Problem, SourceReject
from steplabel.storage.schema import REJECTS, REJECTS_SCHEMA, STEP_LABELS, STEP_LABELS_SCHEMA
from steplabel.storage.strict import code_version


@dataclass(frozen=True)
class ShardPlan:
    shard_id: str
    problems: tuple[Problem, ...]


def plan_shards(problems: Sequence[Problem], shard_size: int, config_hash: str) -> list[ShardPlan]:
    """Deterministic shards: the same problems and config always give the same shard ids."""
    plans = []
    for start in range(0, len(problems), shard_size):
        chunk = tuple(problems[start : start + shard_size])
        digest = hashlib.sha256("\x00".join([config_hash, *(p.problem_id for p in chunk)]).encode())
        plans.append(ShardPlan(shard_id=digest.hexdigest()[:16], problems=chunk))
    return plans


@dataclass(frozen=True)
class RunContext:
    """What every row of a run shares."""

    run_id: str
    config_hash: str
    created_at: datetime

    @staticmethod
    def now(run_id: str, config_hash: str) -> "RunContext":
        return RunContext(run_id, config_hash, datetime.now(UTC))


def _reject_row(ctx: RunContext, shard_id: str, *, item_id: str, problem_id: str | None, solution_id: str | None,
                stage: str, reason: str, detail: str, payload: str, tokens: int = 0, rollouts: int = 0) -> dict:
    return {
        "item_id": item_id,
        "problem_id": problem_id,
        "solution_id": solution_id,
        "shard_id": shard_id,
        "run_id": ctx.run_id,
        "stage": stage,
        "reason": reason,
        "detail": detail,
        "payload": payload,
        "config_hash": ctx.config_hash,
        "created_at": ctx.created_at,
        "rollouts_used": rollouts,
        "tokens_generated": tokens,
    }


def source_reject_table(rejects: Sequence[SourceReject], ctx: RunContext, shard_id: str) -> pa.Table:
    rows = [
        _reject_row(ctx, shard_id, item_id=r.item_id, problem_id=None, solution_id=None, stage="source",
                    reason=r.reason, detail=r.detail, payload=r.payload)
        for r in rejects
    ]
    return pa.Table.from_pylist(rows, schema=REJECTS_SCHEMA)


def _sample_reject_row(r: SampleReject, ctx: RunContext, shard_id: str) -> dict:
    return _reject_row(ctx, shard_id, item_id=r.item_id, problem_id=r.problem.problem_id,
                       solution_id=r.solution_id, stage="sampling", reason=r.reason, detail=r.detail,
                       payload=r.payload, tokens=r.tokens)


def _label_row(sol: SampledSolution, labels: StepLabels, config: LabellingConfig, ctx: RunContext, shard_id: str,
               policy_model: str, completer_model: str) -> dict:
    return {
        "problem_id": sol.problem.problem_id,
        "solution_id": sol.solution_id,
        "shard_id": shard_id,
        "run_id": ctx.run_id,
        "prompt": sol.problem.question,
        "completions": list(sol.steps[: len(labels.labels)]),  # SCAN negatives stop at the error
        "labels": labels.labels,
        "labeler_labels": list(labels.labels),
        "mc_scores": labels.mc_scores,
        "mc_correct": labels.mc_correct,
        "mc_total": labels.mc_total,
        "first_error": labels.first_error,
        "labeler": config.labeler.name,
        "soft_labels": labels.soft_labels,
        "labeler_details": json.dumps(labels.extra, sort_keys=True, default=str) if labels.extra else None,
        "tool_verdicts": None,
        "tool_evidence": None,
        "tool_first_error": None,
        "tool_checks": None,
        "judge_first_error": None,
        "judge_rationale": None,
        "consensus": None,
        "final_answer": sol.final_answer,
        "reference_answer": sol.problem.reference,
        "final_correct": sol.verdict.correct,
        "grader_layer": sol.verdict.layer,
        "policy_model": policy_model,
        "completer_model": completer_model,
        "judge_model": None,
        "sampling": json.dumps(
            {"solutions": config.sampling.model_dump(), "rollouts": config.rollout.model_dump(),
             "labeler": config.labeler.model_dump()},
            sort_keys=True,
        ),
        "seed": config.seed,
        "config_hash": ctx.config_hash,
        "code_version": code_version(),
        "created_at": ctx.created_at,
        "rollouts_used": labels.rollouts_used,
        "tokens_generated": sol.tokens + labels.tokens_generated,
    }


def filter_reason(labels: StepLabels | Dropped) -> str | None:
    """Why the labeler itself dropped a solution (:class:`Dropped`), None when it labelled it."""
    return labels.reason if isinstance(labels, Dropped) else None


def verify_rows(rows: list[dict], config: LabellingConfig, code_engine: Engine | None = None) -> None:
    """Tool verification of labelled rows: sympy verdicts per step, then (if configured) sandboxed
    model-written code checks for the steps sympy left unknown, every row's checks in one wave of the
    driver; optionally merged into the labels."""
    settings = config.verification
    if settings.sympy is None and settings.code is None:
        return
    to_code: dict[str, list[int]] = {}
    for row in rows:
        n_steps = len(row["completions"])
        verdicts: list[str] = ["unknown"] * n_steps
        evidence: list[str | None] = [None] * n_steps
        if settings.sympy is not None:
            checked = verify_solution(row["completions"], settings.sympy)
            verdicts, evidence = list(checked.verdicts), list(checked.evidence)
        row["tool_verdicts"], row["tool_evidence"] = verdicts, evidence
        unknown = [index for index, verdict in enumerate(verdicts) if verdict == "unknown"]
        if settings.code is not None and code_engine is not None and unknown:
            to_code[row["solution_id"]] = unknown
    by_id = {row["solution_id"]: row for row in rows}
    checks = {sid: code_check_run(by_id[sid]["prompt"], by_id[sid]["completions"], settings.code, indices=steps)
              for sid, steps in to_code.items()}
    coded = WaveDriver(code_engine).run_checks(checks).labels if checks and code_engine else {}
    for sid, steps in to_code.items():
        row = by_id[sid]
        for index, code_verdict in zip(steps, coded[sid], strict=True):
            row["tokens_generated"] += code_verdict.tokens
            row["tool_verdicts"][index] = code_verdict.verdict
            row["tool_evidence"][index] = code_verdict.evidence if code_verdict.verdict == "refuted" else None
        row["tool_checks"] = json.dumps([code_check_record(i, v) for i, v in zip(steps, coded[sid], strict=True)])
    for row in rows:
        row["tool_first_error"] = first_false([verdict != "refuted" for verdict in row["tool_verdicts"]])
        if settings.hybrid is not None:
            apply_hybrid(row, settings.hybrid)


def apply_hybrid(row: dict, config: HybridConfig) -> None:
    """Export labels that never contradict the tools: ``labels`` and ``first_error`` from the labeler's own
    labels (``labeler_labels``, left as they are) and the tool verdicts. A step whose label the rule changed
    gets the hard target of its new label in ``soft_labels`` (a refuted step cannot keep a high soft target);
    the others keep the labeler's. Idempotent: it always starts again from ``labeler_labels``."""
    own = row["labeler_labels"]
    row["labels"], row["first_error"] = combine(own, row["tool_verdicts"], config)
    row["soft_labels"] = [soft if new == old else float(bool(new))
                          for soft, new, old in zip(row["soft_labels"], row["labels"], own, strict=True)]


CHECK_OUTPUT_CHARS = 2000  # of each sandbox stream kept per check: the end, where the error is


def code_check_record(step: int, checked: CodeVerdict) -> dict:
    """What a code check did, for ``tool_checks``: the model's code and what the sandbox made of it."""
    sandbox = checked.sandbox
    return {
        "step": step,
        "verdict": checked.verdict,
        "evidence": checked.evidence,
        "code": checked.code,
        "status": sandbox.status if sandbox else None,
        "exit_code": sandbox.exit_code if sandbox else None,
        "stdout": sandbox.stdout[-CHECK_OUTPUT_CHARS:] if sandbox else None,
        "stderr": sandbox.stderr[-CHECK_OUTPUT_CHARS:] if sandbox else None,
        "wall_s": round(sandbox.wall_s, 3) if sandbox else None,
    }


PER_STEP_COLUMNS = ("completions", "labels", "labeler_labels", "mc_scores", "mc_correct", "mc_total", "soft_labels",
                    "tool_verdicts", "tool_evidence")


def truncate_steps(row: dict, n_steps: int) -> None:
    """Keep the first ``n_steps`` steps of a row in every per-step column (consensus truncation)."""
    for column in PER_STEP_COLUMNS:
        if row.get(column) is not None:
            row[column] = row[column][:n_steps]
    if row.get("tool_first_error") is not None and row["tool_first_error"] >= n_steps:
        row["tool_first_error"] = -1
    if row.get("tool_checks"):
        row["tool_checks"] = json.dumps([c for c in json.loads(row["tool_checks"]) if c["step"] < n_steps])


def verify_table(table: pa.Table, config: LabellingConfig) -> pa.Table:
    """Tool verification of labelled rows that were staged unverified (the engine-free finishing stage)."""
    rows = table.to_pylist()
    verify_rows(rows, config)
    return pa.Table.from_pylist(rows, schema=STEP_LABELS_SCHEMA)


def judge_and_filter(
    label_rows: list[dict], config: LabellingConfig, ctx: RunContext, shard_id: str, judge: Engine
) -> tuple[list[dict], list[dict]]:
    """Judge every labelled row in one wave of the driver; keep the rows where judge and MC agree.

    Returns (kept rows, reject rows). A judge failure or a disagreement is a reject with its reason.
    """
    stage = config.judge
    assert stage is not None
    items = [JudgeItem(r["solution_id"], r["prompt"], tuple(r["completions"])) for r in label_rows]
    verdicts = judge_solutions(judge, items, stage.critic, base_seed=config.seed)
    kept, rejected = [], []
    for row in label_rows:
        verdict = verdicts[row["solution_id"]]
        if isinstance(verdict, JudgeFailure):
            reason, detail = "engine_error", f"judge request failed: {verdict.reason}"
        else:
            row.update(judge_first_error=verdict.first_error, judge_rationale=verdict.rationale,
                       judge_model=judge.model_name)
            row["tokens_generated"] += verdict.tokens
            decision = consensus(row["first_error"], verdict.first_error, row["labels"], stage.consensus)
            row["consensus"] = decision.keep
            if decision.keep:
                if decision.labels is not None and len(decision.labels) < len(row["labels"]):
                    truncate_steps(row, len(decision.labels))
                kept.append(row)
                continue
            reason = (decision.reason or "consensus_disagree").split(":")[0]
            detail = f"solution {row['solution_id']}: {decision.reason}"
            if verdict.first_error is None:
                statuses = ", ".join(sorted({p.status for p in verdict.parses})) or "no output"
                detail += f" (no usable first-error index in {verdict.samples} judge samples: {statuses})"
        rejected.append(
            _reject_row(ctx, shard_id, item_id=row["solution_id"], problem_id=row["problem_id"],
                        solution_id=row["solution_id"], stage="judge", reason=reason, detail=detail,
                        payload=json.dumps({"steps": row["completions"], "labels": row["labels"],
                                            "judge_rationale": row["judge_rationale"],
                                            "tool_verdicts": row["tool_verdicts"],
                                            "tool_checks": json.loads(row["tool_checks"] or "null"),
                                            "labeler_details": json.loads(row["labeler_details"] or "null")}),
                        tokens=row["tokens_generated"], rollouts=row["rollouts_used"])
        )
    return kept, rejected


def rollout_judge(grader: Grader) -> Callable[[str, str], bool]:
    """Grades a rollout continuation: extract its final answer, compare with the reference."""

    def judge(continuation: str, reference: str) -> bool:
        extracted = extract_answer(continuation)
        return extracted is not None and grader.grade(extracted.value, reference).correct

    return judge


def rollout_driver(
    config: LabellingConfig, completer: Engine, grader: Grader, on_wave: Callable[[WaveStats], None] | None = None,
    scheduling: Scheduling = "auto",
) -> WaveDriver:
    """The wave driver a run's labeler uses: the run's prompt, rollout sampling and grader."""
    prompt = config.prompt
    return WaveDriver(
        completer,
        build_prompt=lambda question, steps: prefix_prompt(prompt.template, question, steps, prompt.step_format),
        judge=rollout_judge(grader),
        sampling=config.rollout,
        on_wave=on_wave,
        scheduling=scheduling,
        stop=prompt.stop,
        base_seed=config.seed,
    )


@dataclass(frozen=True)
class ShardReport:
    shard_id: str
    problems: int
    solutions: int
    rejects: int
    rollouts: int
    tokens: int

    def as_dict(self) -> dict:
        return asdict(self)


def label_shard(
    plan: ShardPlan,
    config: LabellingConfig,
    ctx: RunContext,
    *,
    policy: Engine,
    completer: Engine,
    grader: Grader,
    judge: Engine | None = None,
    on_wave: Callable[[WaveStats], None] | None = None,
    verify: bool = True,
    scheduling: Scheduling = "auto",
) -> tuple[dict[str, pa.Table], ShardReport]:
    """Sample, label and build both tables for one shard. ``scheduling`` (the run's
    ``orchestration.scheduling``) changes how the engine is fed, never the rows."""
    solutions, sample_rejects = sample_solutions(policy, grader, plan.problems, config.prompt, config.sampling,
                                                 config.seed)
    tasks = [
        SolutionTask(s.solution_id, s.problem.problem_id, s.problem.question, s.problem.reference, s.steps,
                     s.verdict.correct)
        for s in solutions
    ]
    labeler = make_labeler(config.labeler, step_format=config.prompt.step_format, chunk_words=config.prompt.chunk_words,
                           policy_samples=policy_pass_counts(solutions, sample_rejects))
    outcome = rollout_driver(config, completer, grader, on_wave, scheduling).run(tasks, labeler)

    label_rows, reject_rows = [], [_sample_reject_row(r, ctx, plan.shard_id) for r in sample_rejects]
    for sol in solutions:
        labels = outcome.labels.get(sol.solution_id)
        reason = filter_reason(labels) if labels else None
        if labels and reason:
            reject_rows.append(
                _reject_row(ctx, plan.shard_id, item_id=sol.solution_id, problem_id=sol.problem.problem_id,
                            solution_id=sol.solution_id, stage="labeling", reason=reason,
                            detail=f"solution {sol.solution_id}: dropped by {config.labeler.name} ({reason})",
                            payload=sol.text, tokens=sol.tokens + labels.tokens_generated,
                            rollouts=labels.rollouts_used)
            )
        elif isinstance(labels, StepLabels):
            label_rows.append(_label_row(sol, labels, config, ctx, plan.shard_id, policy.model_name,
                                         completer.model_name))
        else:
            reject_rows.append(
                _reject_row(ctx, plan.shard_id, item_id=sol.solution_id, problem_id=sol.problem.problem_id,
                            solution_id=sol.solution_id, stage="labeling", reason="engine_error",
                            detail=f"solution {sol.solution_id}: {outcome.failures[sol.solution_id]}",
                            payload=sol.text, tokens=sol.tokens + outcome.spent.get(sol.solution_id, (0, 0))[1],
                            rollouts=outcome.spent.get(sol.solution_id, (0, 0))[0])
            )
    if verify:
        verify_rows(label_rows, config, completer)
    if config.judge is not None and label_rows:
        if judge is None:
            raise ValueError("the run config has a judge stage but no judge engine was given")
        label_rows, judge_rejects = judge_and_filter(label_rows, config, ctx, plan.shard_id, judge)
        reject_rows.extend(judge_rejects)
    tables = {
        STEP_LABELS: pa.Table.from_pylist(label_rows, schema=STEP_LABELS_SCHEMA),
        REJECTS: pa.Table.from_pylist(reject_rows, schema=REJECTS_SCHEMA),
    }
    report = ShardReport(
        shard_id=plan.shard_id,
        problems=len(plan.problems),
        solutions=len(label_rows),
        rejects=len(reject_rows),
        rollouts=sum(r["rollouts_used"] for r in label_rows),
        tokens=sum(r["tokens_generated"] for r in label_rows) + sum(r["tokens_generated"] for r in reject_rows),
    )
    return tables, report
