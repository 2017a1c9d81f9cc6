"""steplabel: process-supervision data for process reward models."""

from flows.config import code_version

__version__ = code_version()
