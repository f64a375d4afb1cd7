"""speechstream: real-time streaming speech processing.

The distribution's front door: the facade, the command line, the pipeline builder and the
servers. It composes the layers below it (``engines`` < ``stream`` < ``sinks``); none of them
imports it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("speechstream")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
