"""Settings of the hybrid rule that combines tool verdicts with MC values (GroundedPRM style, ALGORITHMS.md 5.1)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HybridConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mc_threshold: float = Field(0.0, ge=0, le=1, description="a step is good by MC when MC > mc_threshold")
    tool_overrides_mc: bool = Field(True, description="'refuted' makes a step bad whatever its MC value")
    require_agreement: bool = Field(
        False,
        description="a step is good only when MC says good AND the tool does not refute; 'verified' needs MC > "
        "threshold too (no label is taken from the tool alone)",
    )
    verified_rescues_mc: bool = Field(
        False, description="'verified' makes a step good even when MC <= threshold (off: MC noise only upward)"
    )
    after_first_error_bad: bool = Field(True, description="every step after the first bad one is bad (PRM convention)")
