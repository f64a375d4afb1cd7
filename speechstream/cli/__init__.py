"""The ``speechstream`` command line (see :mod:`speechstream.cli._app` for the shared parts).

Each command lives in its own module and registers itself on :data:`app` when imported.
"""

from __future__ import annotations

# Importing a command module registers its command on app; the order here is the order of --help.
from . import transcribe  # noqa: F401  # isort: skip
from . import eval_cmd  # noqa: F401  # isort: skip
from . import serve  # noqa: F401  # isort: skip
from speechstream.mqtt import cli as _mqtt_cli  # noqa: F401  # isort: skip
from ._app import (
    _VAD_AGGRESSIVENESS,
    _VAD_HANGOVER_MS,
    _VAD_MIN_SILENCE_MS,
    _VAD_MIN_SPEECH_MS,
    _VAD_PRE_SPEECH_PAD_MS,
    _VAD_THRESHOLD,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    app,
    main,
)

__all__ = [
    "app",
    "main",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "_VAD_PRE_SPEECH_PAD_MS",
    "_VAD_HANGOVER_MS",
    "_VAD_MIN_SPEECH_MS",
    "_VAD_MIN_SILENCE_MS",
    "_VAD_THRESHOLD",
    "_VAD_AGGRESSIVENESS",
]
