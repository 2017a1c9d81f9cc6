"""Labelers by name -> (config class, labeler class). Adding a labeler is its module, its config module and
one line here; the run config's ``labeler`` union and ``steplabel evaluate --method`` follow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Union

from pydantic import Field

from steplabel.labelers.base import Labeler
from steplabel.labelers.math_shepherd import MathShepherdLabeler
from steplabel.labelers.math_shepherd_config import MathShepherdConfig
from steplabel.labelers.omegaprm import OmegaPRMLabeler
from steplabel.labelers.omegaprm_config import OmegaPRMConfig
from steplabel.labelers.rpe import RPELabeler
from steplabel.labelers.rpe_config import RPEConfig
from steplabel.labelers.scan import ScanLabeler
from steplabel.labelers.scan_config import ScanConfig

LABELERS: dict[str, tuple[type[Any], type[Labeler]]] = {
    "math_shepherd": (MathShepherdConfig, MathShepherdLabeler),
    "omegaprm": (OmegaPRMConfig, OmegaPRMLabeler),
    "scan": (ScanConfig, ScanLabeler),
    "rpe": (RPEConfig, RPELabeler),
}

# A union built from the registry: pydantic picks the member by ``name``.
LabelerConfig = Annotated[Union[tuple(config for config, _ in LABELERS.values())], Field(discriminator="name")]  # type: ignore[valid-type]  # noqa: UP007


def make_labeler(config: MathShepherdConfig | OmegaPRMConfig | ScanConfig | RPEConfig, *,
                 step_format: str | None = None, chunk_words: int | None = None,
                 policy_samples: Mapping[str, tuple[int, int]] | None = None) -> Labeler:
    """A fresh labeler for one shard run (SCAN caches per-problem self-confidence in the instance).

    ``step_format`` / ``chunk_words``: the run's ``prompt`` settings, used by OmegaPRM's tree mode to cut
    rollout texts into steps unless its own config sets ``step_format``. ``policy_samples``: problem_id ->
    (correct, drawn) over every policy sample, rejected ones included (:func:`~steplabel.labelers.scan.
    policy_pass_counts`), for SCAN's self-confidence.
    """
    if isinstance(config, OmegaPRMConfig):
        return OmegaPRMLabeler(config, step_format=step_format, chunk_words=chunk_words)
    if isinstance(config, ScanConfig):
        return ScanLabeler(config, policy_samples)
    _, labeler_class = LABELERS[config.name]
    return labeler_class(config)  # type: ignore[arg-type]
