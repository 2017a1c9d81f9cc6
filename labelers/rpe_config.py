"""Settings of the RPE labeler: GenPRM's relative progress estimation (Zhao et al., arXiv 2504.00891;
Eq. 10-11; docs/labelers.md).

MC values as Math-Shepherd (k rollouts from every prefix, the last step its own graded final answer),
plus MC(s_1) of the bare question (GenPRM: the Pass@1 of the generation phase; here k rollouts from the
empty prefix). Once the first step with MC = 0 is found, later MC values are set to 0 (GenPRM). Then

    P_t = MC(s_{t+1}) / MC(s_t)        label_t = 1[P_t >= threshold]        (threshold 0.8)

with the guard MC(s_t) = 0 -> label 0 (only after the first MC = 0, where the label is already 0). Each
step keeps its own ratio label: a step after a failing ratio can be good again while MC > 0 (GenPRM Eq. 11;
the GenPRM consensus filter then drops the solution, since a judge's labels never recover).
Ablation (GenPRM Table 3): hard MC > 0 73.2, ratio >= 0.8 75.2, ratio >= 1.0 72.3.
``soft_labels`` = min(P_t, 1). GenPRM's dynamic K (128/64/32 by Pass@1) is not implemented: k is fixed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steplabel.storage.strict import StrictConfig


class RPEConfig(StrictConfig):
    name: Literal["rpe"] = "rpe"
    k: int = Field(8, ge=1, description="rollouts per step prefix and for the question's MC")
    threshold: float = Field(0.8, gt=0, description="epsilon: label = MC(t+1)/MC(t) >= threshold (GenPRM: 0.8)")
