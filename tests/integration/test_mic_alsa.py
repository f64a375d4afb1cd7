"""The microphone path on a real PortAudio device: ALSA's ``file`` plugin plays a known
recording into ``MicSource``; VAD segments must equal those of ``FileSource`` on the same audio.

ALSA reads its configuration when PortAudio initialises, so the microphone side runs in a
subprocess whose environment selects our asound.conf (``ALSA_CONFIG_PATH``). The plugin's
``null`` slave is not paced: the device delivers the file faster than real time, so the
test gives MicSource a queue that holds the whole take and checks nothing was dropped.
Needs Debian packages espeak-ng and libportaudio2 (ALSA comes with it).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stream.events import SpeechEnded
from stream.graph import Graph
from stream.node import Collect
from stream.resample import Resample
from stream.sources.file import FileSource
from stream.vad_node import VadNode
from tests.support.tts import espeak_ng, have_espeak, speech_with_pauses, write_raw_s16

# Only a missing TTS binary skips; a missing PortAudio/ALSA fails (CI installs libportaudio2).
pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed (apt install espeak-ng)")

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you get this.",
    "See you tomorrow.",
]

MIC_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from stream.events import SpeechEnded
    from stream.graph import Graph
    from stream.node import Collect
    from stream.queues import EdgeSpec
    from stream.resample import Resample
    from stream.sources.mic import MicSource, list_devices
    from stream.vad_node import VadNode

    async def main(device, duration_ms):
        src = MicSource(device, stream_id="mic", max_duration_ms=duration_ms, queue_ms=10 * duration_ms,
                        capture_edge=EdgeSpec(100_000, "drop_oldest"))
        sink = Collect(keep_audio=False)
        await Graph([src], [Resample(), VadNode.create("webrtc"), sink], bug_policy="raise").run(timeout_s=120)
        print(json.dumps({
            "segments": [[e.start_sample, e.sample] for e in sink.events if isinstance(e, SpeechEnded)],
            "eos": sink.events[-1].sample, "rate": src.sample_rate_hz, "dropped": src.dropped_blocks,
            "overflows": src.input_overflows, "devices": [d.name for d in list_devices()],
        }))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


@pytest.fixture(scope="module")
def alsa_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alsa")
    x, regions = speech_with_pauses([espeak_ng(s) for s in SENTENCES], [1.0, 1.5])
    raw = tmp / "audio.raw"
    write_raw_s16(str(raw), x)
    wav = tmp / "audio.wav"
    sf.write(wav, (np.clip(x, -1, 1) * 32767).astype("<i2"), 16000, subtype="PCM_16")  # the same samples
    conf = tmp / "asound.conf"
    conf.write_text(
        textwrap.dedent(
            f"""
            pcm.filemic {{
                type file
                slave.pcm "null"
                file "/dev/null"
                infile "{raw}"
                format "raw"
            }}
            pcm.!default {{
                type asym
                playback.pcm "null"
                capture.pcm "filemic"
            }}
            """
        )
    )
    env = dict(os.environ, ALSA_CONFIG_PATH=f"/usr/share/alsa/alsa.conf:{conf}")
    return x, wav, env


def run_mic(env, device, duration_ms):
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", MIC_SCRIPT, device, str(duration_ms)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return proc


async def test_mic_segments_equal_file_segments(alsa_setup):
    x, wav, env = alsa_setup
    duration_ms = x.shape[0] * 1000 // 16000 + 1000  # the take plus 1 s of the device's trailing silence
    proc = run_mic(env, "filemic", duration_ms)
    assert proc.returncode == 0, proc.stderr
    mic = json.loads(proc.stdout.strip().splitlines()[-1])
    assert mic["rate"] == 16000 and mic["dropped"] == 0
    assert mic["eos"] == 16 * duration_ms
    assert "filemic" in mic["devices"]

    sink = Collect(keep_audio=False)
    await Graph([FileSource(wav, stream_id="file", progress=False)], [Resample(), VadNode.create("webrtc"), sink]).run()
    file_segments = [[e.start_sample, e.sample] for e in sink.events if isinstance(e, SpeechEnded)]
    assert len(file_segments) == len(SENTENCES)
    assert mic["segments"] == file_segments


def test_unknown_device_lists_available(alsa_setup):
    _, _, env = alsa_setup
    script = textwrap.dedent(
        """
        import asyncio
        from stream.errors import DeviceNotFoundError
        from stream.sources.mic import MicSource
        async def main():
            try:
                await MicSource("no-such-mic").start()
            except DeviceNotFoundError as exc:
                print(exc)
        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout
    assert "no input device matching 'no-such-mic'" in out and "filemic" in out and "default" in out


def test_device_by_index(alsa_setup):
    _, _, env = alsa_setup
    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            "from stream.sources.mic import list_devices; "
            "print([d.index for d in list_devices() if d.name == 'filemic'][0])",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    index = listing.stdout.strip()
    proc = run_mic(env, index, 500)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["eos"] == 8000
