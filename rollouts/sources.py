"""Problem sources: the built-in generator, a local JSONL/Parquet file, or a Hugging Face dataset.

Every record becomes either a :class:`Problem` or a :class:`SourceReject` that says what is wrong and
where (file, line, field), so a malformed record is reported instead of crashing or vanishing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steplabel.rollouts.answers import reference_answer
from steplabel.rollouts.builtin_problems import generate_problems
from steplabel.rollouts.sources_config import BuiltinSource, FileSource, HubSource


@dataclass(frozen=True)
class Problem:
    problem_id: str
    question: str
    reference: str
    source: str


@dataclass(frozen=True)
class SourceReject:
    item_id: str
    reason: str
    detail: str
    payload: str


def problem_id(source: str, question: str) -> str:
    """Stable id from the source name and the whitespace-normalised question."""
    normalised = " ".join(question.split())
    return hashlib.sha256(f"{source}\x00{normalised}".encode()).hexdigest()[:16]


def _payload(record: Any) -> str:
    try:
        return json.dumps(record, ensure_ascii=False, default=str)[:2000]
    except (TypeError, ValueError):
        return repr(record)[:2000]


def _reject(source: str, where: str, reason: str, detail: str, record: Any) -> SourceReject:
    item_id = hashlib.sha256(f"{source}\x00{where}".encode()).hexdigest()[:16]
    return SourceReject(item_id=item_id, reason=reason, detail=f"{where}: {detail}", payload=_payload(record))


def problems_from_records(
    records: Iterable[tuple[str, Any]],
    *,
    source: str,
    question_field: str,
    answer_field: str,
    answer_style: str,
) -> tuple[list[Problem], list[SourceReject]]:
    """Validate raw records; ``records`` yields (where, record) with ``where`` naming its position."""
    problems: list[Problem] = []
    rejects: list[SourceReject] = []
    seen: dict[str, str] = {}
    for where, record in records:
        if isinstance(record, SourceReject):
            rejects.append(record)
            continue
        if not isinstance(record, dict):
            rejects.append(_reject(source, where, "bad_input", f"expected an object, got {type(record).__name__}", record))
            continue
        question, raw_answer = record.get(question_field), record.get(answer_field)
        if not isinstance(question, str) or not question.strip():
            rejects.append(_reject(source, where, "bad_input", f"field {question_field!r} is missing or empty", record))
            continue
        if raw_answer is None or (isinstance(raw_answer, str) and not raw_answer.strip()):
            rejects.append(_reject(source, where, "bad_input", f"field {answer_field!r} is missing or empty", record))
            continue
        try:
            reference = reference_answer(str(raw_answer), answer_style)
        except ValueError as error:
            rejects.append(_reject(source, where, "unparsable_answer", f"field {answer_field!r}: {error}", record))
            continue
        pid = problem_id(source, question)
        if pid in seen:
            rejects.append(_reject(source, where, "duplicate_problem", f"same question as {seen[pid]}", record))
            continue
        seen[pid] = where
        problems.append(Problem(problem_id=pid, question=question.strip(), reference=reference, source=source))
    return problems, rejects


def _jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    """One record per non-blank line; a line that is not UTF-8 or not JSON is a reject, not the run's end."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                detail = f"not UTF-8 text (byte {raw[error.start]:#04x} at column {error.start + 1})"
                yield where, _reject(path.stem, where, "bad_input", detail, raw.decode("utf-8", "replace").strip())
                continue
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as error:
                yield where, _reject(path.stem, where, "bad_input", f"not valid JSON ({error.msg})", line.strip())


def _json_list_records(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"problem source {path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"problem source {path}: not UTF-8 text (byte offset {error.start})") from None
    if not isinstance(data, list):
        raise ValueError(f"problem source {path}: a .json source must hold a list of objects, got {type(data).__name__}")
    for number, record in enumerate(data):
        yield f"{path}[{number}]", record


def _parquet_records(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    for number, record in enumerate(pq.read_table(path).to_pylist()):
        yield f"{path}[row {number}]", record


def _limited(records: Iterator[tuple[str, Any]], limit: int | None) -> Iterator[tuple[str, Any]]:
    for count, item in enumerate(records):
        if limit is not None and count >= limit:
            return
        yield item


def load_problems(source_config: BuiltinSource | FileSource | HubSource) -> tuple[list[Problem], list[SourceReject]]:
    """Read the configured source (:mod:`steplabel.rollouts.sources_config` has the three kinds)."""
    kind = source_config.kind
    if kind == "builtin":
        generated = generate_problems(source_config.num_problems, source_config.seed)
        records = ((f"builtin[{i}]", {"question": p.question, "answer": str(p.answer)}) for i, p in enumerate(generated))
        return problems_from_records(
            records, source="builtin", question_field="question", answer_field="answer", answer_style="plain"
        )
    if kind == "file":
        path = Path(source_config.path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"problem source {path}: no such file")
        if path.suffix == ".parquet":
            records = _parquet_records(path)
        elif path.suffix == ".jsonl":
            records = _jsonl_records(path)
        elif path.suffix == ".json":
            records = _json_list_records(path)
        else:
            raise ValueError(f"problem source {path}: expected a .jsonl, .json (a list of objects) or .parquet file")
        return problems_from_records(
            _limited(records, source_config.limit),
            source=path.stem,
            question_field=source_config.question_field,
            answer_field=source_config.answer_field,
            answer_style=source_config.answer_style,
        )
    if kind == "hf":
        try:
            import datasets
        except ImportError as error:
            raise RuntimeError("a Hub problem source needs the `datasets` package: pip install datasets") from error
        dataset = datasets.load_dataset(source_config.dataset, source_config.subset, split=source_config.split)
        name = "/".join(filter(None, [source_config.dataset, source_config.subset, source_config.split]))
        records = ((f"{name}[{i}]", row) for i, row in enumerate(dataset))
        return problems_from_records(
            _limited(records, source_config.limit),
            source=name,
            question_field=source_config.question_field,
            answer_field=source_config.answer_field,
            answer_style=source_config.answer_style,
        )
    raise ValueError(f"unknown problem source kind {kind!r}")
