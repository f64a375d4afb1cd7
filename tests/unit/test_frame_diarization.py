"""Frame-level diarization through a *ForAudioFrameClassification checkpoint (tiny, random-init)."""

import numpy as np
import pytest
import torch

from engines.speakers.frames import FrameDiarizer, runs_to_segments

pytest.importorskip("transformers")


def test_runs_to_segments():
    active = np.array([[1, 0], [1, 1], [0, 1], [1, 1]], bool)
    assert runs_to_segments(active, ("a", "b"), 320) == [(0, 640, "a"), (320, 1280, "b"), (960, 1280, "a")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.hf_tiny import build_tiny

    return build_tiny("wav2vec2", "frame", tmp_path_factory.mktemp("frame"), num_labels=3)


def test_offline_segments_match_transformers(tiny):
    import transformers

    from tests.hf_tiny import reference

    fd = FrameDiarizer.load(str(tiny))
    assert fd.labels == ("S1", "S2", "S3")
    audio = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    inputs = transformers.AutoFeatureExtractor.from_pretrained(str(tiny))(
        audio, sampling_rate=16000, return_tensors="pt"
    )
    with torch.no_grad():
        logits = reference(tiny)(**inputs).logits[0].numpy()  # (T, K)
    np.testing.assert_allclose(fd.activity(audio), 1 / (1 + np.exp(-logits)), atol=1e-4)
    assert fd.segments(audio) == runs_to_segments(logits >= 0, fd.labels, 320)


def test_streaming_turns_follow_streamed_frames(tiny):
    fd = FrameDiarizer.load(str(tiny))
    audio = (np.random.default_rng(1).standard_normal(24000) * 0.1).astype(np.float32)
    st = fd.init_state(chunk_ms=320, left_context_ms=2000)
    ups, frames, _start = [], [], None
    for i in range(0, len(audio), 5120):
        u, st = fd.step(audio[i : i + 5120], st)
        ups += u
    u, st = fd.flush(st)
    ups += u
    latest = {}
    for x in ups:
        assert x.revision == latest[x.turn_id].revision + 1 if x.turn_id in latest else x.revision == 0
        latest[x.turn_id] = x
    # the latest revisions are exactly the active runs of the frames the engine streamed
    engine = fd.model.init_state("window", chunk_ms=320, left_context_ms=2000, lookahead_ms=0)
    frames = []
    with torch.inference_mode():
        for i in range(0, len(audio), 5120):
            o, engine = fd.model.step(torch.from_numpy(audio[i : i + 5120]), engine)
            frames.append(o.frames)
        frames.append(fd.model.flush(engine).frames)
    logits = torch.cat(frames).numpy()
    assert sorted((x.start, x.end, x.speaker) for x in latest.values()) == runs_to_segments(logits >= 0, fd.labels, 320)


def test_other_heads_are_refused(tmp_path):
    from engines.errors import CheckpointError
    from tests.hf_tiny import build_tiny

    with pytest.raises(CheckpointError, match="AudioFrameClassification"):
        FrameDiarizer.load(str(build_tiny("wav2vec2", "xvector", tmp_path / "x")))


async def test_diarizer_node_in_frame_mode(tiny):
    from stream.diarize import Diarizer
    from stream.events import SpeakerTurn
    from stream.graph import Graph
    from stream.node import Collect
    from stream.sources.array import ArraySource

    audio = (np.random.default_rng(2).standard_normal(24000) * 0.1).astype(np.float32)
    collect = Collect(keep_audio=False)
    graph = Graph(
        sources=[ArraySource(audio, 16000, stream_id="f", block=1600)], nodes=[Diarizer(frame_model=str(tiny)), collect]
    )
    await graph.run(timeout_s=60)
    turns = [e for e in collect.events if isinstance(e, SpeakerTurn)]
    assert turns, collect.events
    assert {t.speaker for t in turns} <= {"S1", "S2", "S3"}
    assert all(t.end_sample > t.sample and t.end_sample <= len(audio) + 320 for t in turns)


def test_diarization_nodes_options():
    from stream.diarize import diarization_nodes
    from stream.errors import ConfigError

    diarizer, labeler = diarization_nodes(max_speakers=3)
    assert diarizer.config.cluster.max_speakers == 3
    with pytest.raises(ConfigError, match="max-speakers"):
        diarization_nodes(max_speakers=0)
    with pytest.raises(ConfigError, match="exceed --max-speakers 1"):
        diarization_nodes(max_speakers=1, speakers={"a": "a.wav", "b": "b.wav"})
