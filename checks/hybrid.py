"""Combine the tool verdicts with the labeler's own labels per step (GroundedPRM-style hybrid).

The labeler's labels keep its own rule (OmegaPRM's ``mc_threshold``, Math-Shepherd's hard or soft rule,
RPE's progress ratios, SCAN's scan); the tools only correct them where they have evidence:

* ``refuted`` -> bad, whatever the labeler said: a step whose arithmetic is false is never a positive,
  even when its rollouts still reach the right answer;
* with ``bad_after_refuted`` (default) every later step is bad too, the first-error convention;
* ``verified`` -> good only with ``verified_rescues`` (off by default); otherwise the labeler decides;
* ``unknown`` (or no verdict) -> the labeler decides.

So with the defaults no exported good step is ever refuted, and a solution the tool finds nothing wrong
with keeps exactly the labeler's labels.
"""

from __future__ import annotations

from collections.abc import Sequence

from steplabel.checks.hybrid_config import HybridConfig
from steplabel.labelers.base import first_false

VERDICTS = ("verified", "refuted", "unknown")


def combine(
    labeler_labels: Sequence[bool], tool_verdicts: Sequence[str | None], config: HybridConfig | None = None
) -> tuple[list[bool], int]:
    """The exported labels (True = good) and their first bad step (-1 if none)."""
    cfg = config or HybridConfig()
    if len(labeler_labels) != len(tool_verdicts):
        raise ValueError(f"{len(labeler_labels)} labeler labels but {len(tool_verdicts)} tool verdicts")
    verdicts = [verdict or "unknown" for verdict in tool_verdicts]
    for verdict in verdicts:
        if verdict not in VERDICTS:
            raise ValueError(f"unknown tool verdict {verdict!r}; expected one of {VERDICTS}")
    first_refuted = verdicts.index("refuted") if "refuted" in verdicts else len(verdicts)
    labels: list[bool] = []
    for index, (good, verdict) in enumerate(zip(labeler_labels, verdicts, strict=True)):
        if verdict == "refuted" or (cfg.bad_after_refuted and index > first_refuted):
            labels.append(False)
        elif verdict == "verified" and cfg.verified_rescues:
            labels.append(True)
        else:
            labels.append(good)
    return labels, first_false(labels)
