"""steplabel: process-supervision data for process reward models.

The package is one namespace over the repository's top-level folders (``steplabel.flows`` is ``flows/``,
``steplabel.storage`` is ``storage/`` ...; pyproject.toml maps them at install). The public API below is
imported lazily, so ``import steplabel.rollouts.engines.vllm_worker`` in a vLLM-only environment does not
pull in Prefect or polars.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

# In a source checkout (PYTHONPATH at the repository root, as the vLLM worker runs) the subpackages are the
# folders beside this one; an installed wheel has them inside this package already.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "flows" / "__init__.py").is_file() and str(_checkout) not in __path__:
    __path__.append(str(_checkout))

_PUBLIC = {
    "ShardStore": "steplabel.storage.store",
    "StoreError": "steplabel.storage.store",
    "explode_steps": "steplabel.storage.views",
    "RunConfig": "steplabel.flows.config",
    "ConfigError": "steplabel.flows.config",
    "load_config": "steplabel.flows.config",
    "parse_config": "steplabel.flows.config",
    "code_version": "steplabel.storage.strict",
    "pipeline_flow": "steplabel.flows.pipeline",
    "Grader": "steplabel.rollouts.grading",
}
__all__ = [*sorted(_PUBLIC), "__version__"]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return importlib.import_module("steplabel.storage.strict").code_version()
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'steplabel' has no attribute {name!r}")
