"""Versioned, content-addressed Parquet shard store for step labels and rejects.

``from steplabel.storage import ShardStore`` is the public entry; the store module is imported on first use,
so importing a sibling such as ``steplabel.storage.strict`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "ShardStore": "steplabel.storage.store",
    "StoreError": "steplabel.storage.staging",
    "RunLockedError": "steplabel.storage.staging",
    "explode_steps": "steplabel.storage.views",
    "STEP_LABELS": "steplabel.storage.schema",
    "REJECTS": "steplabel.storage.schema",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'steplabel.storage' has no attribute {name!r}")
