"""The facade's lazy names: each resolves to the object it names, and ``import speechstream`` stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import speechstream

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", [n for n in speechstream.__all__ if n != "__version__"])
def test_every_exported_name_resolves_to_its_module_object(name):
    module, attr = target if isinstance(target := speechstream._LAZY[name], tuple) else (target, name)
    assert getattr(speechstream, name) is getattr(__import__(module, fromlist=[attr]), attr)


def test_lazy_map_and_all_agree():
    assert set(speechstream._LAZY) == set(speechstream.__all__) - {"__version__"}


def test_mqtt_names():
    from speechstream.mqtt import FinalDeduper, MqttPublisher, MqttSettings, MqttWorker, topic
    from speechstream.net.protocol import encode_audio, with_offset_header
    from stream.sources.mic import MicSource

    assert speechstream.mqtt_topic is topic
    assert (speechstream.MqttSettings, speechstream.MqttWorker, speechstream.MqttPublisher) == (
        MqttSettings,
        MqttWorker,
        MqttPublisher,
    )
    assert speechstream.FinalDeduper is FinalDeduper and speechstream.MicSource is MicSource
    assert (speechstream.encode_audio, speechstream.with_offset_header) == (encode_audio, with_offset_header)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'topic'"):
        speechstream.topic  # noqa: B018  (only as mqtt_topic)


def test_import_loads_nothing_heavy():
    code = (
        "import sys, speechstream\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('torch', 'numpy', 'soundfile', 'sounddevice', 'aiomqtt', 'engines', 'stream', 'sinks')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
