"""Per-stream speaker settings on the real Diarizer node (``set_speakers``): a stream's cap and
names act on that stream alone, in a graph that diarizes several streams at once."""

import numpy as np
import pytest

from engines.speakers.clustering import ClusterConfig
from engines.speakers.online import DiarizerConfig
from stream.diarize import Diarizer
from stream.errors import ConfigError
from stream.events import SpeakerTurn
from stream.graph import Graph
from stream.node import Collect
from stream.sources.array import ArraySource
from tests.unit.test_clustering_online import PitchEmbedder, buzz

SR = 16000
CFG = DiarizerConfig(use_vad_events=False, cluster=ClusterConfig(threshold=0.75, confirm=1))


def two_voices():
    gap = np.zeros(int(0.6 * SR), np.float32)
    return np.concatenate([gap, buzz(120, 2.0), gap, buzz(220, 2.0), gap, buzz(120, 1.5), gap])


def latest_labels(events, sid):
    latest = {}
    for e in events:
        if isinstance(e, SpeakerTurn) and e.stream_id == sid:
            if e.turn_id not in latest or e.revision > latest[e.turn_id].revision:
                latest[e.turn_id] = e
    return [t.speaker for t in sorted(latest.values(), key=lambda t: t.sample)]


async def test_cap_and_names_are_per_stream():
    audio = two_voices()
    node = Diarizer(CFG, embedder=PitchEmbedder())
    node.set_speakers("capped", 1)
    node.set_speakers("named", None, ("Ann", "Bob"))
    node.set_speakers("both", 1)
    node.set_speakers("both", None, ("Solo",))  # names later: the cap stays
    collect = Collect(keep_audio=False)
    sids = ("capped", "named", "both", "plain")
    graph = Graph(sources=[ArraySource(audio, SR, stream_id=s, block=1600) for s in sids], nodes=[node, collect])
    await graph.run(timeout_s=120)
    assert latest_labels(collect.events, "plain") == ["S1", "S2", "S1"]
    assert latest_labels(collect.events, "capped") == ["S1", "S1", "S1"]
    assert latest_labels(collect.events, "named") == ["Ann", "Bob", "Ann"]
    assert latest_labels(collect.events, "both") == ["Solo", "Solo", "Solo"]
    assert node._speakers == {}  # forgotten with their streams


def test_bad_settings_are_refused_and_change_nothing(tmp_path):
    node = Diarizer(
        CFG.__class__(cluster=ClusterConfig(max_speakers=3)),
        embedder=PitchEmbedder(),
        speakers={"alice": tmp_path / "a.wav", "bob": tmp_path / "b.wav"},
    )
    node.set_speakers("s", 2, ("Ann",))
    for bad in (0, 4, 1, True):  # below 1, above the node's max, below the enrolled count, not an int
        with pytest.raises(ConfigError):
            node.set_speakers("s", bad)
    with pytest.raises(ConfigError):
        node.set_speakers("s", None, ("",))
    st = node._speakers["s"]
    assert st.config.cluster.max_speakers == 2 and st.names == ("Ann",)
    assert node._display("s", "alice") == "alice" and node._display("s", "S3") == "Ann"  # enrolled keep their names


def test_frame_models_take_names_but_no_cap():
    node = Diarizer(frame_model="unused-path")
    with pytest.raises(ConfigError, match="embedding diarization"):
        node.set_speakers("s", 2)
    node.set_speakers("s", None, ("Ann",))
    assert node._display("s", "SPEAKER_01") == "Ann" and node._display("s", "SPEAKER_00") == "SPEAKER_00"
