"""``speechstream serve``: a WebSocket server hosting many concurrent streams, plus the web page.

Each WebSocket connection is one stream of ONE shared :class:`~stream.graph.Graph`
(so model work can be batched across streams).  A connection speaks the protocol
of :mod:`speechstream.net.protocol`; its audio goes into a
:class:`~stream.sources.push.PushSource`; the graph's tail hands every event to
a router that puts it on that connection's outbound edge; a sender task writes
the events to the socket as JSON (``stream/events.py``).

The same port serves the live-caption page (``/``, files of ``speechstream/web``) and
the event schema (``/events.schema.json``); the WebSocket endpoint is ``/ws``.

Safety (defaults in :class:`ServerConfig` and :class:`~speechstream.net.protocol.Limits`):

- binds 127.0.0.1 unless told otherwise; optional token (``?token=`` or
  ``Authorization: Bearer``), refused with HTTP 401 before the upgrade;
- WebSocket upgrades from a browser page of another origin are refused with
  HTTP 403 before the upgrade (same origin only, plus ``allow_origins``);
- only GET answers on the HTTP side (405 otherwise);
- at most ``max_connections`` streams (HTTP 503 past that); a stream that sends
  no audio for ``idle_timeout_s`` is closed (``idle_timeout`` error, 1008);
- frames above ``max_frame_bytes`` are skipped with an ``oversize`` error;
  frames above 4x that are refused by the WebSocket layer (close 1009);
- per-connection audio-rate and message-rate token buckets applied as
  back-pressure: over the rate the server stops reading the socket until the
  bucket allows the frame, so TCP flow control slows the client; no frame and
  no control message is ever dropped for rate;
- malformed frames give an ``error`` event and are skipped; a missing or bad
  ``start`` is fatal for that connection only (error event, then close 1008);
- a graph that falls behind slows each stream's reading the same way (a
  ``block`` capture edge): audio is delayed, never dropped on the way in;
- every queue is bounded: the outbound edge of each connection is
  ``drop_oldest`` for partials (drops reported as ``queue_overflow`` events); a
  client that does not read even its finals, answers no ping within
  ``ping_timeout_s`` or accepts no data for that long is closed with 1008
  "slow consumer: ..." so one slow client never stalls the shared graph;
- a client that vanishes ends its stream: its audio not yet processed is
  discarded (nobody will read the result), the graph flushes and forgets the
  stream, and the connection's tasks end; afterwards the server hands freed
  heap back to the OS (``malloc_trim``, glibc), so memory returns to its level.

The room, top to bottom:

- :mod:`.config`: :class:`ServerConfig`
- :mod:`.server`: :class:`CaptionServer`, start, drain and stop
- :mod:`.http`: the requests before the upgrade (token, origin, ``/healthz``, ``/readyz``, ``/metrics``, the page)
- :mod:`.session`: one connection's tasks (reader, sender, close watcher, keepalive)
- :mod:`.control`: the ``start`` handshake and the control messages after it
- :mod:`.core`: the shared state, the event routing from the graph's tail, the heap trim
- :mod:`.conn`: one connection's bookkeeping
"""

from __future__ import annotations

from .config import ServerConfig
from .http import WEB_DIR
from .server import CaptionServer

__all__ = ["ServerConfig", "CaptionServer", "WEB_DIR"]
