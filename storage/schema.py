"""Arrow schemas of the two tables; docs/data-format.md describes every column.

``step_labels`` holds one row per labelled solution, a superset of TRL's stepwise-supervision format
(``prompt``, ``completions``, ``labels`` as booleans, never floats). ``rejects`` holds every item that did
not become a row of ``step_labels``, with the stage and the reason, so nothing is ever dropped silently.
"""

from __future__ import annotations

import pyarrow as pa

STEP_LABELS = "step_labels"
REJECTS = "rejects"

STEP_LABELS_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("solution_id", pa.string()),
        ("shard_id", pa.string()),
        ("run_id", pa.string()),
        ("prompt", pa.string()),
        ("completions", pa.list_(pa.string())),
        ("labels", pa.list_(pa.bool_())),  # exported: the labeler's labels corrected by the tools (hybrid)
        ("mc_scores", pa.list_(pa.float32())),
        ("mc_correct", pa.list_(pa.int32())),
        ("mc_total", pa.list_(pa.int32())),
        ("first_error", pa.int32()),
        ("labeler", pa.string()),
        ("soft_labels", pa.list_(pa.float32())),
        ("labeler_details", pa.string()),  # JSON: algorithm-specific outputs (OmegaPRM paths, SCAN SC, RPE ratios)
        ("tool_verdicts", pa.list_(pa.string())),
        ("tool_evidence", pa.list_(pa.string())),  # the failing claim of each refuted step, else null
        ("tool_first_error", pa.int32()),
        ("tool_checks", pa.string()),  # JSON: each sandboxed code check (step, verdict, code, sandbox output)
        ("labeler_labels", pa.list_(pa.bool_())),  # the labeler's own labels, before the tools (null in older shards)
        ("judge_first_error", pa.int32()),
        ("judge_rationale", pa.string()),
        ("consensus", pa.bool_()),
        ("final_answer", pa.string()),
        ("reference_answer", pa.string()),
        ("final_correct", pa.bool_()),
        ("grader_layer", pa.string()),
        ("policy_model", pa.string()),
        ("completer_model", pa.string()),
        ("judge_model", pa.string()),
        ("sampling", pa.string()),
        ("seed", pa.int64()),
        ("config_hash", pa.string()),
        ("code_version", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("rollouts_used", pa.int32()),
        ("tokens_generated", pa.int64()),
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),  # problem_id, or solution_id when a single solution was rejected
        ("problem_id", pa.string()),
        ("solution_id", pa.string()),  # null when the whole problem was rejected
        ("shard_id", pa.string()),
        ("run_id", pa.string()),
        ("stage", pa.string()),  # source | sampling | labeling | verification | judge
        ("reason", pa.string()),  # short machine-readable code, e.g. "bad_input", "engine_error"
        ("detail", pa.string()),  # human-readable: what and where
        ("payload", pa.string()),  # the offending record or text, JSON, for debugging
        ("config_hash", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("rollouts_used", pa.int32()),
        ("tokens_generated", pa.int64()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {STEP_LABELS: STEP_LABELS_SCHEMA, REJECTS: REJECTS_SCHEMA}


def schema_fingerprint(schema: pa.Schema) -> str:
    """Stable short hash of a schema's column names, types and nullability (metadata ignored).

    Used in version manifests so a reader can tell whether two versions' shards share a schema.
    """
    import hashlib
    import json

    canon = json.dumps([[f.name, str(f.type), f.nullable] for f in schema], separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()[:16]
