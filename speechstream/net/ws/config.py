""":class:`ServerConfig`: where the WebSocket server listens, who may connect, and its limits."""

from __future__ import annotations

from dataclasses import dataclass

from speechstream import defaults

from ..protocol import Limits

__all__ = ["ServerConfig"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = defaults.SERVE_HOST  # loopback unless told otherwise
    port: int = defaults.SERVE_PORT  # 0: any free port (see CaptionServer.port)
    reuse_port: bool = False  # SO_REUSEPORT: several worker processes share the port (serve --workers)
    token: str | None = None
    limits: Limits = Limits()
    max_connections: int = defaults.SERVE_MAX_CONNECTIONS
    outbound_queue: int = 256  # events waiting for one client; partials drop first
    start_timeout_s: float = 10.0  # the client must send "start" within this
    # after "start", a stream without audio this long is closed
    idle_timeout_s: float | None = defaults.SERVE_IDLE_TIMEOUT_S
    eos_timeout_s: float = 30.0  # after "end", wait at most this for the stream's last events
    close_timeout_s: float = 2.0
    ping_interval_s: float | None = 5.0
    # A client that answers no ping, or accepts no event, within this is a slow consumer.
    ping_timeout_s: float = 10.0
    # Origins (``scheme://host[:port]``) allowed besides the page's own; "*" allows any.
    allow_origins: tuple[str, ...] = ()
    serve_web: bool = defaults.SERVE_WEB
    # After streams end, hand freed heap back to the OS (glibc malloc_trim) this many
    # seconds later, at most once per that interval; None: never.
    trim_memory_s: float | None = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.max_connections < 1 or self.outbound_queue < 1:
            raise ValueError(f"max_connections and outbound_queue must be >= 1: {self!r}")
        if self.token is not None and not self.token:
            raise ValueError("token must be a non-empty string or None")
        for name in ("idle_timeout_s", "ping_interval_s", "trim_memory_s"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0 or None, got {v!r}")
        if not self.ping_timeout_s > 0:
            raise ValueError(f"ping_timeout_s must be > 0, got {self.ping_timeout_s!r}")
        for o in self.allow_origins:
            if o != "*" and not (o.startswith(("http://", "https://")) and "/" not in o.split("://", 1)[1].rstrip("/")):
                raise ValueError(f"allowed origin must be 'scheme://host[:port]' or '*', got {o!r}")
