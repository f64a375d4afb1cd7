"""Enrollment: clips become named voices; bad clips fail with a message naming them."""

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from engines.speakers.clustering import ClusterConfig, assign, init_state
from engines.speakers.enrollment import EnrollmentError, enroll, parse_speaker_arg


class CountingEmbedder:
    """Stand-in for the model: records what it was asked to embed."""

    dim = 4
    min_samples = 1

    def __init__(self):
        self.seen = []

    def embed(self, audio):
        self.seen.append(len(audio))
        return np.array([1.0, 0, 0, 0], np.float32)


def test_parse_speaker_arg():
    assert parse_speaker_arg("alice=clips/a b.wav") == ("alice", __import__("pathlib").Path("clips/a b.wav"))
    for bad in ("alice", "=x.wav", "alice="):
        with pytest.raises(EnrollmentError, match="NAME=clip.wav"):
            parse_speaker_arg(bad)


def test_missing_clip_is_named(tmp_path):
    clip = tmp_path / "nobody.wav"
    with pytest.raises(EnrollmentError, match=r"nobody\.wav.*'bob'.*does not exist"):
        enroll(CountingEmbedder(), {"bob": clip})


def test_unreadable_clip_is_named(tmp_path):
    clip = tmp_path / "text.wav"
    clip.write_text("not audio")
    with pytest.raises(EnrollmentError, match=r"text\.wav.*cannot be read"):
        enroll(CountingEmbedder(), {"bob": clip})


def test_silent_clip_is_named(tmp_path):
    clip = tmp_path / "quiet.wav"
    sf.write(clip, np.zeros(32000, np.float32), 16000)
    with pytest.raises(EnrollmentError, match=r"quiet\.wav.*'carol'.*silent"):
        enroll(CountingEmbedder(), {"carol": clip})


def test_too_short_clip_is_named(tmp_path):
    clip = tmp_path / "short.wav"
    audio = np.zeros(48000, np.float32)
    audio[16000:22400] = 0.1 * np.random.default_rng(0).standard_normal(6400)  # 0.4 s of sound
    sf.write(clip, audio, 16000)
    with pytest.raises(EnrollmentError, match=r"short\.wav.*'dan'.*0\.40 s of speech"):
        enroll(CountingEmbedder(), {"dan": clip})


def test_clip_is_resampled_and_silence_dropped(tmp_path):
    clip = tmp_path / "stereo48k.wav"
    sound = 0.1 * np.random.default_rng(1).standard_normal(48000 * 2)
    audio = np.concatenate([np.zeros(48000), sound, np.zeros(48000)])
    sf.write(clip, np.stack([audio, audio], axis=1).astype(np.float32), 48000)
    emb = CountingEmbedder()
    voices = enroll(emb, {"eve": clip})
    assert set(voices) == {"eve"}
    assert abs(emb.seen[0] - 32000) <= 320  # 2 s of sound at 16 kHz, the 2 s of silence dropped


flite = pytest.mark.skipif(shutil.which("flite") is None, reason="needs Debian flite")


def _say(tmp_path, voice, text):
    path = tmp_path / f"{voice}_{abs(hash(text))}.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
    return path


@flite
def test_enrolled_voices_get_their_names_and_others_stay_anonymous(tmp_path):
    from engines.speakers.embedding import VoiceEncoderEmbedder
    from engines.speakers.enrollment import load_clip

    emb = VoiceEncoderEmbedder.load()
    voices = enroll(emb, {
        "sally": _say(tmp_path, "slt", "The museum will be closed on Monday for repairs."),
        "rob": _say(tmp_path, "rms", "They decided to leave early to avoid the heavy traffic."),
    })
    cfg = ClusterConfig(threshold=0.75, confirm=1)
    state = init_state(cfg, voices)
    labels = []
    for voice in ("rms", "slt", "kal16"):
        audio = load_clip(_say(tmp_path, voice, "Could you tell me where the nearest station is?"))
        a, state = assign(state, emb.embed(audio), cfg)
        labels.append(a.label)
    assert labels == ["rob", "sally", "S1"]
