"""MQTT audio in: :class:`MqttIngest` subscribes to the streams' control and audio topics, one PushSource per stream.


Lost audio. A stream sent with ``"offset_header": true`` carries the sample offset of every
frame, so audio that never reached the worker (frames a broker swallowed when it was killed
and came back without its sessions) shows as a jump. The worker fills the jump with silence,
so stream time stays exact, and reports it as an ``audio_lost`` event (``sample`` to
``end_sample``, with seconds) in the stream, which the worker publishes on ``…/error``. A
stream without offsets cannot measure a loss: when the worker's subscription was down while
such a stream was live, it gets a non-fatal ``error`` with code ``input_interrupted`` saying
for how long.

In a pool (``group`` set), the control topics are an MQTT v5 shared subscription
(``$share/<group>/<prefix>/+/control``): the broker gives each ``start`` to one worker of
the group, and only that worker then subscribes to the stream's ``audio`` topic, until the
stream ends, and to its ``control`` topic (its ``end`` and ``set_speakers`` reach the claimer,
whichever member the shared subscription hands them to). Audio of a stream this worker did not
claim never reaches it.

Takeover uses broker features only. Each pool worker keeps a retained status
``<prefix>/_pool/<group>/workers/<worker>`` (``online``) whose will is ``offline``: the broker
publishes it when the worker's connection dies (a killed process included). A claimed
stream has a retained ``<prefix>/<stream>/claim`` (``{"worker", "status_topic"}``, cleared at its
end). A client watches its stream's claim and that worker's status; on ``offline`` it sends
``start`` again (the shared subscription gives it to a live worker) and re-sends its audio from
the end of the last final it received, with the offset header, so no final is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from speechstream.net.protocol import (
    EndOfAudio,
    Limits,
    ProtocolError,
    SampleFormat,
    SetSpeakers,
    StartConfig,
    decode_audio,
    parse_control,
    split_offset_header,
)
from speechstream.net.speakers import start_speakers
from stream.errors import GraphError
from stream.events import SAMPLE_RATE_HZ, ErrorEvent
from stream.sources.push import PushSource

from .settings import MqttSettings
from .topics import control_filter, parse_topic

__all__ = ["MqttIngest"]

log = logging.getLogger("speechstream.mqtt")


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
        on_error: Callable[[ErrorEvent], object] | None = None,
        on_set_speakers: Callable[[str, SetSpeakers], None] | None = None,
        default_rate_hz: int = SAMPLE_RATE_HZ,
        default_format: SampleFormat = "s16",
        limits: Limits = Limits(),
        idle_timeout_s: float = 30.0,
        max_streams: int = 64,
        group: str | None = None,
        on_claim: Callable[[str, StartConfig], None] | None = None,
        on_release: Callable[[str], None] | None = None,
        on_audio: Callable[[str, int, float, float], None] | None = None,
        worker_id: str | None = None,
    ):
        self.settings = settings
        self.group = group
        self._control_filter = control_filter(settings.prefix, group)  # checks the group name
        self._on_claim = on_claim
        self._on_release = on_release
        self._on_audio = on_audio
        self.worker_id = worker_id or settings.client_id or f"worker-{id(self):x}"
        self._client: aiomqtt.Client | None = None
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
            "claims": 0,
        }
        self.claiming = True  # False after stop_claiming(): new streams go to the other workers
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._closing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-ingest")

    async def wait_subscribed(self, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(self._subscribed.wait(), timeout_s)

    @property
    def connected(self) -> bool:
        """Subscribed on a live broker connection."""
        return self._subscribed.is_set()

    async def stop_claiming(self) -> None:
        """Drain: take no new stream. A pool member leaves the shared control subscription, so the broker
        hands new ``start`` messages to the other members; its own streams' topics stay subscribed."""
        self.claiming = False
        client = self._client
        if client is not None and self.group is not None:
            try:
                await client.unsubscribe(self._control_filter)
            except aiomqtt.MqttError:
                pass  # the connection went; the next session does not subscribe to it

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
                    async with self._make_client() as client:
                        self.stats["connects"] += 1
                        backoff = self.settings.reconnect_min_s
                        p = self.settings.prefix
                        if self.group is None:
                            await client.subscribe([(f"{p}/+/audio", 1), (self._control_filter, 1)])
                        else:  # audio only for the streams this worker claimed (again, after a reconnect)
                            subs = [(self._control_filter, 1)] if self.claiming else []
                            subs += [(f"{p}/{sid}/{k}", 1) for sid in self.streams for k in ("audio", "control")]
                            if subs:
                                await client.subscribe(subs)
                        self._client = client
                        if self.group is not None:
                            await self._publish_retained(self.status_topic, b"online")
                        self._subscribed.set()
                        if lost_at is not None:
                            await self._interrupted(time.monotonic() - lost_at)
                            lost_at = None
                        async for message in client.messages:
                            await self._on_message(str(message.topic), message.payload)
                except aiomqtt.MqttError as exc:
                    log.warning("mqtt ingest: broker connection lost (%s); reconnecting", exc)
                finally:
                    self._client = None
                    if self._subscribed.is_set() and lost_at is None:
                        lost_at = time.monotonic()
                    self._subscribed.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_s)
        finally:
            idle.cancel()
            await asyncio.gather(idle, return_exceptions=True)

    def _make_client(self) -> aiomqtt.Client:
        if self.group is None:
            return self.settings.client()
        # a pool member speaks MQTT v5 (shared subscriptions); its session is clean: a stream it
        # claimed and lost on a disconnect is ended, and the pool's takeover gives it to a live worker
        will = aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True)
        return self.settings.client(protocol=aiomqtt.ProtocolVersion.V5, clean_session=None, will=will)

    @property
    def status_topic(self) -> str:
        """Retained ``online``; the broker publishes the will ``offline`` the moment this worker's connection dies."""
        return f"{self.settings.prefix}/_pool/{self.group}/workers/{self.worker_id}"

    async def _publish_retained(self, topic_: str, payload: bytes) -> None:
        client = self._client
        if client is None:
            return
        try:
            await client.publish(topic_, payload, qos=1, retain=True)
        except aiomqtt.MqttError:
            pass  # the connection went: the will tells the pool

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
            if self.group is not None:
                if self._client is not None:
                    topics = [f"{self.settings.prefix}/{sid}/{k}" for k in ("audio", "control")]
                    asyncio.ensure_future(self._unsubscribe(self._client, topics))
                asyncio.ensure_future(self._publish_retained(f"{self.settings.prefix}/{sid}/claim", b""))
                if self._on_release is not None:
                    self._on_release(sid)

    @staticmethod
    async def _unsubscribe(client: aiomqtt.Client, topics: list[str]) -> None:
        try:
            await client.unsubscribe(topics)
        except aiomqtt.MqttError:
            pass  # the connection went; the next session does not subscribe to it

    def _error(self, sid: str, exc: ProtocolError) -> None:
        self.stats["protocol_errors"] += 1
        if self._on_error is None:
            return
        st = self.streams.get(sid)
        sample = st.source.samples_fed * SAMPLE_RATE_HZ // st.cfg.sample_rate_hz if st else 0
        self._on_error(ErrorEvent(sid, sample, code=exc.code, message=exc.message, fatal=exc.fatal))

    async def _open(self, sid: str, cfg: StartConfig) -> _Stream | None:
        if not self.claiming:  # a pool's client sends start again: the broker gives it to a live member
            self._error(sid, ProtocolError("unavailable", "the worker is draining", fatal=True))
            return None
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
        if self.group is not None:  # this worker claimed the stream: now (and only now) its audio
            if self._client is not None:
                p = self.settings.prefix
                await self._client.subscribe([(f"{p}/{sid}/audio", 1), (f"{p}/{sid}/control", 1)])
            # the retained claim record: who serves the stream (a client watches it and the worker's status)
            claim = json.dumps({"worker": self.worker_id, "status_topic": self.status_topic}).encode()
            await self._publish_retained(f"{self.settings.prefix}/{sid}/claim", claim)
            self.stats["claims"] += 1
            if self._on_claim is not None:
                self._on_claim(sid, cfg)
        speakers = start_speakers(cfg)
        if speakers is not None and self._on_set_speakers is not None:  # before any audio
            try:
                self._on_set_speakers(sid, speakers)
            except ProtocolError as exc:  # no diarizer, or a setting it cannot keep: the stream runs on
                self._error(sid, exc)
        return st

    def _fed(self, sid: str, st: _Stream, n: int, t_in: float) -> None:
        if self._on_audio is not None:  # (stream, 16 kHz samples fed so far, seconds in this frame, arrival)
            rate = st.cfg.sample_rate_hz
            self._on_audio(sid, st.source.samples_fed * SAMPLE_RATE_HZ // rate, n / rate, t_in)

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
                if self.group is not None and (st is None) != isinstance(msg, StartConfig):
                    # the shared subscription hands a stream's later controls to any member, and the
                    # claimer also gets them on its own subscription: a start of a live stream is a
                    # repeat (sticky), another control of a stream not live here is another worker's
                    return
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
                    st.last_audio = t_in = time.monotonic()
                    self.stats["frames"] += 1
                    lost = await st.source.feed_at(x, offset, max_gap)
                    self._fed(sid, st, x.shape[0], t_in)
                    if lost is not None:
                        self.stats["lost_samples"] += lost.lost_samples
                        self.stats["lost_spans"] += 1
                        log.warning("mqtt ingest: stream %s: %s", sid, lost.message)
                else:
                    x = decode_audio(bytes(data), st.cfg.sample_format, self.limits)
                    st.last_audio = t_in = time.monotonic()
                    self.stats["frames"] += 1
                    await st.source.feed(x)
                    self._fed(sid, st, x.shape[0], t_in)
        except ProtocolError as exc:
            self._error(sid, exc)
            if exc.fatal:
                self._end(sid)


# --------------------------------------------------------------------------- consuming
