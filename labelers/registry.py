"""Labeler configs by name -> labeler instances."""

from __future__ import annotations

from labelers.base import Labeler
from labelers.math_shepherd import MathShepherdLabeler
from labelers.math_shepherd_config import MathShepherdConfig

LABELERS = {"math_shepherd": (MathShepherdConfig, MathShepherdLabeler)}


def make_labeler(config: MathShepherdConfig) -> Labeler:
    _, labeler_class = LABELERS[config.name]
    return labeler_class(config)
