"""Exports of ``step_labels`` rows to the step-label formats used in the wild, one module per format.

The registry below maps each format's name to its module; the module defines ``FORMAT``, an
:class:`~steplabel.storage.exporters.base.ExportFormat` (its options model, record builder, Arrow schema,
importer and a one-paragraph ``description``). Adding a format is one module plus one line here; the CLI's
``--format``, ``steplabel publish`` and the dataset card all read this registry. Field-by-field mappings are
in docs/export-formats.md.

This module imports nothing heavy: the names the CLI needs at start-up (:data:`FORMATS`, :func:`format_help`)
cost no polars or pyarrow import. Everything else (``export_version``, ``to_trl``, ``parse_split_ratio`` ...)
is the public ``__all__`` of ``base`` or of a format module, loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steplabel.storage.exporters.base import ExportFormat

#: The registry: format name -> its module under steplabel.storage.exporters. The first is the default.
_MODULES: dict[str, str] = {
    "trl": "trl",
    "math-shepherd": "math_shepherd",
    "prm800k": "prm800k",
    "openr": "openr",
}
FORMATS: tuple[str, ...] = tuple(_MODULES)
DEFAULT_FORMAT = FORMATS[0]


def get_format(name: str) -> ExportFormat:
    """The registered format ``name``; an unknown name is a ValueError that lists the formats."""
    if name not in _MODULES:
        raise ValueError(f"unknown export format {name!r}; choose one of {', '.join(FORMATS)}")
    return import_module(f"{__name__}.{_MODULES[name]}").FORMAT


def format_description(name: str) -> str:
    """One paragraph on format ``name`` (fields and mapping), for the dataset card."""
    return get_format(name).description


def format_help() -> str:
    """The ``--format`` help: every registered name (the CLI shows the default itself)."""
    return f"{' | '.join(FORMATS)}; fields in docs/export-formats.md"


def __getattr__(name: str) -> Any:
    """The public names of ``base`` and of the format modules, imported on first use."""
    for module in ("base", *_MODULES.values()):
        mod = import_module(f"{__name__}.{module}")
        if name in getattr(mod, "__all__", ()):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
