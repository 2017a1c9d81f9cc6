"""steplabel: process-supervision data for process reward models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("steplabel")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"
