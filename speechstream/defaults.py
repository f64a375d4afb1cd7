"""The defaults of the ``eval``, ``serve`` and ``mqtt-worker`` options that belong to no recogniser or VAD
setting, written once.

The typer options (:mod:`speechstream.cli`, :mod:`speechstream.mqtt.cli`) and the configurations they fill
(``EvalConfig``, ``ServeOptions`` with the WebSocket ``ServerConfig`` and the protocol's ``Limits``,
``MqttSettings``, ``MqttWorker``) read them here. This module imports nothing, so ``--help`` stays light.
The recogniser's and the VAD's defaults live with their configurations (``engines.online.config``,
``stream.config``).
"""

from __future__ import annotations

__all__ = [
    "MODEL_START_TIMEOUT_S",
    "LOOPBACK",
    "EVAL_CONCURRENCY",
    "EVAL_REALTIME",
    "EVAL_PAD_SILENCE_MS",
    "EVAL_BLOCK_MS",
    "SERVE_HOST",
    "SERVE_PORT",
    "SERVE_MAX_CONNECTIONS",
    "SERVE_IDLE_TIMEOUT_S",
    "SERVE_DRAIN_TIMEOUT_S",
    "SERVE_WORKERS",
    "SERVE_WEB",
    "SERVE_DIARIZE",
    "MAX_FRAME_BYTES",
    "MAX_REALTIME_FACTOR",
    "MQTT_HOST",
    "MQTT_PORT",
    "MQTT_PREFIX",
    "MQTT_IDLE_TIMEOUT_S",
    "MQTT_MAX_STREAMS",
    "MQTT_DRAIN_TIMEOUT_S",
    "OPS_HOST",
]

LOOPBACK = "127.0.0.1"

# speechstream eval (EvalConfig)
EVAL_CONCURRENCY = 4  # utterances streamed at once (separate streams of one graph)
EVAL_REALTIME = True  # pace audio like a microphone (latencies need it)
EVAL_PAD_SILENCE_MS = 2000  # silence after each utterance, so endpointing closes it
EVAL_BLOCK_MS = 20  # the paced source's block, as MicSource delivers it

# speechstream serve (ServeOptions; ServerConfig and Limits for the server itself)
SERVE_HOST = LOOPBACK  # loopback unless told otherwise
SERVE_PORT = 8765
SERVE_MAX_CONNECTIONS = 64
SERVE_IDLE_TIMEOUT_S = 30.0  # a stream without audio this long is closed
SERVE_DRAIN_TIMEOUT_S = 30.0  # SIGTERM: seconds open streams get to end
SERVE_WORKERS = 1
SERVE_WEB = True  # the live-caption page on the same port
SERVE_DIARIZE = False
MAX_FRAME_BYTES = 256 * 1024  # one binary audio frame; 1.4 s of f32 at 48 kHz
MAX_REALTIME_FACTOR = 4.0  # seconds of audio per wall second a client may send

# speechstream mqtt-worker (MqttSettings, MqttWorker)
MQTT_HOST = LOOPBACK  # the broker
MQTT_PORT = 1883
MQTT_PREFIX = "speechstream"
MQTT_IDLE_TIMEOUT_S = 30.0  # a stream without audio this long ends
MQTT_MAX_STREAMS = 64
MQTT_DRAIN_TIMEOUT_S = 30.0
OPS_HOST = LOOPBACK  # the /healthz, /readyz, /metrics listener

# graph.start() loads the model inside the recogniser node: a user's 1 GB checkpoint, or the bundled one on a
# busy machine, takes far longer than Graph.start's 10 s default (the bundled model failed to start at load 4)
MODEL_START_TIMEOUT_S = 300.0
