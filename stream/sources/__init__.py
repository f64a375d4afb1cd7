"""Audio sources: files and microphones (see :mod:`stream.sources.base` for the contract)."""

from .base import Emit, Source

__all__ = ["Emit", "Source"]
