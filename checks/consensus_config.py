"""Settings of the consensus filter between MC labels and an LLM judge (docs/labelers.md).

Qwen "Lessons" (Zhang et al., 2025, sections 3.1.3 / 4.1): keep a solution only when the judge and the MC
estimate agree on where the first error is:

    e_MC    = first step with MC == 0 (hard labels, threshold 0), -1 if none
    e_judge = the judge's earliest wrong paragraph, -1 if none
    keep  iff  e_MC == e_judge                  (about 40% of 860K kept in the paper)

``tolerance`` relaxes this to ``|e_judge - e_MC| <= tolerance`` ("exact, or within d"), but only between
two error positions: -1 ("no error") never agrees with an index k >= 0, whatever the tolerance, since one
side says the solution is clean and the other says it is not.

GenPRM (Zhao et al., 2025, section 5.2) is stricter: derive per-step labels from the judge's index (steps
before it good, it and every later step bad; -1: all good) and drop the solution if ANY step label differs
from the given labels (the RPE labels there; about 51% discarded). RPE labels each step by its own ratio, so
a step after a failing ratio can be good again; the judge's labels never are, so such a solution is dropped.

After filtering the Qwen paper trains on the hard labels and removes every step after the first error;
``truncate_after_error`` does that cut on the kept labels.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steplabel.storage.strict import StrictConfig


class ConsensusConfig(StrictConfig):
    mode: Literal["first_error", "genprm"] = Field(
        "first_error", description="first_error: compare first-error positions (Qwen); genprm: every step label"
    )
    tolerance: int = Field(0, ge=0, description="first_error mode: keep when |judge - mc| <= tolerance (-1 exact)")
    keep_unparsable: bool = Field(False, description="keep a solution whose judge output gave no valid index")
    truncate_after_error: bool = Field(
        False, description="kept labels stop at the first bad step (Qwen: steps after the first error removed)"
    )
