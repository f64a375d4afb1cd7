"""The MQTT topic scheme: what goes where, how a topic parses, and which event goes out on which topic.

Topic scheme (``prefix`` defaults to ``speechstream``; ``<stream>`` is a stream id,
``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``)::

    <prefix>/<stream>/audio       in   binary PCM frames (format from "start", else the worker's default)
    <prefix>/<stream>/control     in   JSON control: {"type":"start","sample_rate_hz":..,"format":..,"language":..},
                                       {"type":"end"}, {"type":"set_speakers",...}  (speechstream.net.protocol)
    <prefix>/<stream>/transcript  out  partial_transcript (QoS 0), final_transcript (QoS 1), end_of_stream (QoS 1)
    <prefix>/<stream>/speaker     out  speaker_turn (QoS 1)
    <prefix>/<stream>/vad         out  speech_started, speech_ended, endpoint (QoS 0)
    <prefix>/<stream>/error       out  error, queue_overflow, audio_lost (QoS 1)

The event side of the scheme (``topic``, ``route``, ``topic_segment``) lives in :mod:`sinks.mqtt`,
which knows only events; this module adds what the transport needs on top.
"""

from __future__ import annotations

from sinks.mqtt import route, topic, topic_segment
from speechstream.net.protocol import valid_stream_id

__all__ = ["topic", "topic_segment", "route", "check_publish_topic", "parse_topic", "control_filter"]


def check_publish_topic(value: str) -> None:
    """Raise ValueError for a topic no broker accepts for PUBLISH (empty, wildcards, NUL, too long)."""
    if not value or "+" in value or "#" in value or "\x00" in value or len(value.encode()) > 65535:
        raise ValueError(f"invalid MQTT publish topic {value[:80]!r}")


def parse_topic(prefix: str, value: str) -> tuple[str, str] | None:
    """``<prefix>/<stream>/<kind>`` -> (stream, kind); None for anything else."""
    if not value.startswith(prefix + "/"):
        return None
    rest = value[len(prefix) + 1 :].split("/")
    if len(rest) != 2 or not valid_stream_id(rest[0]):
        return None
    return rest[0], rest[1]


def control_filter(prefix: str, group: str | None = None) -> str:
    """The subscription for every stream's control topic; with ``group``, an MQTT v5 shared subscription.

    ``$share/<group>/<prefix>/+/control``: the broker hands each message to exactly one member of
    the group, so each stream's ``start`` is claimed by one worker of a pool.
    """
    plain = f"{prefix}/+/control"
    if group is None:
        return plain
    if not group or any(c in group for c in "/+#\x00"):
        raise ValueError(f"MQTT share group must be one plain topic level, got {group!r}")
    return f"$share/{group}/{plain}"
