"""ServerMetrics: the recogniser's counters, read from the graph's nodes at scrape time."""

from __future__ import annotations

from types import SimpleNamespace

from engines.online.recognizer import RecognizerStats
from speechstream.ops import ServerMetrics


def _scrape(text: bytes) -> dict[str, float]:
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_the_recognisers_counters_reach_metrics_with_decoding_ahead() -> None:
    stats = RecognizerStats(compute_s=0.5, audio_samples=32000, steps=7, largest_batch=3, ahead=5, ahead_used=4)
    graph = SimpleNamespace(nodes=lambda: [SimpleNamespace(stats=stats), SimpleNamespace()])
    m = _scrape(ServerMetrics(graph).render())  # type: ignore[arg-type]
    assert m["speechstream_realtime_factor"] == 0.25
    assert m["speechstream_model_steps_total"] == 7 and m["speechstream_model_batch_size_max"] == 3
    assert m["speechstream_decode_ahead_total"] == 5 and m["speechstream_decode_ahead_used_total"] == 4
    stats.ahead += 1  # read at scrape time, not copied
    assert _scrape(ServerMetrics(graph).render())["speechstream_decode_ahead_total"] == 6  # type: ignore[arg-type]
