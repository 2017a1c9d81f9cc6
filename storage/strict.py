"""The one base of every config and options model in steplabel.

It lives in ``storage``, the layer every other one may import, so engine, source, labeler, check and
exporter configs all share it without an import going the wrong way.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel, ConfigDict


class StrictConfig(BaseModel):
    """Unknown keys are errors (a typo is never a silently ignored setting) and a config never changes
    after validation (it is hashed and shared between threads)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@cache
def code_version() -> str:
    """The installed steplabel version, recorded on every row and manifest of a run."""
    try:
        return version("steplabel")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0+local"
