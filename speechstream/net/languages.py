"""Per-stream languages for the network servers (WebSocket, MQTT, TCP): one place, same behaviour.

A client's ``start`` message may carry ``"language": "fra"`` (multilingual checkpoints, MMS).
Before the stream's first audio, every node of the graph that recognises per-stream languages
(a callable ``set_language(stream_id, code)``, e.g. :class:`~stream.recognizer.Recognizer`) is
told the stream's language. A code the model does not have refuses that stream alone, before any
audio, with ``ProtocolError("unknown_language", fatal=True)`` whose message lists the available
codes; the transport sends it as that stream's ``error`` event and the other streams run on.

::

    try:
        await start_stream(graph, source, cfg.language)   # instead of graph.start_source(source)
    except ProtocolError as exc:                          # unknown_language | unavailable
        ...                                               # this stream's error event; nothing started
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stream.errors import ConfigError, GraphError
from stream.graph import Graph
from stream.sources.push import PushSource

from .protocol import ProtocolError

__all__ = ["set_stream_language", "forget_stream_language", "start_stream"]


def _hooks(nodes: Iterable[Any]) -> list[Any]:
    return [h for h in (getattr(n, "set_language", None) for n in nodes) if callable(h)]


def set_stream_language(nodes: Iterable[Any], stream_id: str, language: str | None) -> None:
    """Tell every node with ``set_language`` that ``stream_id`` is in ``language`` (None: the
    server's default; nothing to do). Raises ProtocolError("unknown_language", fatal=True) for a code
    the model does not have, or when no node takes a language; no node keeps it then."""
    if language is None:
        return
    hooks = _hooks(nodes)
    if not hooks:
        raise ProtocolError(
            "unknown_language", f"language {language!r} asked for, but this server runs no recogniser", fatal=True
        )
    try:
        for hook in hooks:
            hook(stream_id, language)
    except ConfigError as exc:
        for hook in hooks:  # those that took it before one refused
            hook(stream_id, None)
        raise ProtocolError("unknown_language", str(exc), fatal=True) from exc


def forget_stream_language(nodes: Iterable[Any], stream_id: str) -> None:
    """A stream whose language was set, refused before it started: the nodes forget its language."""
    for hook in _hooks(nodes):
        hook(stream_id, None)


async def start_stream(graph: Graph, source: PushSource, language: str | None = None) -> None:
    """Start a network stream's source in ``graph``, recognised in ``language`` (None: the server's).

    Raises ProtocolError (fatal) when the stream is refused, leaving nothing of it behind:
    ``unknown_language`` (see :func:`set_stream_language`), or ``unavailable`` when the graph
    refuses the source (it is stopping, or the stream id is live)."""
    sid = source.stream_id
    set_stream_language(graph.nodes(), sid, language)
    try:
        await graph.start_source(source)
    except GraphError as exc:
        if language is not None:
            forget_stream_language(graph.nodes(), sid)
        raise ProtocolError("unavailable", f"cannot start stream {sid!r}: {exc}", fatal=True) from exc
