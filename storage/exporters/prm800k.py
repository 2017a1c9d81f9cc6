"""PRM800K (``openai/prm800k`` ``data/phase{1,2}_*.jsonl``): JSON lines, one labelled solution per line::

    {"labeler": UUID, "timestamp": ISO-8601, "generation": null,
     "is_quality_control_question": false, "is_initial_screening_question": false,
     "question": {"problem", "ground_truth_solution": null, "ground_truth_answer",
                  "pre_generated_steps": [every step], "pre_generated_answer", "pre_generated_verifier_score"},
     "label": {"steps": [{"completions": [{"text", "rating": 1|0|-1, "flagged": false}],
                          "human_completion": null, "chosen_completion": 0 | null}, ...],
               "total_time": 0, "finish_reason": "found_error" | "solution"}}

Our mapping: ``labeler`` is a UUID (openr's reader parses it as one) derived from the labeler's name
(uuid5 of ``steplabel:<labeler>``); ``timestamp`` the row's ``created_at`` in UTC without offset, as upstream;
``generation`` null (phase 1 style: there were no PRM-selected generations); ``ground_truth_solution`` null
(the store keeps the reference answer, not a reference solution); ``pre_generated_steps`` all the
solution's steps, ``pre_generated_answer`` its extracted ``final_answer``, ``pre_generated_verifier_score`` the
lowest step MC value (the min-aggregated MC score of the solution; null without MC values). ``rating`` is 1
for a good step, -1 for a bad one and 0 ("neutral") only for a step the labeler left undecided (null).

``finish_reason`` is ``found_error`` when some step is rated -1: as in upstream's phase 2, labelling stopped at
that step, so by default (``stop_at_first_error=True``) the steps end there and the erroneous step is listed
the way upstream lists it, ``chosen_completion: null`` (no completion was chosen to go on with). With
``stop_at_first_error=False`` every step is listed, each chosen (lossless, but not what upstream's
``found_error`` means). Otherwise ``finish_reason`` is ``solution``. ``total_time`` is 0 (no human labelling
time). The importer maps rating 0 back to null, so the round trip of the listed steps is exact.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import polars as pl
import pyarrow as pa

from steplabel.storage.exporters.base import ExportFormat, ExportOptions, Records, as_records, solution_rows, stepwise

__all__ = ["Prm800kOptions", "from_prm800k", "labeler_uuid", "to_prm800k"]

_RATING = {True: 1, False: -1, None: 0}
_FROM_RATING = {1: True, -1: False, 0: None}
_LABELER_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/openai/prm800k")

_COMPLETION = pa.struct([("text", pa.string()), ("rating", pa.int64()), ("flagged", pa.bool_())])
#: phase 1's human-written step (always null here): a completion plus ``source: "human"``
_HUMAN = pa.struct([("text", pa.string()), ("rating", pa.int64()), ("source", pa.string()), ("flagged", pa.bool_())])
SCHEMA = pa.schema(
    [
        ("labeler", pa.string()),
        ("timestamp", pa.string()),
        ("generation", pa.int64()),
        ("is_quality_control_question", pa.bool_()),
        ("is_initial_screening_question", pa.bool_()),
        (
            "question",
            pa.struct(
                [
                    ("problem", pa.string()),
                    ("ground_truth_solution", pa.string()),
                    ("ground_truth_answer", pa.string()),
                    ("pre_generated_steps", pa.list_(pa.string())),
                    ("pre_generated_answer", pa.string()),
                    ("pre_generated_verifier_score", pa.float64()),
                ]
            ),
        ),
        (
            "label",
            pa.struct(
                [
                    (
                        "steps",
                        pa.list_(
                            pa.struct(
                                [
                                    ("completions", pa.list_(_COMPLETION)),
                                    ("human_completion", _HUMAN),
                                    ("chosen_completion", pa.int64()),
                                ]
                            )
                        ),
                    ),
                    ("total_time", pa.int64()),
                    ("finish_reason", pa.string()),
                ]
            ),
        ),
    ]
)


class Prm800kOptions(ExportOptions):
    """``stop_at_first_error``: list steps up to the first bad one (upstream's ``found_error``), or all."""

    stop_at_first_error: bool = True


def labeler_uuid(labeler: str | None) -> str:
    """The PRM800K ``labeler`` of one of our labelers: a stable UUID of its name."""
    return str(uuid.uuid5(_LABELER_NS, f"steplabel:{labeler or 'unknown'}"))


def _timestamp(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds")  # upstream always writes microseconds
    return None if value is None else str(value)


def _score(mc: list[float | None] | None) -> float | None:
    values = [float(v) for v in mc or [] if v is not None]
    return min(values) if values else None


def _steps(steps: list[str], labels: list[bool | None], stop_at_first_error: bool) -> list[dict[str, Any]]:
    out = []
    for step, lab in zip(steps, labels):
        rating = _RATING[None if lab is None else bool(lab)]
        stop = stop_at_first_error and rating == -1
        out.append(
            {
                "completions": [{"text": step, "rating": rating, "flagged": False}],
                "human_completion": None,
                "chosen_completion": None if stop else 0,
            }
        )
        if stop:
            break
    return out


def _records(df: pl.DataFrame, opts: Prm800kOptions) -> Records:
    out = []
    for r in solution_rows(df, [c for c in FORMAT.columns if c in df.columns]):
        steps = _steps(r["completions"], r["labels"], opts.stop_at_first_error)
        found = any(s["completions"][0]["rating"] == -1 for s in steps)
        out.append(
            {
                "labeler": labeler_uuid(r.get("labeler")),
                "timestamp": _timestamp(r.get("created_at")),
                "generation": None,
                "is_quality_control_question": False,
                "is_initial_screening_question": False,
                "question": {
                    "problem": r["prompt"],
                    "ground_truth_solution": None,
                    "ground_truth_answer": r.get("reference_answer"),
                    "pre_generated_steps": list(r["completions"]),
                    "pre_generated_answer": r.get("final_answer"),
                    "pre_generated_verifier_score": _score(r.get("mc_scores")),
                },
                "label": {"steps": steps, "total_time": 0, "finish_reason": "found_error" if found else "solution"},
            }
        )
    return out


def to_prm800k(df: pl.DataFrame, **options: Any) -> Records:
    """PRM800K records of ``step_labels`` rows (options: :class:`Prm800kOptions`); missing optional columns
    (``reference_answer``, ``final_answer``, ``mc_scores``, ``labeler``, ``created_at``) become null."""
    return _records(df, FORMAT.parse_options(options))


def from_prm800k(data: pl.DataFrame | Records) -> pl.DataFrame:
    """``prompt``, ``completions``, ``labels``, ``reference_answer`` of PRM800K records, ours or upstream's.

    The trajectory is upstream's: at each step the chosen completion, else the human completion (label
    good); a step with neither ends it, after its first -1 completion (phase 2's erroneous step)."""
    out = []
    for rec in as_records(data, ["question", "label"]):
        steps, labels = [], []
        for st in (rec.get("label") or {}).get("steps") or []:
            comps = st.get("completions") or []
            chosen = st.get("chosen_completion")
            if chosen is not None and chosen < len(comps):
                steps.append(comps[chosen]["text"])
                labels.append(_FROM_RATING.get(comps[chosen].get("rating")))
                continue
            if st.get("human_completion"):
                steps.append(st["human_completion"]["text"])
                labels.append(True)
                continue
            bad = [c for c in comps if c.get("rating") == -1]
            if bad:
                steps.append(bad[0]["text"])
                labels.append(False)
            break
        q = rec.get("question") or {}
        out.append(
            {
                "prompt": q.get("problem"),
                "completions": steps,
                "labels": labels,
                "reference_answer": q.get("ground_truth_answer"),
            }
        )
    return stepwise(out, {"reference_answer": pl.String})


FORMAT = ExportFormat(
    name="prm800k",
    description=(
        "PRM800K (`openai/prm800k` JSONL lines; Parquet with the same nested columns on the Hub): one row per "
        "solution, `labeler` (UUID), `timestamp`, `generation`, `question: {problem, ground_truth_solution, "
        "ground_truth_answer, pre_generated_steps, pre_generated_answer, pre_generated_verifier_score}`, "
        "`label: {steps: [{completions: [{text, rating, flagged}], human_completion, chosen_completion}], "
        "total_time, finish_reason}`; rating 1 = good, -1 = bad, 0 (neutral) only for steps the labeler left "
        "undecided. `finish_reason: found_error` means the steps end at the first bad one, as in PRM800K's "
        "phase 2; `pre_generated_steps` holds every step of the solution."
    ),
    options=Prm800kOptions,
    records=_records,
    schema=lambda opts: SCHEMA,
    read=from_prm800k,
    columns=("reference_answer", "final_answer", "mc_scores", "labeler", "created_at"),
    jsonl=True,
)
