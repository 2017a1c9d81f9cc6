"""Math-Shepherd (``peiyi9979/Math-Shepherd``): ``input``, ``label``, ``task``, all strings.

``input`` = question + " " + "\\n".join(f"Step {k}: {step} ки"); the last step ends with the solution's answer
as upstream writes it, on that step's own line: ``Step K: ... The answer is: X ки``. ``label`` is the same
text with each ``ки`` replaced by ``+`` (good) or ``-`` (bad). ``task`` names the problem source as upstream
does (``GSM8K``, ``MATH``; see :func:`task_name`).

Steps get a ``Step k: `` prefix because the upstream converters (TRL ``examples/datasets/math_shepherd.py``,
openr ``preprocess``) split the question from the steps at ``Step 1: ``; a step that already starts with
``Step k:`` (its own number) is not prefixed twice, and a last step that already ends with
``The answer is: X`` gets no second answer line. The importer strips both, so such a step comes back without
them (the only lossy cases; re-exporting gives the identical text).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from steplabel.storage.exporters.base import (
    BinaryOptions,
    ExportFormat,
    Records,
    as_records,
    binary,
    check_no_tag,
    solution_rows,
    stepwise,
)

MATH_SHEPHERD_TAG = "ки"
ANSWER = " The answer is: "
__all__ = ["MATH_SHEPHERD_TAG", "MathShepherdOptions", "from_math_shepherd", "task_name", "to_math_shepherd"]
SCHEMA = pa.schema([("input", pa.string()), ("label", pa.string()), ("task", pa.string())])

_PREFIX_RE = re.compile(r"^Step (\d+): ")


class MathShepherdOptions(BinaryOptions):
    """``neutral``: what a null label becomes; ``task``: the ``task`` column (default: from the run config)."""

    task: str = "unknown"


def task_name(config: dict[str, Any] | None) -> str:
    """Upstream's ``task`` for a run config's ``source``: ``GSM8K`` or ``MATH`` when the dataset name or file
    path says so (``openai/gsm8k``, ``HuggingFaceH4/MATH-500``, ``.../math500/test.jsonl``), ``arithmetic``
    for the built-in word problems, else the dataset's own name (file stem, or the Hub name's last part)."""
    src = (config or {}).get("source") or {}
    kind = src.get("kind")
    if kind == "builtin":
        return "arithmetic"
    name = str(src.get("dataset") or "") if kind == "hf" else str(src.get("path") or "") if kind == "file" else ""
    tokens = re.split(r"[^a-z0-9]+", name.lower())
    if any(t.startswith("gsm8k") for t in tokens):
        return "GSM8K"
    if any(re.fullmatch(r"math\d*", t) for t in tokens):
        return "MATH"
    if kind == "file":
        return Path(name).name.split(".")[0] or "unknown"
    return name.rstrip("/").split("/")[-1] or "unknown"


def _step(k: int, step: str) -> str:
    m = _PREFIX_RE.match(step)
    return step if m and int(m.group(1)) == k else f"Step {k}: {step}"


def _with_answer(step: str, answer: str | None) -> str:
    if answer is None or step.endswith(f"{ANSWER.strip()} {answer}"):
        return step
    return f"{step}{ANSWER}{answer}"


def _records(df: pl.DataFrame, opts: MathShepherdOptions) -> Records:
    out = []
    for i, r in enumerate(solution_rows(df, ["final_answer"])):
        check_no_tag(r["prompt"], MATH_SHEPHERD_TAG, "math-shepherd", r, i, "prompt")
        steps = [_step(k, s) for k, s in enumerate(r["completions"], start=1)]
        if steps:
            steps[-1] = _with_answer(steps[-1], r["final_answer"])
        for s in steps:
            check_no_tag(s, MATH_SHEPHERD_TAG, "math-shepherd", r, i, "steps")
        marks = ["+" if binary(lab, opts.neutral) else "-" for lab in r["labels"]]
        body = "\n".join(f"{s} {MATH_SHEPHERD_TAG}" for s in steps)
        label = "\n".join(f"{s} {m}" for s, m in zip(steps, marks))
        out.append({"input": f"{r['prompt']} {body}", "label": f"{r['prompt']} {label}", "task": opts.task})
    return out


def _parse(inp: str, lab: str) -> tuple[str, list[str], list[bool], str | None]:
    pieces = inp.split(f" {MATH_SHEPHERD_TAG}")
    if len(pieces) == 1:  # a solution without steps was exported as prompt + " "
        return (inp[:-1] if inp.endswith(" ") else inp), [], [], None
    if pieces[-1] != "":
        raise ValueError(f"math-shepherd input does not end with ' {MATH_SHEPHERD_TAG}': {inp[-80:]!r}")
    # label text = input with each 2-char tag replaced by a 1-char mark: tag j sits at (its offset - j).
    labels, offset = [], 0
    for j, piece in enumerate(pieces[:-1]):
        offset += len(piece) + 1  # the space before the tag
        mark = lab[offset - j] if offset - j < len(lab) else ""
        if mark not in ("+", "-"):
            raise ValueError(f"math-shepherd label has {mark!r} where step {j + 1}'s '+'/'-' should be")
        labels.append(mark == "+")
        offset += len(MATH_SHEPHERD_TAG)
    first = pieces[0]
    cut = first.rfind(" Step 1: ")
    if cut < 0:
        raise ValueError(f"math-shepherd input has no ' Step 1: ' before its first tag: {first[:80]!r}")
    question, segments = first[:cut], [first[cut + 1 :]] + pieces[1:-1]
    steps = []
    for k, seg in enumerate(segments, start=1):
        if k > 1:
            if not seg.startswith("\n"):
                raise ValueError(f"math-shepherd step {k} does not start on a new line: {seg[:40]!r}")
            seg = seg[1:]
        prefix = f"Step {k}: "
        steps.append(seg[len(prefix) :] if seg.startswith(prefix) else seg)
    last, sep, answer = steps[-1].rpartition(ANSWER)
    if sep:
        steps[-1] = last
    return question, steps, labels, (answer if sep else None)


def to_math_shepherd(df: pl.DataFrame, **options: Any) -> pl.DataFrame:
    """Math-Shepherd rows of ``step_labels`` rows (options: :class:`MathShepherdOptions`)."""
    return pl.from_arrow(FORMAT.table(df, **options))  # type: ignore[return-value]


def from_math_shepherd(data: pl.DataFrame | Records) -> pl.DataFrame:
    """``prompt``, ``completions``, ``labels`` and ``final_answer`` (the ``The answer is:`` value, else null)
    of Math-Shepherd rows, ours or upstream's."""
    out = []
    for r in as_records(data, ["input", "label"]):
        q, steps, labels, answer = _parse(r["input"], r["label"])
        out.append({"prompt": q, "completions": steps, "labels": labels, "final_answer": answer})
    return stepwise(out, {"final_answer": pl.String})


FORMAT = ExportFormat(
    name="math-shepherd",
    description=(
        "Math-Shepherd (`peiyi9979/Math-Shepherd`): `input` = question + ' ' + the steps (`Step k: ...`), each "
        "followed by ` ки`, joined by newlines, the last step ending with ` The answer is: X`; `label` = the "
        "same text with `ки` replaced by `+` / `-`; `task` = the problem source (`GSM8K`, `MATH`, ...)."
    ),
    options=MathShepherdOptions,
    records=_records,
    schema=lambda opts: SCHEMA,
    read=from_math_shepherd,
    columns=("final_answer",),
    config_defaults=lambda config: {"task": task_name(config)},
)
