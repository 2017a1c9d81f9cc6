"""Labeler configs by name -> labeler instances."""

from __future__ import annotations

from steplabel.labelers.base import Labeler
from steplabel.labelers.math_shepherd import MathShepherdLabeler
from steplabel.labelers.math_shepherd_config import MathShepherdConfig
from steplabel.labelers.omegaprm import OmegaPRMLabeler
from steplabel.labelers.omegaprm_config import OmegaPRMConfig
from steplabel.labelers.rpe import RPELabeler
from steplabel.labelers.rpe_config import RPEConfig
from steplabel.labelers.scan import ScanLabeler
from steplabel.labelers.scan_config import ScanConfig

AnyLabelerConfig = MathShepherdConfig | OmegaPRMConfig | ScanConfig | RPEConfig

LABELERS = {
    "math_shepherd": (MathShepherdConfig, MathShepherdLabeler),
    "omegaprm": (OmegaPRMConfig, OmegaPRMLabeler),
    "scan": (ScanConfig, ScanLabeler),
    "rpe": (RPEConfig, RPELabeler),
}


def make_labeler(config: AnyLabelerConfig, *, step_format: str | None = None, chunk_words: int | None = None) -> Labeler:
    """A fresh labeler for one shard run (SCAN caches per-problem self-confidence in the instance).

    ``step_format`` / ``chunk_words``: the run's ``prompt`` settings, used by OmegaPRM's tree mode to cut
    rollout texts into steps unless its own config sets ``step_format``.
    """
    _, labeler_class = LABELERS[config.name]
    if labeler_class is OmegaPRMLabeler:
        return OmegaPRMLabeler(config, step_format=step_format, chunk_words=chunk_words)  # type: ignore[arg-type]
    return labeler_class(config)  # type: ignore[arg-type]
