"""Exceptions of the speechstream runtime.

Errors are events at run time and exceptions at the edges (DESIGN principle 6).
Configuration mistakes raise at ``Graph.start`` with the offending value in the
message; trouble on one stream while the graph runs raises a :class:`StreamError`
inside a node, which the graph turns into an :class:`stream.events.ErrorEvent`
for that stream while the other streams keep running.

    SpeechStreamError             the one root, defined in engines.errors (the lowest layer), re-exported here
    ├── ConfigError               a bad option or argument, raised before or at start (engines.errors; the
    │   │                         engines' load-time errors, bad model / checkpoint / language, are ConfigErrors too)
    │   ├── SourceNotFoundError   a file path that does not exist
    │   ├── UnreadableAudioError  a file soundfile cannot open (names the file and the reason)
    │   └── DeviceNotFoundError   an unknown capture device (lists the available ones)
    ├── StreamError               run-time trouble on ONE stream -> ErrorEvent(code, fatal)
    │   ├── BadAudioError         NaN/inf samples, wrong dtype or shape (code "bad_audio")
    │   ├── SourceError           a source failed mid-stream: read error, device lost ("source_error")
    │   └── ProtocolError         a network frame or control message that breaks the wire protocol
    └── GraphError                misuse or failure of the graph machinery itself
        ├── GraphStateError       wrong order of calls (start twice, a node placed twice)
        └── GraphTimeoutError     start / stop / flush did not finish within its timeout

Foreign exceptions (soundfile, sounddevice/PortAudio, soxr) are translated at the
boundary with ``raise OurError(msg) from exc``; they never leak out of ``stream``.

What the graph does with an exception raised while a node handles one item
(see :mod:`stream.node`): a ``StreamError`` becomes ``ErrorEvent(code=exc.code,
fatal=exc.fatal)`` for that item's stream; any other ``Exception`` is a bug, so it
is logged with its traceback and, under the default ``bug_policy="isolate"``,
also becomes ``ErrorEvent(code="internal_error", fatal=True)``; under
``bug_policy="raise"`` it stops the graph.  ``BaseException`` (cancellation,
KeyboardInterrupt) is never caught.
"""

from __future__ import annotations

from engines.errors import ConfigError, SpeechStreamError

__all__ = [
    "SpeechStreamError",
    "ConfigError",
    "SourceNotFoundError",
    "UnreadableAudioError",
    "DeviceNotFoundError",
    "StreamError",
    "BadAudioError",
    "SourceError",
    "GraphError",
    "GraphStateError",
    "GraphTimeoutError",
    "ProtocolError",
]


class SourceNotFoundError(ConfigError, FileNotFoundError):
    """An input file that does not exist."""


class UnreadableAudioError(ConfigError):
    """A file that exists but is not audio soundfile can read."""


class DeviceNotFoundError(ConfigError):
    """An unknown or missing capture device; the message lists the available input devices."""


class StreamError(SpeechStreamError):
    """Run-time trouble on one stream.

    ``code`` goes into ``ErrorEvent.code``; ``fatal`` says whether the stream stops
    at the node that raised (later items of that stream are dropped there, its
    ``EndOfStream`` still passes) or goes on with the next item.
    """

    code: str = "stream_error"

    def __init__(self, message: str, *, fatal: bool = True, code: str | None = None):
        super().__init__(message)
        self.fatal = fatal
        if code is not None:
            self.code = code


class BadAudioError(StreamError):
    """Samples the pipeline refuses: NaN or inf, wrong dtype, wrong shape."""

    code = "bad_audio"


class SourceError(StreamError):
    """A source failed while running (read error, device gone)."""

    code = "source_error"


class GraphError(SpeechStreamError):
    """The graph machinery itself failed or was misused."""


class GraphStateError(GraphError):
    """Calls in the wrong order: start twice, run after stop, a node placed in two graphs."""


class GraphTimeoutError(GraphError, TimeoutError):
    """start / stop / flush did not finish within its timeout."""


class ProtocolError(StreamError, ValueError):
    """A frame or control message that breaks the protocol.

    ``code`` is the machine-readable ``error`` event code; ``fatal`` says the
    transport should close the stream (otherwise it skips the offending frame).
    """

    def __init__(self, code: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message, fatal=fatal, code=code)
        self.message = message
