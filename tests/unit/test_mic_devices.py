"""Device selection rules of MicSource (the real device path is tests/integration/test_mic_alsa.py)."""

import pytest

from stream.errors import ConfigError, DeviceNotFoundError
from stream.sources import mic
from stream.sources.mic import InputDevice, MicSource, format_devices, resolve_device

DEVICES = [
    InputDevice(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", 2, 44100, "ALSA", False),
    InputDevice(3, "USB Audio Device: Mic (hw:1,0)", 1, 48000, "ALSA", False),
    InputDevice(5, "default", 32, 44100, "ALSA", True),
    InputDevice(7, "USB Audio Device: Line (hw:1,1)", 2, 48000, "ALSA", False),
]


@pytest.fixture(autouse=True)
def fake_devices(monkeypatch):
    monkeypatch.setattr(mic, "list_devices", lambda: list(DEVICES))


def test_by_index_name_and_default():
    assert resolve_device(3).index == 3
    assert resolve_device("3").index == 3
    assert resolve_device("alc3246").index == 0
    assert resolve_device("DEFAULT").index == 5
    assert resolve_device(None).index == 5


def test_unknown_device_lists_inputs():
    with pytest.raises(DeviceNotFoundError) as exc:
        resolve_device("bluetooth")
    msg = str(exc.value)
    assert "no input device matching 'bluetooth'" in msg
    assert all(d.name in msg for d in DEVICES)
    with pytest.raises(DeviceNotFoundError, match="no input device with index 4"):
        resolve_device(4)


def test_ambiguous_name_asks_for_index():
    with pytest.raises(DeviceNotFoundError, match="ambiguous.*3: USB.*7: USB"):
        resolve_device("usb audio")


def test_format_devices_marks_default():
    lines = format_devices(DEVICES).splitlines()
    assert lines[2].startswith("*") and "default" in lines[2] and "48000 Hz" in lines[1]
    assert format_devices([]) == "no audio input devices found"


def test_bad_options():
    with pytest.raises(ConfigError, match="dtype"):
        MicSource(dtype="int8")
    with pytest.raises(ConfigError, match="block_ms"):
        MicSource(block_ms=50, queue_ms=20)


async def test_callback_queue_drops_oldest_and_surfaces_counters():
    import asyncio

    import numpy as np

    from stream.events import AudioChunk, ErrorEvent, QueueOverflow

    src = MicSource(block_ms=20, queue_ms=40, stream_id="m")  # room for 2 blocks
    src._rate, src._loop, src._wake, src._max_blocks = 16000, asyncio.get_running_loop(), asyncio.Event(), 2
    for i in range(5):  # what the PortAudio thread hands over, as the loop runs it
        src._enqueue(np.full((320, 1), i, np.int16), overflow=(i == 1))
    src.request_stop()
    got = []

    async def emit(e):
        got.append(e)

    await src.run(emit)
    assert src.dropped_blocks == 3 and src.input_overflows == 1
    assert isinstance(got[0], QueueOverflow) and got[0].dropped_total == 3 and got[0].edge == "mic:m"
    assert isinstance(got[1], ErrorEvent) and got[1].code == "input_overflow" and not got[1].fatal
    chunks = [e for e in got if isinstance(e, AudioChunk)]
    assert [c.sample for c in chunks] == [960, 1280]  # capture time kept: a gap where blocks were dropped
    assert [int(c.samples[0]) for c in chunks] == [3, 4] and chunks[0].sample_format == "s16"
