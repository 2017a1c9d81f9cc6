"""What every engine config shares: its ``kind`` and the fields that change speed, not results."""

from __future__ import annotations

from typing import ClassVar

from steplabel.storage.strict import StrictConfig


class EngineConfigBase(StrictConfig):
    """``speed_fields`` are left out of the run's config hash, so tuning them does not invalidate a resume."""

    speed_fields: ClassVar[frozenset[str]] = frozenset()
    kind: str
