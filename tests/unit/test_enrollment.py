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
    voices = enroll(
        emb,
        {
            "sally": _say(tmp_path, "slt", "The museum will be closed on Monday for repairs."),
            "rob": _say(tmp_path, "rms", "They decided to leave early to avoid the heavy traffic."),
        },
    )
    cfg = ClusterConfig(threshold=0.75, confirm=1)
    state = init_state(cfg, voices)
    labels = []
    for voice in ("rms", "slt", "kal16"):
        audio = load_clip(_say(tmp_path, voice, "Could you tell me where the nearest station is?"))
        a, state = assign(state, emb.embed(audio), cfg)
        labels.append(a.label)
    assert labels == ["rob", "sally", "S1"]


# --------------------------------------------------------------------------- CLI: --speaker, --max-speakers


def _cli(*args):
    from typer.testing import CliRunner

    from speechstream.cli import app

    return CliRunner().invoke(app, list(args))


def _example(tmp_path):
    clip = tmp_path / "in.wav"
    sf.write(clip, 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), 16000)
    return clip


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--speaker", "alice"], "NAME=clip.wav"),
        (["--speaker", "alice=/nowhere/alice.wav"], "alice=/nowhere/alice.wav: enrollment clip not found"),
        (["--max-speakers", "1", "--speaker", "a=IN", "--speaker", "b=IN"], "exceed --max-speakers 1"),
        (["--speaker", "a=IN", "--speaker", "a=IN"], "'a' is given twice"),
        (["--no-diarize", "--speaker", "a=IN"], "need diarization"),
    ],
)
def test_cli_speaker_options_fail_with_one_line(tmp_path, args, needle):
    clip = _example(tmp_path)
    args = [a.replace("IN", str(clip)) for a in args]
    result = _cli("transcribe", str(clip), "--model", "none", "--no-progress", *args)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_cli_silent_enrollment_clip_is_named(tmp_path):
    clip = _example(tmp_path)
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.zeros(16000, np.float32), 16000)
    result = _cli("transcribe", str(clip), "--model", "none", "--no-progress", "--speaker", f"zed={quiet}")
    assert result.exit_code == 2, result.output
    assert "quiet.wav" in result.stderr and "silent" in result.stderr


def test_config_speakers_from_toml(tmp_path):
    from stream.config import TranscribeConfig

    cfg = TranscribeConfig.from_mapping({"speakers": ["a=x.wav", "b = y.wav"], "max_speakers": 3})
    assert cfg.speaker_clips() == {"a": __import__("pathlib").Path("x.wav"), "b": __import__("pathlib").Path("y.wav")}
    assert cfg.diarize_enabled and cfg.max_speakers == 3


def test_cli_speaker_model_must_exist(tmp_path):
    clip = _example(tmp_path)
    result = _cli(
        "transcribe", str(clip), "--model", "none", "--no-progress", "--speaker-model", str(tmp_path / "nope")
    )
    assert result.exit_code == 2 and "--speaker-model path does not exist" in result.stderr


def test_cli_speaker_model_with_a_ctc_checkpoint_is_a_user_error(tmp_path):
    pytest.importorskip("transformers")
    from tests.hf_tiny import build_tiny

    clip = _example(tmp_path)
    ctc = build_tiny("wav2vec2", "ctc", tmp_path / "ctc")
    result = _cli(
        "transcribe",
        str(clip),
        "--model",
        "none",
        "--no-progress",
        "--speaker-model",
        str(ctc),
        "--rttm",
        str(tmp_path / "o.rttm"),
    )
    assert result.exit_code == 2, result.output
    assert "ForXVector" in result.stderr


def test_cli_speaker_model_xvector_runs(tmp_path):
    pytest.importorskip("transformers")
    from tests.hf_tiny import build_tiny

    clip = _example(tmp_path)
    xv = build_tiny("wavlm", "xvector", tmp_path / "xv")
    result = _cli(
        "transcribe",
        str(clip),
        "--model",
        "none",
        "--no-progress",
        "--speaker-model",
        str(xv),
        "--rttm",
        str(tmp_path / "o.rttm"),
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o.rttm").exists()
