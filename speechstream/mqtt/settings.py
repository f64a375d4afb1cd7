"""Broker connection settings for every MQTT client of a worker (address, auth, TLS, session, reconnect)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import aiomqtt

from speechstream import defaults

__all__ = ["MqttSettings"]


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str = defaults.MQTT_HOST
    port: int = defaults.MQTT_PORT
    prefix: str = defaults.MQTT_PREFIX
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
