"""The ``speechstream`` command line (:mod:`speechstream.cli._app`: the app and its one-line errors;
:mod:`speechstream.cli.options`: the options transcribe, eval and serve share, declared once).

Each command lives in its own module and registers itself on :data:`app` when imported.
"""

from __future__ import annotations

# Importing a command module registers its command on app; the order here is the order of --help.
from . import transcribe  # noqa: F401  # isort: skip
from . import eval_cmd  # noqa: F401  # isort: skip
from . import serve  # noqa: F401  # isort: skip
from speechstream.mqtt import cli as _mqtt_cli  # noqa: F401  # isort: skip
from . import options  # noqa: F401  # isort: skip
from ._app import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, app, main

__all__ = ["app", "main", "options", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "EXIT_INTERRUPTED"]
