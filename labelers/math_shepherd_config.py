"""Settings of the Math-Shepherd labeler (Wang et al., ACL 2024; docs/labelers.md).

For step i of a K-step solution the completer decodes N continuations from the prefix s_1..s_i:

    hard  y_i = 1[ exists j: a_j = a* ]          soft  y_i = (1/N) * sum_j 1[a_j = a*]

The paper uses N = 8 (LLemma-7B completer); the last step is labelled by its own final answer, with no
rollouts. Hard labels are what the released PRM trained on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steplabel.storage.strict import StrictConfig


class MathShepherdConfig(StrictConfig):
    name: Literal["math_shepherd"] = "math_shepherd"
    k: int = Field(8, ge=1, description="rollouts per step prefix (paper: N = 8)")
    label_mode: Literal["hard", "soft"] = Field(
        "hard",
        description="hard: label = MC > 0 (HE); soft: label = MC >= soft_threshold and soft_labels = MC (SE)",
    )
    soft_threshold: float = Field(0.5, ge=0, le=1, description="bool label in soft mode (openr uses 0.5)")
