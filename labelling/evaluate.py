"""ProcessBench-style evaluation of first-error predictions (ProcessBench, Zheng et al., ACL 2025).

Pure functions; the ``steplabel evaluate`` command wires them to files, engines and configs.

* :func:`load_benchmark` reads a JSON list or a JSONL file of records ``{problem, steps, label, id?}``
  (``label``: 0-based index of the earliest wrong step, -1 when every step is right).
* :func:`processbench_metrics`: acc_err (exact index on records with label != -1), acc_cor (on label == -1)
  and their harmonic mean F1. An empty subset gives NaN for its accuracy and for F1. Records a labeler
  dropped are not scored (no placeholder label is guessed for them) and are counted in ``n_dropped``.
* :func:`evaluate_files`: the ``steplabel evaluate`` loop: every file predicted and scored, per file,
  overall and pooled.
* :func:`overall_metrics`: the mean of the per-file figures, ProcessBench's "average F1" over subsets; the
  F1 of all records pooled together is a different number, reported as ``pooled``.
* :func:`predict_first_errors` returns each record's predicted first error with one of the methods:

  - an MC labeler (math_shepherd, omegaprm, scan, rpe) run through the wave driver; needs an engine and
    the gold ``answer`` (or ``reference``) of each record. A record the labeler dropped (SCAN's
    low-confidence question or over-estimated wrong solution, OmegaPRM tree mode's question filter or
    spent question budget) is predicted as the drop reason, a ``str``;
  - ``judge``: the LLM judge of :mod:`steplabel.checks.judge` (critique, index in ``\\boxed{}``, vote over
    ``samples``); needs an engine, no gold answer. A record whose judge output had no valid index is
    predicted ``None``, which the metric counts as wrong on both subsets (as ProcessBench does);
  - ``sympy``: the first step :mod:`steplabel.checks.sympy_verifier` refutes, -1 if none; no engine, no answer;
  - ``hybrid``: an MC labeler's per-step labels (``config.labeler`` when it is an MC labeler, else
    math_shepherd) combined with the sympy verdicts by :func:`steplabel.checks.hybrid.combine`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from steplabel.checks.hybrid import combine
from steplabel.checks.hybrid_config import HybridConfig
from steplabel.checks.judge import JudgeFailure, JudgeItem, judge_solutions
from steplabel.checks.judge_config import JudgeConfig
from steplabel.checks.sympy_verifier import verify_solution
from steplabel.checks.sympy_verifier_config import SympyVerifierConfig
from steplabel.labelers.base import Dropped, SolutionTask, StepLabels
from steplabel.labelers.registry import LABELERS, make_labeler
from steplabel.labelling.config import LabellingConfig
from steplabel.labelling.shard import rollout_driver
from steplabel.rollouts.engines.base import Engine
from steplabel.rollouts.grading import Grader

TOOL_METHODS = ("judge", "sympy", "hybrid")

Prediction = int | str | None
"""A predicted first error (int); None when the method gave no answer (an unparsable judge output), which
is wrong on both subsets; a ``str`` when the labeler dropped the record: the reason, never scored."""


class BenchmarkError(ValueError):
    """A benchmark file or record that cannot be used; the message names the file and the record."""


def _check_record(record: Any, where: str) -> dict:
    if not isinstance(record, dict):
        raise BenchmarkError(f"{where}: a record must be an object, got {type(record).__name__}")
    for key in ("problem", "steps", "label"):
        if key not in record:
            raise BenchmarkError(f"{where}: missing field {key!r}")
    if not isinstance(record["problem"], str) or not record["problem"].strip():
        raise BenchmarkError(f"{where}: 'problem' must be a non-empty string")
    steps = record["steps"]
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise BenchmarkError(f"{where}: 'steps' must be a non-empty list of strings")
    label = record["label"]
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise BenchmarkError(f"{where}: 'label' must be an integer in [-1, {len(steps) - 1}], got {label!r}")
    return record


def load_benchmark(path: str | Path) -> list[dict]:
    """Records of a ProcessBench-style file: a JSON list, or JSONL (one object per line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BenchmarkError(f"{path}: cannot read: {error}") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise BenchmarkError(f"{path}: not valid JSON: {error}") from None
        if not isinstance(data, list) or not data:
            raise BenchmarkError(f"{path}: no records")
        return [_check_record(r, f"{path}: record {i}") for i, r in enumerate(data)]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise BenchmarkError(f"{path}: line {number}: not valid JSON: {error}") from None
        records.append(_check_record(record, f"{path}: line {number}"))
    if not records:
        raise BenchmarkError(f"{path}: no records")
    return records


def processbench_metrics(labels: Sequence[int], predictions: Sequence[Prediction]) -> dict[str, float | int]:
    """acc_err, acc_cor, F1 = 2 * acc_err * acc_cor / (acc_err + acc_cor), and the counts.

    A ``None`` prediction (e.g. an unparsable judge output) matches no label: wrong on both subsets. A
    dropped record (a ``str`` prediction) is left out of both subsets and counted in ``n_dropped``; ``n``
    counts every record.
    """
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    scored = [(g, p) for g, p in zip(labels, predictions, strict=True) if not isinstance(p, str)]
    err = [(g, p) for g, p in scored if g != -1]
    cor = [(g, p) for g, p in scored if g == -1]
    acc_err = sum(g == p for g, p in err) / len(err) if err else math.nan
    acc_cor = sum(p == -1 for _, p in cor) / len(cor) if cor else math.nan
    if math.isnan(acc_err) or math.isnan(acc_cor):
        f1 = math.nan
    else:
        f1 = 2 * acc_err * acc_cor / (acc_err + acc_cor) if acc_err + acc_cor else 0.0
    return {"acc_err": acc_err, "acc_cor": acc_cor, "f1": f1, "n": len(labels), "n_err": len(err), "n_cor": len(cor),
            "n_dropped": len(labels) - len(scored)}


def overall_metrics(per_file: Iterable[Mapping[str, float | int]]) -> dict[str, float | int]:
    """ProcessBench's overall figure: the mean over files of F1 (and of acc_err, acc_cor), so a large file
    does not outweigh a small one; NaN when any file's figure is NaN. Counts are summed over the files."""
    files = list(per_file)
    if not files:
        raise ValueError("no per-file metrics to average")
    out: dict[str, float | int] = {key: math.fsum(m[key] for m in files) / len(files)
                                   for key in ("acc_err", "acc_cor", "f1")}
    out.update({key: sum(int(m[key]) for m in files) for key in ("n", "n_err", "n_cor", "n_dropped")})
    out["files"] = len(files)
    return out


def evaluate_files(
    files: Mapping[str, Sequence[dict]],
    method: str,
    engine: Engine | None,
    grader: Grader | None,
    config: LabellingConfig,
    sink: Any = None,
) -> dict[str, Any]:
    """Predict and score every benchmark file: ``{method, files: {name: metrics}, overall, pooled}``.

    ``overall`` is :func:`overall_metrics` (mean of per-file figures), ``pooled`` the metrics of all records
    together. With ``sink`` (a text stream), one JSON line per record: ``id``, ``label``, ``predicted``. A
    method failure is a ``ValueError`` that names the file."""
    report: dict[str, Any] = {"method": method, "files": {}}
    all_labels: list[int] = []
    all_predictions: list[Prediction] = []
    for name, records in files.items():
        try:
            predictions = predict_first_errors(records, method, engine, grader, config)
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{name}: {error}") from error
        labels = [int(r["label"]) for r in records]
        report["files"][name] = processbench_metrics(labels, predictions)
        all_labels += labels
        all_predictions += predictions
        for index, (record, predicted) in enumerate(zip(records, predictions, strict=True)):
            if sink is not None:
                sink.write(json.dumps({"id": record.get("id", f"{name}:{index}"), "label": record["label"],
                                       "predicted": predicted}) + "\n")
    report["overall"] = overall_metrics(report["files"].values())
    report["pooled"] = processbench_metrics(all_labels, all_predictions)
    return report


def methods() -> list[str]:
    """Every method :func:`predict_first_errors` accepts."""
    return [*sorted(LABELERS), *TOOL_METHODS]


def _record_name(records: Sequence[dict], index: int) -> object:
    return records[index].get("id", index)


def _need_engine(engine: Engine | None, method: str) -> Engine:
    if engine is None:
        raise ValueError(f"method {method!r} needs an engine")
    return engine


def _sympy_config(config: LabellingConfig, override: SympyVerifierConfig | None) -> SympyVerifierConfig:
    return override or config.verification.sympy or SympyVerifierConfig()


def _hybrid_config(config: LabellingConfig, override: HybridConfig | None) -> HybridConfig:
    return override or config.verification.hybrid or HybridConfig()


def predict_first_errors(
    records: Sequence[dict],
    method: str,
    engine: Engine | None,
    grader: Grader | None,
    config: LabellingConfig,
    *,
    judge_config: JudgeConfig | None = None,
    sympy_config: SympyVerifierConfig | None = None,
    hybrid_config: HybridConfig | None = None,
    mc_method: str | None = None,
) -> list[Prediction]:
    """First-error predictions of ``method`` for ``records`` (``config``: the run config).

    MC labelers: ``config.labeler`` is used when its name matches ``method``, else that labeler's
    defaults. Prompts, step joining, rollout sampling and the seed come from ``config``. Each record
    needs its gold answer in ``answer`` or ``reference``; ``final_answer_correct`` is used when present,
    else the last step is graded. A record whose rollouts failed raises, naming it.

    ``judge``: ``judge_config``, else ``config.judge.critic`` if the run config has a judge stage, else :class:`JudgeConfig`
    defaults; seeds from ``config.seed``. A failed judge request raises, naming the record; an unparsable
    judgement is predicted ``None``. ``grader`` may be None.

    ``sympy``: ``sympy_config``, else ``config.verification.sympy``, else defaults. ``engine`` and
    ``grader`` may be None.

    ``hybrid``: runs ``mc_method`` (default: ``config.labeler``'s name if it is an MC labeler, else
    math_shepherd) as above, then ``combine(its labels, sympy verdicts, hybrid_config)`` (else
    ``config.verification.hybrid``, else :class:`HybridConfig` defaults).
    """
    if method not in LABELERS and method not in TOOL_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(methods())}")
    if method == "sympy":
        cfg = _sympy_config(config, sympy_config)
        return [verify_solution(list(r["steps"]), cfg).first_refuted for r in records]
    if method == "judge":
        return _judge_predictions(records, _need_engine(engine, method), config, judge_config)
    if method == "hybrid":
        if mc_method is None:
            mc_method = config.labeler.name if config.labeler.name in LABELERS else "math_shepherd"
        if mc_method not in LABELERS:
            raise ValueError(f"unknown MC method {mc_method!r}; valid: {', '.join(sorted(LABELERS))}")
        labelled = _mc_labels(records, mc_method, _need_engine(engine, method), grader, config)
        scfg, hcfg = _sympy_config(config, sympy_config), _hybrid_config(config, hybrid_config)
        out: list[Prediction] = []
        for record, step_labels in zip(records, labelled, strict=True):
            if isinstance(step_labels, Dropped):
                out.append(step_labels.reason)
                continue
            labelled_steps = list(record["steps"])[: len(step_labels.labels)]  # SCAN negatives stop at the error
            verdicts = verify_solution(labelled_steps, scfg).verdicts
            out.append(combine(step_labels.labels, verdicts, hcfg)[1])
        return out
    labelled = _mc_labels(records, method, _need_engine(engine, method), grader, config)
    return [x.reason if isinstance(x, Dropped) else x.first_error for x in labelled]


def _judge_predictions(
    records: Sequence[dict], engine: Engine, config: LabellingConfig, judge_config: JudgeConfig | None
) -> list[int | None]:
    cfg = judge_config or (config.judge.critic if config.judge is not None else None) or JudgeConfig()
    items = [JudgeItem(f"r{i}", r["problem"], tuple(r["steps"])) for i, r in enumerate(records)]
    verdicts = judge_solutions(engine, items, cfg, base_seed=config.seed)
    out: list[int | None] = []
    for index, item in enumerate(items):
        verdict = verdicts[item.solution_id]
        if isinstance(verdict, JudgeFailure):
            raise RuntimeError(f"record {_record_name(records, index)}: judging failed: {verdict.reason}")
        out.append(verdict.first_error)
    return out


def _mc_labels(
    records: Sequence[dict], method: str, engine: Engine, grader: Grader | None, config: LabellingConfig
) -> list[StepLabels | Dropped]:
    """Run MC labeler ``method`` over the records; one :class:`StepLabels` (or :class:`Dropped`) per record,
    in order."""
    if grader is None:
        raise ValueError(f"method {method!r} needs a grader to grade its rollouts")
    config_class, _ = LABELERS[method]
    labeler_config = config.labeler if config.labeler.name == method else config_class()
    tasks = []
    for index, record in enumerate(records):
        reference = record.get("answer", record.get("reference"))
        name = _record_name(records, index)
        if reference is None or not str(reference).strip():
            raise BenchmarkError(f"record {name}: method {method!r} needs the gold answer in 'answer' or 'reference'")
        reference = str(reference)
        steps = tuple(record["steps"])
        if "final_answer_correct" in record:
            final_correct = bool(record["final_answer_correct"])
        else:
            final_correct = grader.grade_response(steps[-1], reference)[1].correct
        problem_id = hashlib.sha256(record["problem"].encode()).hexdigest()[:16]
        tasks.append(SolutionTask(f"r{index}", problem_id, record["problem"], reference, steps, final_correct))

    prompt = config.prompt
    labeler = make_labeler(labeler_config, step_format=prompt.step_format, chunk_words=prompt.chunk_words)
    result = rollout_driver(config, engine, grader).run(tasks, labeler)
    out = []
    for index, task in enumerate(tasks):
        if task.solution_id not in result.labels:
            name = _record_name(records, index)
            raise RuntimeError(f"record {name}: labelling failed: {result.failures.get(task.solution_id)}")
        out.append(result.labels[task.solution_id])
    return out
