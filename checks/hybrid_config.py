"""Settings of the hybrid rule that makes the exported labels agree with the tool verdicts."""

from __future__ import annotations

from pydantic import Field

from steplabel.storage.strict import StrictConfig


class HybridConfig(StrictConfig):
    """On by default (``verification.hybrid: {}``); ``null`` exports the labeler's labels as they are."""

    bad_after_refuted: bool = Field(
        True,
        description="every step after the first refuted step is bad too (the first-error convention of PRM800K "
        "and ProcessBench: later steps build on the false claim); off: only the refuted steps themselves",
    )
    verified_rescues: bool = Field(
        False,
        description="'verified' makes a step good even when the labeler said bad (off: the tool only ever "
        "removes positives, it never adds one, since 'verified' says the arithmetic holds, not that the step helps)",
    )
