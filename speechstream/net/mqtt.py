"""MQTT transport (aiomqtt): audio in per stream, events out as JSON, with an outbox that survives broker restarts.

Topic scheme (``prefix`` defaults to ``speechstream``; ``<stream>`` is a stream id,
``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``)::

    <prefix>/<stream>/audio       in   binary PCM frames (format from "start", else the worker's default)
    <prefix>/<stream>/control     in   JSON control: {"type":"start","sample_rate_hz":..,"format":..,"language":..},
                                       {"type":"end"}, {"type":"set_speakers",...}  (speechstream.net.protocol)
    <prefix>/<stream>/transcript  out  partial_transcript (QoS 0), final_transcript (QoS 1), end_of_stream (QoS 1)
    <prefix>/<stream>/speaker     out  speaker_turn (QoS 1)
    <prefix>/<stream>/vad         out  speech_started, speech_ended, endpoint (QoS 0)
    <prefix>/<stream>/error       out  error, queue_overflow, audio_lost (QoS 1)

Lost audio. A stream sent with ``"offset_header": true`` carries the sample offset of every
frame, so audio that never reached the worker (frames a broker swallowed when it was killed
and came back without its sessions) shows as a jump. The worker fills the jump with silence,
so stream time stays exact, and reports it as an ``audio_lost`` event (``sample`` to
``end_sample``, with seconds) in the stream, which the worker publishes on ``…/error``. A
stream without offsets cannot measure a loss: when the worker's subscription was down while
such a stream was live, it gets a non-fatal ``error`` with code ``input_interrupted`` saying
for how long.

Delivery. Finals, speaker turns, errors and end-of-stream go out at QoS 1 through
an :class:`MqttPublisher` outbox: a message leaves the outbox only when the broker
acknowledged it (PUBACK), and the publisher reconnects with exponential backoff,
so a broker restart mid-stream loses no final.  QoS 1 is *at least once*: a
message whose PUBACK was lost in the restart is sent again, so consumers drop
repeats by ``(stream_id, segment_id)`` (:class:`FinalDeduper`).  For a consumer to
receive what was published while it was reconnecting, it needs a persistent
session (``clean_session=False``, a fixed client id, QoS 1 subscription) and the
broker needs ``persistence true``, as for any durable MQTT consumer.
QoS 0 messages (partials, VAD) are dropped while disconnected and counted.

Security options (:class:`MqttSettings`): username/password, TLS with a CA file
and optional client certificate, ``tls_insecure`` for self-signed test brokers.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from sinks.mqtt import MqttSink, route, topic, topic_segment
from stream.errors import GraphError
from stream.events import (
    SAMPLE_RATE_HZ,
    ErrorEvent,
)
from stream.sources.push import PushSource

from .protocol import (
    EndOfAudio,
    Limits,
    ProtocolError,
    SampleFormat,
    SetSpeakers,
    StartConfig,
    decode_audio,
    parse_control,
    split_offset_header,
    valid_stream_id,
)
from .speakers import start_speakers

__all__ = [
    "MqttSettings",
    "topic",
    "topic_segment",
    "check_publish_topic",
    "parse_topic",
    "route",
    "MqttPublisher",
    "mqtt_sink",
    "MqttSink",
    "route",
    "topic",
    "topic_segment",
    "MqttIngest",
    "FinalDeduper",
]

log = logging.getLogger("speechstream.net.mqtt")


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "speechstream"
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_certs: str | None = None  # CA bundle for the broker's certificate (TLS)
    certfile: str | None = None  # client certificate (mutual TLS)
    keyfile: str | None = None
    tls_insecure: bool = False  # skip hostname verification (self-signed test brokers only)
    client_id: str | None = None  # fixed id + clean_session=False = persistent session
    clean_session: bool = True
    keepalive_s: int = 30
    timeout_s: float = 10.0
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"MQTT port must be in [1, 65535], got {self.port}")
        if not self.prefix or "+" in self.prefix or "#" in self.prefix:
            raise ValueError(f"MQTT prefix must be a plain topic path, got {self.prefix!r}")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("MQTT TLS client certificate needs both certfile and keyfile")

    def client(self, **overrides: Any) -> aiomqtt.Client:
        """A fresh aiomqtt client for these settings (one per connection attempt)."""
        kw: dict[str, Any] = dict(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            identifier=self.client_id,
            clean_session=self.clean_session if self.client_id else None,
            keepalive=self.keepalive_s,
            timeout=self.timeout_s,
        )
        if self.tls or self.ca_certs or self.certfile:
            ctx = ssl.create_default_context(cafile=self.ca_certs)
            if self.certfile:
                ctx.load_cert_chain(self.certfile, self.keyfile)
            if self.tls_insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            kw["tls_context"] = ctx
            kw["tls_insecure"] = self.tls_insecure or None
        kw.update(overrides)
        return aiomqtt.Client(**kw)


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


# --------------------------------------------------------------------------- publishing


@dataclass(slots=True)
class _Msg:
    topic: str
    payload: bytes
    qos: int


@dataclass
class PublisherStats:
    published: int = 0
    dropped_qos0: int = 0
    dropped_outbox_full: int = 0  # QoS 1 messages lost because the outbox hit outbox_max
    dropped_invalid: int = 0  # refused by the client library (a bug upstream); logged
    connects: int = 0
    disconnects: int = 0


class MqttPublisher:
    """One broker connection and an ordered outbox. ``publish`` never waits; QoS 1 survives reconnects."""

    def __init__(self, settings: MqttSettings, *, outbox_max: int = 100_000, name: str = "mqtt-publisher"):
        self.settings = settings
        self.outbox_max = outbox_max
        self.name = name
        self.stats = PublisherStats()
        self.connected = False
        self._queue: collections.deque[_Msg] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._connected_event = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(self._connected_event.wait(), timeout_s)

    def publish(self, topic_: str, payload: bytes | str, qos: int = 0) -> None:
        """Queue one message. Raises ValueError at once for an invalid topic or QoS (a caller bug)."""
        check_publish_topic(topic_)
        if qos not in (0, 1, 2):
            raise ValueError(f"MQTT QoS must be 0, 1 or 2, got {qos!r}")
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if qos == 0 and not self.connected:
            self.stats.dropped_qos0 += 1
            return
        if len(self._queue) >= self.outbox_max:
            self._make_room()
        self._queue.append(_Msg(topic_, payload, qos))
        self._wake.set()

    def _make_room(self) -> None:
        for i, m in enumerate(self._queue):
            if m.qos == 0:
                del self._queue[i]
                self.stats.dropped_qos0 += 1
                return
        self._queue.popleft()
        self.stats.dropped_outbox_full += 1
        log.error("%s: outbox full (%d), dropped the oldest QoS 1 message", self.name, self.outbox_max)

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until the outbox is empty (everything acknowledged); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not self._queue

    async def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (up to ``timeout_s``), then disconnect."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
        if not done:
            log.warning("%s: %d messages unsent at close", self.name, len(self._queue))
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        backoff = self.settings.reconnect_min_s
        while not (self._closing and not self._queue):
            try:
                async with self.settings.client() as client:
                    self.connected = True
                    self._connected_event.set()
                    self.stats.connects += 1
                    backoff = self.settings.reconnect_min_s
                    await self._pump(client)
                    return
            except aiomqtt.MqttError as exc:
                if self.connected:
                    self.stats.disconnects += 1
                    log.warning("%s: broker connection lost (%s); %d queued", self.name, exc, len(self._queue))
            finally:
                self.connected = False
                self._connected_event.clear()
            self._purge_qos0()
            if self._closing and not self._queue:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

    def _purge_qos0(self) -> None:
        kept = collections.deque(m for m in self._queue if m.qos > 0)
        self.stats.dropped_qos0 += len(self._queue) - len(kept)
        self._queue = kept

    async def _pump(self, client: aiomqtt.Client) -> None:
        # Iterating client.messages raises MqttError the moment the connection drops.
        watcher = asyncio.create_task(_watch_disconnect(client))
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    waker = asyncio.create_task(self._wake.wait())
                    await asyncio.wait({waker, watcher}, return_when=asyncio.FIRST_COMPLETED)
                    waker.cancel()
                    if watcher.done():
                        watcher.result()  # raises MqttError
                        raise aiomqtt.MqttError("disconnected")
                    continue
                msg = self._queue[0]
                pub = asyncio.create_task(client.publish(msg.topic, msg.payload, qos=msg.qos))
                await asyncio.wait({pub, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not pub.done():
                    pub.cancel()
                    await asyncio.gather(pub, return_exceptions=True)
                    watcher.result()
                    raise aiomqtt.MqttError("disconnected")
                try:
                    pub.result()  # raises MqttError if the publish failed
                except (ValueError, TypeError) as exc:
                    # The library refused this one message: drop it rather than stall the outbox forever.
                    log.error("%s: message to %r refused and dropped: %s", self.name, msg.topic, exc)
                    if self._queue and self._queue[0] is msg:
                        self._queue.popleft()
                    self.stats.dropped_invalid += 1
                    continue
                # Acknowledged (QoS 1: PUBACK received; QoS 0: handed to the socket).
                if self._queue and self._queue[0] is msg:
                    self._queue.popleft()
                self.stats.published += 1
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def _watch_disconnect(client: aiomqtt.Client) -> None:
    async for _ in client.messages:  # this client subscribes to nothing; returns only by raising
        pass


# --------------------------------------------------------------------------- ingest (audio in)


@dataclass(eq=False)
class _Stream:
    source: PushSource
    cfg: StartConfig
    last_audio: float


class MqttIngest:
    """Subscribes to ``<prefix>/+/audio`` and ``<prefix>/+/control``; one :class:`PushSource` per stream.

    ``start_stream(source, language)`` adds a source to the running graph, recognised in the
    ``start`` message's ``language`` (None: the worker's default), and raises ProtocolError to
    refuse the stream (:func:`speechstream.net.languages.start_stream`: ``unknown_language``,
    ``unavailable``); ``on_error`` receives protocol errors as ``ErrorEvent`` (the worker publishes them
    on ``…/error``); ``on_set_speakers`` receives ``set_speakers`` controls, and the ``start``
    message's ``num_speakers``/``names`` once the stream has started (a ProtocolError it raises
    is that stream's non-fatal error: :func:`speechstream.net.speakers.set_stream_speakers`).
    A stream starts with its ``start`` control or, failing that, its first audio
    frame (with ``default_rate_hz``/``default_format``); it ends on ``end`` or after
    ``idle_timeout_s`` without audio.
    """

    def __init__(
        self,
        settings: MqttSettings,
        start_stream: Callable[[PushSource, str | None], Awaitable[None]],
        *,
        on_error: Callable[[ErrorEvent], None] | None = None,
        on_set_speakers: Callable[[str, SetSpeakers], None] | None = None,
        default_rate_hz: int = SAMPLE_RATE_HZ,
        default_format: SampleFormat = "s16",
        limits: Limits = Limits(),
        idle_timeout_s: float = 30.0,
        max_streams: int = 64,
    ):
        self.settings = settings
        self._start_stream = start_stream
        self._on_error = on_error
        self._on_set_speakers = on_set_speakers
        self.default = StartConfig(default_rate_hz, default_format)
        self.limits = limits
        self.idle_timeout_s = idle_timeout_s
        self.max_streams = max_streams
        self.streams: dict[str, _Stream] = {}
        self.used: set[str] = set()  # stream ids are not reused within one worker run
        self.stats = {
            "frames": 0,
            "late_frames": 0,
            "protocol_errors": 0,
            "connects": 0,
            "lost_samples": 0,
            "lost_spans": 0,
        }
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._closing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-ingest")

    async def wait_subscribed(self, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(self._subscribed.wait(), timeout_s)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for st in self.streams.values():
            st.source.end()
        self.streams.clear()

    async def _run(self) -> None:
        backoff = self.settings.reconnect_min_s
        idle = asyncio.create_task(self._idle_reaper())
        lost_at: float | None = None  # when the subscription went down
        try:
            while not self._closing:
                try:
                    async with self.settings.client() as client:
                        self.stats["connects"] += 1
                        backoff = self.settings.reconnect_min_s
                        p = self.settings.prefix
                        await client.subscribe([(f"{p}/+/audio", 1), (f"{p}/+/control", 1)])
                        self._subscribed.set()
                        if lost_at is not None:
                            await self._interrupted(time.monotonic() - lost_at)
                            lost_at = None
                        async for message in client.messages:
                            await self._on_message(str(message.topic), message.payload)
                except aiomqtt.MqttError as exc:
                    log.warning("mqtt ingest: broker connection lost (%s); reconnecting", exc)
                finally:
                    if self._subscribed.is_set() and lost_at is None:
                        lost_at = time.monotonic()
                    self._subscribed.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_s)
        finally:
            idle.cancel()
            await asyncio.gather(idle, return_exceptions=True)

    async def _idle_reaper(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.idle_timeout_s / 4))
            now = time.monotonic()
            for sid, st in list(self.streams.items()):
                if now - st.last_audio > self.idle_timeout_s:
                    log.info("mqtt ingest: stream %s idle for %.0f s; ending it", sid, self.idle_timeout_s)
                    self._end(sid)

    async def _interrupted(self, down_s: float) -> None:
        """The subscription was down: streams without offsets cannot tell what they lost, so tell them."""
        for sid, st in list(self.streams.items()):
            if st.cfg.offset_header:
                continue  # a loss shows as a jump in the offsets, and is reported exactly
            await st.source.report(
                ErrorEvent(
                    sid,
                    st.source.samples_fed,
                    sample_rate_hz=st.cfg.sample_rate_hz,
                    code="input_interrupted",
                    fatal=False,
                    message=f"the worker's broker connection was down for {down_s:.2f} s; audio published meanwhile may "
                    'be lost (send with "offset_header": true to have losses measured)',
                )
            )

    def _end(self, sid: str) -> None:
        st = self.streams.pop(sid, None)
        if st is not None:
            st.source.end()

    def _error(self, sid: str, exc: ProtocolError) -> None:
        self.stats["protocol_errors"] += 1
        if self._on_error is None:
            return
        st = self.streams.get(sid)
        sample = st.source.samples_fed * SAMPLE_RATE_HZ // st.cfg.sample_rate_hz if st else 0
        self._on_error(ErrorEvent(sid, sample, code=exc.code, message=exc.message, fatal=exc.fatal))

    async def _open(self, sid: str, cfg: StartConfig) -> _Stream | None:
        if sid in self.used:
            self._error(sid, ProtocolError("stream_id_in_use", f"stream id {sid!r} was already used", fatal=True))
            return None
        if len(self.streams) >= self.max_streams:
            self._error(
                sid, ProtocolError("too_many_streams", f"more than {self.max_streams} live streams", fatal=True)
            )
            return None
        self.used.add(sid)
        st = _Stream(PushSource(sid, cfg.sample_rate_hz), cfg, time.monotonic())
        try:  # an unknown language refuses this stream alone (its later audio is ignored: the id is used)
            await self._start_stream(st.source, cfg.language)
        except ProtocolError as exc:
            self._error(sid, exc)
            return None
        except GraphError as exc:  # the graph is stopping, or refused the source
            self._error(sid, ProtocolError("unavailable", f"cannot start stream {sid!r}: {exc}", fatal=True))
            return None
        self.streams[sid] = st
        speakers = start_speakers(cfg)
        if speakers is not None and self._on_set_speakers is not None:  # before any audio
            try:
                self._on_set_speakers(sid, speakers)
            except ProtocolError as exc:  # no diarizer, or a setting it cannot keep: the stream runs on
                self._error(sid, exc)
        return st

    async def _on_message(self, topic_: str, payload: Any) -> None:
        parsed = parse_topic(self.settings.prefix, topic_)
        if parsed is None:
            return
        sid, kind = parsed
        data = (
            payload if isinstance(payload, (bytes, bytearray)) else (b"" if payload is None else str(payload).encode())
        )
        try:
            if kind == "control":
                msg = parse_control(bytes(data), self.limits)
                st = self.streams.get(sid)
                if isinstance(msg, StartConfig):
                    if st is not None:
                        raise ProtocolError("bad_control", "'start' was already received; ignored")
                    await self._open(sid, msg)
                elif isinstance(msg, EndOfAudio):
                    self._end(sid)
                elif isinstance(msg, SetSpeakers) and self._on_set_speakers is not None:
                    if st is None:  # nothing would forget settings of a stream that never starts
                        raise ProtocolError("bad_control", "'set_speakers' before the stream started; ignored")
                    self._on_set_speakers(sid, msg)
            elif kind == "audio":
                st = self.streams.get(sid)
                if st is None and sid in self.used:
                    self.stats["late_frames"] += 1  # audio after the stream ended (e.g. a QoS 1 redelivery)
                    return
                if st is None:
                    st = await self._open(sid, self.default)
                    if st is None:
                        return
                if st.cfg.offset_header:
                    offset, pcm = split_offset_header(data)
                    x = decode_audio(pcm, st.cfg.sample_format, self.limits)
                    max_gap = int(self.limits.max_gap_s * st.cfg.sample_rate_hz)
                    st.last_audio = time.monotonic()
                    self.stats["frames"] += 1
                    lost = await st.source.feed_at(x, offset, max_gap)
                    if lost is not None:
                        self.stats["lost_samples"] += lost.lost_samples
                        self.stats["lost_spans"] += 1
                        log.warning("mqtt ingest: stream %s: %s", sid, lost.message)
                else:
                    x = decode_audio(bytes(data), st.cfg.sample_format, self.limits)
                    st.last_audio = time.monotonic()
                    self.stats["frames"] += 1
                    await st.source.feed(x)
        except ProtocolError as exc:
            self._error(sid, exc)
            if exc.fatal:
                self._end(sid)


# --------------------------------------------------------------------------- consuming


@dataclass
class FinalDeduper:
    """QoS 1 is at least once: keep the first copy of each final, by (stream_id, segment_id)."""

    seen: set[tuple[str, str]] = field(default_factory=set)
    duplicates: int = 0

    def first_time(self, event: dict[str, Any]) -> bool:
        if event.get("type") != "final_transcript":
            return True
        key = (event["stream_id"], event["segment_id"])
        if key in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(key)
        return True


def decode_event(payload: bytes | bytearray | str) -> dict[str, Any]:
    """One published event payload -> its JSON dict."""
    return json.loads(payload)


def mqtt_sink(settings: MqttSettings = MqttSettings(), **kwargs: Any) -> MqttSink:
    """An :class:`sinks.mqtt.MqttSink` publishing through its own :class:`MqttPublisher` to ``settings``' broker.

    ``kwargs`` go to the sink (``close_timeout_s``, ``stream_id``, ``on_error``)."""
    publisher = MqttPublisher(settings, name="mqtt-sink")
    where = f"{settings.host}:{settings.port}/{settings.prefix}"
    return MqttSink(publisher, prefix=settings.prefix, where=where, **kwargs)
