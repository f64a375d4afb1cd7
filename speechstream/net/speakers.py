"""Per-stream speaker settings for the network servers (WebSocket, MQTT): one place, same behaviour.

A client's ``start`` message may carry ``"num_speakers": 2`` and ``"names": ["Ann", "Bob"]``; a
``set_speakers`` message changes them mid-stream. Every node of the graph that takes per-stream
speaker settings (a callable ``set_speakers(stream_id, num_speakers, names)``, i.e.
:class:`~stream.diarize.Diarizer`, present with ``serve --diarize``) is told; ``None`` / ``()``
leave a setting as it is. Speaker settings never refuse a stream: a server without a diarizer, or
a setting the diarizer cannot keep, is a non-fatal ``ProtocolError`` (``speakers_unsupported``,
``bad_speakers``) that the transport sends as that stream's ``error`` event; the stream runs on
with the settings it had. (Per-stream languages: :mod:`speechstream.net.languages`, the same pattern.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stream.errors import ConfigError

from .protocol import ProtocolError, SetSpeakers, StartConfig

__all__ = ["set_stream_speakers", "start_speakers"]


def _hooks(nodes: Iterable[Any]) -> list[Any]:
    return [h for h in (getattr(n, "set_speakers", None) for n in nodes) if callable(h)]


def start_speakers(cfg: StartConfig) -> SetSpeakers | None:
    """The speaker settings a ``start`` message carries (None: none)."""
    if cfg.num_speakers is None and not cfg.names:
        return None
    return SetSpeakers(cfg.num_speakers, cfg.names)


def set_stream_speakers(nodes: Iterable[Any], stream_id: str, msg: SetSpeakers) -> None:
    """Tell every node with ``set_speakers`` the stream's speaker settings. Raises a non-fatal
    ProtocolError when no node takes them (no diarizer) or one refuses them (ConfigError)."""
    hooks = _hooks(nodes)
    if not hooks:
        raise ProtocolError(
            "speakers_unsupported",
            "speaker settings (num_speakers, names) need a diarizer: "
            "this server runs none (start it with --diarize); ignored",
        )
    try:
        for hook in hooks:
            hook(stream_id, msg.num_speakers, msg.names)
    except ConfigError as exc:
        raise ProtocolError("bad_speakers", f"{exc}; speaker settings unchanged") from exc
