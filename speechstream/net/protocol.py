"""The speechstream wire protocol: pure parsing and validation, no I/O.

One WebSocket connection (or one MQTT stream, or one TCP connection) is one
audio stream.  The client speaks first::

    client                                   server
    ──────                                   ──────
    {"type": "start", "sample_rate_hz": 48000,
     "format": "s16", "language": "fra"}  ──►   ("language": optional, multilingual models)
                                    ◄───────  {"type": "ready", "stream_id": "...", ...}
    <binary: PCM frame>             ───────►
    <binary: PCM frame>             ───────►
                                    ◄───────  {"type": "partial_transcript", ...}   (stream/events.py)
    {"type": "set_speakers",
     "num_speakers": 2}             ───────►
    {"type": "end"}                 ───────►
                                    ◄───────  ... final_transcript ..., {"type": "end_of_stream", ...}
                                    ◄───────  close 1000

Binary frames are little-endian mono PCM in the declared ``format``:
``s16`` (int16) or ``f32`` (float32, finite, nominally in [-1, 1]).  Every
problem with a frame or a control message is a :class:`ProtocolError`, which
the transports turn into an ``error`` event (``stream.events.ErrorEvent``) and
then either skip the frame or close the connection cleanly (``fatal``).

Everything here is a pure function of its arguments, so the same checks serve
WebSocket, MQTT and TCP, and the fuzz tests run without a network.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np

from speechstream import defaults
from stream.errors import ProtocolError
from stream.sources.push import align_to_offset

__all__ = [
    "PROTOCOL_VERSION",
    "SampleFormat",
    "ProtocolError",
    "Limits",
    "StartConfig",
    "EndOfAudio",
    "SetSpeakers",
    "ControlMessage",
    "parse_control",
    "decode_audio",
    "encode_audio",
    "OFFSET_HEADER_BYTES",
    "split_offset_header",
    "with_offset_header",
    "align_to_offset",
    "TokenBucket",
    "bucket_take",
    "bucket_debit",
    "origin_allowed",
    "token_from_request",
    "check_token",
    "ready_message",
    "valid_stream_id",
]

PROTOCOL_VERSION = 1

SampleFormat = Literal["s16", "f32"]
_BYTES_PER_SAMPLE: dict[str, int] = {"s16": 2, "f32": 4}
_FORMAT_ALIASES = {
    "s16": "s16",
    "pcm16": "s16",
    "s16le": "s16",
    "int16": "s16",
    "f32": "f32",
    "float32": "f32",
    "f32le": "f32",
}

_STREAM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_LANGUAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,31}$")  # "eng", "cmn-script_simplified"

# Largest magnitude accepted for float32 frames.  Slightly clipped audio
# (|x| a bit above 1) is real; 1e30 is a bug or an attack.
_F32_MAX_ABS = 16.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Server-side bounds for one connection.  Defaults are safe for a laptop."""

    max_frame_bytes: int = defaults.MAX_FRAME_BYTES  # one binary frame; 1.4 s of f32 at 48 kHz
    max_control_bytes: int = 4096  # one JSON control message
    min_sample_rate_hz: int = 8_000
    max_sample_rate_hz: int = 192_000
    # Audio rate limit: seconds of audio per wall second, with a burst allowance,
    # so a client may catch up after a network hiccup but cannot flood the
    # recogniser.  Over the rate the server reads more slowly (back-pressure: TCP
    # flow control holds the client back); nothing is dropped.
    max_realtime_factor: float = defaults.MAX_REALTIME_FACTOR
    burst_audio_s: float = 10.0
    # Message rate limit (any frame, binary or text), against floods of tiny frames;
    # also back-pressure, so control messages are delayed at worst, never lost.
    max_messages_per_s: float = 200.0
    burst_messages: int = 400
    max_speakers: int = 32
    max_gap_s: float = 60.0  # offset-header streams: lost audio up to this long is filled with silence


@dataclass(frozen=True, slots=True)
class StartConfig:
    """First message of a stream: what the binary frames contain."""

    sample_rate_hz: int
    sample_format: SampleFormat = "s16"
    stream_id: str | None = None
    num_speakers: int | None = None
    partials: bool = True
    # Each binary frame starts with the uint64 little-endian sample offset (at the declared
    # rate) of its first sample.  For at-least-once transports (MQTT QoS 1): the receiver
    # drops repeated audio and fills lost audio with silence, so stream time stays exact.
    offset_header: bool = False
    # multilingual checkpoints (MMS): the language this stream is recognised in (None: the server's)
    language: str | None = None
    names: tuple[str, ...] = ()  # display names for the stream's speakers, in order of first appearance

    @property
    def bytes_per_sample(self) -> int:
        return _BYTES_PER_SAMPLE[self.sample_format]


@dataclass(frozen=True, slots=True)
class EndOfAudio:
    """The client has sent all its audio; flush and finish the stream."""


@dataclass(frozen=True, slots=True)
class SetSpeakers:
    """Change the speaker settings mid-stream: a count and/or display names."""

    num_speakers: int | None = None
    names: tuple[str, ...] = ()


ControlMessage = StartConfig | EndOfAudio | SetSpeakers


# --------------------------------------------------------------------------- control messages


def valid_stream_id(value: str) -> bool:
    """Stream ids go into MQTT topics and file names: a short, safe alphabet."""
    return bool(_STREAM_ID_RE.match(value))


def _int_field(d: dict[str, Any], key: str, lo: int, hi: int, *, required: bool) -> int | None:
    if key not in d or d[key] is None:
        if required:
            raise ProtocolError("bad_control", f"missing {key!r}")
        return None
    value = d[key]
    # bool is an int in Python; true/false is not a sample rate.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError("bad_control", f"{key!r} must be an integer, got {value!r}"[:200])
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ProtocolError("bad_control", f"{key!r} must be an integer, got {value!r}")
        value = int(value)
    if not lo <= value <= hi:
        raise ProtocolError("bad_control", f"{key!r}={value} outside [{lo}, {hi}]")
    return value


def _parse_start(d: dict[str, Any], limits: Limits) -> StartConfig:
    rate = _int_field(d, "sample_rate_hz", limits.min_sample_rate_hz, limits.max_sample_rate_hz, required=True)
    fmt_raw = d.get("format", "s16")
    if not isinstance(fmt_raw, str) or fmt_raw.lower() not in _FORMAT_ALIASES:
        raise ProtocolError("bad_control", f"'format' must be 's16' or 'f32', got {fmt_raw!r}"[:200])
    channels = d.get("channels", 1)
    if channels != 1 or isinstance(channels, bool):
        raise ProtocolError("bad_control", f"only mono audio is accepted, got channels={channels!r}"[:200])
    stream_id = d.get("stream_id")
    if stream_id is not None and (not isinstance(stream_id, str) or not valid_stream_id(stream_id)):
        raise ProtocolError("bad_control", f"'stream_id' must match {_STREAM_ID_RE.pattern}")
    partials = d.get("partials", True)
    if not isinstance(partials, bool):
        raise ProtocolError("bad_control", "'partials' must be true or false")
    offset_header = d.get("offset_header", False)
    if not isinstance(offset_header, bool):
        raise ProtocolError("bad_control", "'offset_header' must be true or false")
    language = d.get("language")
    if language is not None and (not isinstance(language, str) or not _LANGUAGE_RE.match(language)):
        raise ProtocolError("bad_control", f"'language' must be a language code matching {_LANGUAGE_RE.pattern}")
    return StartConfig(
        sample_rate_hz=int(rate),  # type: ignore[arg-type]
        sample_format=_FORMAT_ALIASES[fmt_raw.lower()],  # type: ignore[arg-type]
        stream_id=stream_id,
        num_speakers=_int_field(d, "num_speakers", 1, limits.max_speakers, required=False),
        partials=partials,
        offset_header=offset_header,
        language=language,
        names=_names_field(d, limits),
    )


def _names_field(d: dict[str, Any], limits: Limits) -> tuple[str, ...]:
    names = d.get("names", [])
    if names is None:
        return ()
    if (
        not isinstance(names, list)
        or len(names) > limits.max_speakers
        or not all(isinstance(n, str) and 0 < len(n) <= 64 for n in names)
    ):
        raise ProtocolError("bad_control", f"'names' must be a list of at most {limits.max_speakers} short strings")
    return tuple(names)


def _parse_set_speakers(d: dict[str, Any], limits: Limits) -> SetSpeakers:
    names = _names_field(d, limits)
    num = _int_field(d, "num_speakers", 1, limits.max_speakers, required=False)
    if num is None and not names:
        raise ProtocolError("bad_control", "set_speakers needs 'num_speakers' or 'names'")
    return SetSpeakers(num_speakers=num, names=names)


def parse_control(text: str | bytes, limits: Limits = Limits()) -> ControlMessage:
    """Parse one JSON control message; raise :class:`ProtocolError` on anything else."""
    if len(text) > limits.max_control_bytes:
        raise ProtocolError("oversize", f"control message of {len(text)} bytes exceeds {limits.max_control_bytes}")
    try:
        d = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        # json.JSONDecodeError is a ValueError; bytes that are not UTF-8 raise UnicodeDecodeError.
        raise ProtocolError("bad_json", f"invalid JSON: {exc}"[:200]) from exc
    except RecursionError as exc:  # "[[[[...]]]]" nested past the interpreter's limit
        raise ProtocolError("bad_json", "invalid JSON: nested too deeply") from exc
    if not isinstance(d, dict):
        raise ProtocolError("bad_control", f"control message must be a JSON object, got {type(d).__name__}")
    kind = d.get("type")
    if kind == "start":
        return _parse_start(d, limits)
    if kind in ("end", "eos", "end_of_stream"):
        return EndOfAudio()
    if kind == "set_speakers":
        return _parse_set_speakers(d, limits)
    raise ProtocolError("bad_control", f"unknown control message type {kind!r}"[:200])


# --------------------------------------------------------------------------- audio frames


def decode_audio(data: bytes | bytearray | memoryview, fmt: SampleFormat, limits: Limits = Limits()) -> np.ndarray:
    """One binary frame -> a fresh float32 array in [-1, 1]-ish.  Rejects what the recogniser must never see."""
    n = len(data)
    if n > limits.max_frame_bytes:
        raise ProtocolError("oversize", f"frame of {n} bytes exceeds max_frame_bytes={limits.max_frame_bytes}")
    width = _BYTES_PER_SAMPLE[fmt]
    if n % width:
        raise ProtocolError("bad_frame", f"frame of {n} bytes is not a whole number of {fmt} samples")
    if fmt == "s16":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) * np.float32(1.0 / 32768.0)
    x = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if x.size and not np.isfinite(x).all():
        raise ProtocolError("bad_frame", "float32 frame contains NaN or infinity")
    if x.size and float(np.abs(x).max()) > _F32_MAX_ABS:
        # Most likely int16 or int32 bytes declared as float32.
        raise ProtocolError("bad_frame", f"float32 frame has samples beyond ±{_F32_MAX_ABS:g}: wrong dtype?")
    return x


OFFSET_HEADER_BYTES = 8


def split_offset_header(data: bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """A frame with an offset header -> (sample offset, PCM bytes)."""
    if len(data) < OFFSET_HEADER_BYTES:
        raise ProtocolError("bad_frame", f"frame of {len(data)} bytes is shorter than its 8-byte offset header")
    return int.from_bytes(bytes(data[:OFFSET_HEADER_BYTES]), "little"), bytes(data[OFFSET_HEADER_BYTES:])


def with_offset_header(offset: int, frame: bytes) -> bytes:
    """Prefix a PCM frame with the sample offset of its first sample."""
    return int(offset).to_bytes(OFFSET_HEADER_BYTES, "little") + frame


def encode_audio(samples: np.ndarray, fmt: SampleFormat = "s16") -> bytes:
    """float32 mono in [-1, 1] -> one binary frame (what a client sends)."""
    x = np.asarray(samples, dtype=np.float32)
    if fmt == "s16":
        return (np.clip(x, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()
    return x.astype("<f4").tobytes()


# --------------------------------------------------------------------------- rate limiting


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """Token bucket as data: ``capacity`` tokens, refilled at ``rate`` per second."""

    capacity: float
    rate: float
    tokens: float
    t: float  # monotonic seconds of the last update

    @classmethod
    def full(cls, capacity: float, rate: float, now: float) -> TokenBucket:
        return cls(capacity=capacity, rate=rate, tokens=capacity, t=now)


def bucket_take(bucket: TokenBucket, amount: float, now: float) -> tuple[bool, TokenBucket]:
    """Take ``amount`` tokens at time ``now``: (allowed, new bucket).  A refused take costs nothing."""
    tokens = min(bucket.capacity, bucket.tokens + max(0.0, now - bucket.t) * bucket.rate)
    if amount <= tokens:
        return True, replace(bucket, tokens=tokens - amount, t=now)
    return False, replace(bucket, tokens=tokens, t=now)


def bucket_debit(bucket: TokenBucket, amount: float, now: float) -> tuple[float, TokenBucket]:
    """Take ``amount`` tokens at time ``now``, going into debt if needed: (seconds to wait, new bucket).

    For back-pressure: the caller waits the returned time before reading more, so the long-run
    rate stays at ``rate`` and nothing is refused (an amount above ``capacity`` just waits longer).
    """
    tokens = min(bucket.capacity, bucket.tokens + max(0.0, now - bucket.t) * bucket.rate) - amount
    wait = 0.0 if tokens >= 0 else -tokens / bucket.rate
    return wait, replace(bucket, tokens=tokens, t=now)


# --------------------------------------------------------------------------- auth and handshake


_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def _is_loopback_name(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host in _LOOPBACK_HOSTS or host.endswith(".localhost") or host.startswith("127.")


def origin_allowed(
    origin: str | None, host_header: str | None, allowed: tuple[str, ...] = (), *, loopback_only: bool = True
) -> bool:
    """May a WebSocket upgrade with this ``Origin`` proceed?  (Cross-site WebSocket hijacking guard.)

    - no ``Origin`` header: not a browser (browsers always send one), allowed;
    - an origin in ``allowed`` (exact, as ``scheme://host[:port]``; ``"*"`` allows any) is allowed;
    - otherwise only the same origin: the origin's ``host[:port]`` equals the request's ``Host``,
      and, when the server listens on loopback only (``loopback_only``), that host is a loopback
      name, so a page that rebinds its own DNS name to 127.0.0.1 is still refused.
    """
    if origin is None:
        return True
    norm = origin.strip().lower().rstrip("/")
    if "*" in allowed or norm in {a.strip().lower().rstrip("/") for a in allowed}:
        return True
    parts = urlsplit(norm)
    if parts.scheme not in ("http", "https") or not parts.netloc or host_header is None:
        return False  # "null" (sandboxed frames, file://) and anything odd
    if parts.netloc != host_header.strip().lower():
        return False
    return not loopback_only or _is_loopback_name(parts.hostname or "")


def token_from_request(path: str, headers: Any) -> str | None:
    """The client's token: ``Authorization: Bearer T`` or ``?token=T`` (browsers cannot set WS headers)."""
    auth = headers.get("Authorization") if headers is not None else None
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip()
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def check_token(expected: str | None, given: str | None) -> bool:
    """True when no token is configured, or ``given`` matches it (constant time)."""
    if expected is None:
        return True
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def ready_message(stream_id: str, cfg: StartConfig, limits: Limits, output_rate_hz: int = 16_000) -> dict[str, Any]:
    """The server's answer to ``start``: a protocol message, not a pipeline event."""
    return {
        "type": "ready",
        "protocol": PROTOCOL_VERSION,
        "stream_id": stream_id,
        "sample_rate_hz": cfg.sample_rate_hz,
        "format": cfg.sample_format,
        "output_sample_rate_hz": output_rate_hz,
        "max_frame_bytes": limits.max_frame_bytes,
    }
