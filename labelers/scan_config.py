"""Settings of the SCAN labeler (Ding et al., 2025, arXiv 2509.16548; docs/labelers.md).

Self-confidence of the completer on question q (project page; code ``generation_accuracy``):

    SC(q) = (1/N) * sum_j 1[answer of r_j = a*],   r_j ~ pi(. | q)

Questions with SC >= 0.75 are "confident": their correct solutions are labelled good with no rollouts.
Other solutions are scanned forward, k rollouts from steps[:t+1] for t = 0, 1, ..., stopping at the first
t with c_t = 0 (the predicted error e; the last step is its own graded final answer). Soft labels with
tolerance distance d (code: d = 2):

    y_t = min(c_t / SC, 1)   for e - d <= t < e;     y_e = 0;     y_t = 1 for t < e - d

Paper / code: N = 128 samples at T = 1.0, k = 8, SC threshold 0.75, d = 2; questions below the threshold
are dropped, incorrect responses with no zero are discarded, positives and negatives are sampled down to
the same count (:func:`steplabel.labelers.scan.balance`).

Here SC is estimated from the shard's own sampled solutions of the problem (``sc_from_solutions``: their
graded final answers are policy samples from the question) topped up with ``sc_samples - #solutions``
extra samples from the question (empty prefix, rollout sampling settings), estimated once per problem
and shared by its solutions. The top-up cost is charged to the solution that issued it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steplabel.storage.strict import StrictConfig


class ScanConfig(StrictConfig):
    name: Literal["scan"] = "scan"
    k: int = Field(8, ge=1, description="rollouts per scanned prefix (code: 8)")
    sc_samples: int = Field(32, ge=1, description="policy samples behind SC (paper: 128)")
    sc_from_solutions: bool = Field(
        True, description="count the problem's sampled solutions of this shard as SC samples before topping up"
    )
    confidence_threshold: float = Field(0.75, ge=0, le=1, description="SC >= this: correct solutions need no rollouts")
    tolerance: int = Field(2, ge=0, description="d: steps before the predicted error that get min(c_t/SC, 1)")
    below_threshold: Literal["scan", "skip"] = Field(
        "skip",
        description="questions with SC < threshold: skip them with no rollouts as the paper drops them (default; "
        "the pipeline sends them to rejects as self_confidence_below_threshold), or scan every solution anyway",
    )
