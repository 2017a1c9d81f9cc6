"""Combine tool verdicts with Monte-Carlo values per step (GroundedPRM-style hybrid; DESIGN.md section 7).

Per step: MC says good when ``mc > mc_threshold``. The tool says ``verified``, ``refuted`` or ``unknown``.

* ``refuted`` with ``tool_overrides_mc`` -> bad, whatever the MC value;
* ``verified`` -> good when MC agrees; with ``verified_rescues_mc`` also when MC says bad;
* ``unknown`` -> MC decides;
* ``require_agreement``: good only when MC says good and the tool does not refute (a refuted step is bad
  even without ``tool_overrides_mc``), i.e. both signals must allow it.

``after_first_error_bad`` applies the PRM convention that nothing after the first error is good.
"""

from __future__ import annotations

from collections.abc import Sequence

from steplabel.labelers.base import first_false
from steplabel.checks.hybrid_config import HybridConfig

VERDICTS = ("verified", "refuted", "unknown")


def combine(
    mc_scores: Sequence[float], tool_verdicts: Sequence[str | None], config: HybridConfig | None = None
) -> tuple[list[bool], int]:
    """Labels (True = good) and the first bad step (-1 if none)."""
    cfg = config or HybridConfig()
    if len(mc_scores) != len(tool_verdicts):
        raise ValueError(f"{len(mc_scores)} MC scores but {len(tool_verdicts)} tool verdicts")
    labels: list[bool] = []
    for mc, verdict in zip(mc_scores, tool_verdicts, strict=True):
        v = verdict or "unknown"
        if v not in VERDICTS:
            raise ValueError(f"unknown tool verdict {verdict!r}; expected one of {VERDICTS}")
        mc_good = mc > cfg.mc_threshold
        if cfg.require_agreement:
            good = mc_good and v != "refuted"
        elif v == "refuted" and cfg.tool_overrides_mc:
            good = False
        elif v == "verified" and cfg.verified_rescues_mc:
            good = True
        else:
            good = mc_good
        labels.append(good)
    first = first_false(labels)
    if cfg.after_first_error_bad and first != -1:
        labels = [good and i < first for i, good in enumerate(labels)]
    return labels, first
