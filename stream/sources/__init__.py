"""Audio sources: files and microphones (see :mod:`stream.sources.base` for the contract)."""

from .array import ArraySource
from .base import Emit, Source
from .file import FileSource
from .mic import InputDevice, MicSource, format_devices, list_devices

__all__ = ["Emit", "Source", "ArraySource", "FileSource", "MicSource", "InputDevice", "list_devices", "format_devices"]
