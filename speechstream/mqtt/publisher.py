"""The MQTT publisher: one broker connection and an :class:`~speechstream.mqtt.outbox.Outbox`.


Delivery. Finals, speaker turns, errors and end-of-stream go out at QoS 1 through
an :class:`MqttPublisher` outbox: a message leaves the outbox only when the broker
acknowledged it (PUBACK), and the publisher reconnects with exponential backoff,
so a broker restart mid-stream loses no final.  QoS 1 is *at least once*: a
message whose PUBACK was lost in the restart is sent again, so consumers drop
repeats by ``(stream_id, segment_id)`` (:class:`FinalDeduper`).  For a consumer to
receive what was published while it was reconnecting, it needs a persistent
session (``clean_session=False``, a fixed client id, QoS 1 subscription) and the
broker needs ``persistence true``, as for any durable MQTT consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiomqtt

from sinks.mqtt import MqttSink

from .outbox import Msg, Outbox, PublisherStats
from .settings import MqttSettings
from .topics import check_publish_topic

__all__ = ["MqttPublisher", "PublisherStats", "mqtt_sink"]

log = logging.getLogger("speechstream.mqtt")


class MqttPublisher:
    """One broker connection and an ordered outbox. ``publish`` never waits; QoS 1 survives reconnects."""

    def __init__(self, settings: MqttSettings, *, outbox_max: int = 100_000, name: str = "mqtt-publisher"):
        self.settings = settings
        self.outbox_max = outbox_max
        self.name = name
        self.stats = PublisherStats()
        self.connected = False
        self._queue = Outbox(outbox_max, self.stats, name)
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
        self._queue.append(Msg(topic_, payload, qos))
        self._wake.set()

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
            self._queue.purge_qos0()
            if self._closing and not self._queue:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

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
                msg = self._queue.head()
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
                    self._queue.done(msg)
                    self.stats.dropped_invalid += 1
                    continue
                # Acknowledged (QoS 1: PUBACK received; QoS 0: handed to the socket).
                self._queue.done(msg)
                self.stats.published += 1
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def _watch_disconnect(client: aiomqtt.Client) -> None:
    async for _ in client.messages:  # this client subscribes to nothing; returns only by raising
        pass


# --------------------------------------------------------------------------- ingest (audio in)


def mqtt_sink(settings: MqttSettings = MqttSettings(), **kwargs: Any) -> MqttSink:
    """An :class:`sinks.mqtt.MqttSink` publishing through its own :class:`MqttPublisher` to ``settings``' broker.

    ``kwargs`` go to the sink (``close_timeout_s``, ``stream_id``, ``on_error``)."""
    publisher = MqttPublisher(settings, name="mqtt-sink")
    where = f"{settings.host}:{settings.port}/{settings.prefix}"
    return MqttSink(publisher, prefix=settings.prefix, where=where, **kwargs)
