"""bench/bench_workers.py: the bounded ramp, the sustained criterion, the /metrics deltas, the report's tables."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_workers as bw  # noqa: E402


def _ramp(capacity: int, start: int, max_streams: int) -> list[int]:
    results: dict[int, bool] = {}
    tried = []
    for _ in range(50):
        n = bw.next_level(results, start, max_streams)
        if n is None:
            return tried
        assert n not in results, (n, tried)  # never the same level twice
        tried.append(n)
        results[n] = n <= capacity
    raise AssertionError(f"ramp did not end: {tried}")


@pytest.mark.parametrize("capacity", [0, 1, 2, 3, 7, 8, 13, 16, 24, 30])
@pytest.mark.parametrize("start", [1, 4, 13])
def test_ramp_finds_the_capacity_within_few_levels(capacity, start):
    tried = _ramp(capacity, start, 24)
    results = {n: n <= capacity for n in tried}
    assert bw.bracket(results)[0] == min(capacity, 24)
    assert len(tried) <= 10, tried  # x1.5 growth from 1 to 18, then bisection


def test_ramp_grows_then_bisects():
    assert _ramp(8, 4, 24) == [4, 6, 9, 7, 8]
    assert _ramp(30, 4, 24) == [4, 6, 9, 14, 21, 24]


def test_a_pass_above_a_failure_does_not_count():
    assert bw.bracket({4: True, 8: False, 12: True}) == (4, 8)
    assert bw.bracket({}) == (0, None)


def test_a_ramp_without_failure_gives_a_lower_bound():
    assert bw.lower_bound([{"n": 4, "ok": True}, {"n": 6, "ok": True}])
    assert not bw.lower_bound([{"n": 4, "ok": True}, {"n": 6, "ok": False}])


def test_ramp_rejects_bad_bounds():
    with pytest.raises(ValueError):
        bw.next_level({}, 0, 24)


def _stats(**over):
    base = dict(
        failed=0, errors=0, m_errors=0.0, overflow=0, m_dropped=0.0, missing=0, fl95=1.0, eos_max=0.5, send_lag_max=0.0
    )
    return {**base, **over}


def test_criterion():
    lim = bw.Limits(final_p95_s=2.0, eos_delay_s=3.0, send_lag_s=0.5)
    assert bw.failures(_stats(), lim) == []
    for over, word in [
        ({"m_dropped": 1.0}, "drops"),
        ({"overflow": 2}, "drops"),
        ({"fl95": 2.5}, "final P95"),
        ({"fl95": math.nan}, "final P95"),  # no final at all
        ({"eos_max": math.inf}, "EOS"),
        ({"send_lag_max": 0.8}, "held back"),
        ({"missing": 1}, "missing"),
        ({"failed": 1}, "failed"),
        ({"m_errors": 1.0}, "errors"),
    ]:
        why = bw.failures(_stats(**over), lim)
        assert len(why) == 1 and word in why[0], (over, why)


def _metrics_text(streams: float, dropped: dict[str, float], errors: dict[str, float]) -> str:
    r = CollectorRegistry()
    Counter("speechstream_streams", "s", registry=r).inc(streams)
    Gauge("speechstream_active_streams", "a", registry=r).set(0)
    d = Counter("speechstream_queue_dropped", "d", ["edge"], registry=r)
    for edge, v in dropped.items():
        d.labels(edge=edge).inc(v)
    e = Counter("speechstream_errors", "e", ["code"], registry=r)
    for code, v in errors.items():
        e.labels(code=code).inc(v)
    return generate_latest(r).decode()


def test_parse_metrics_and_deltas():
    m = bw.parse_metrics(_metrics_text(5, {"a": 2, "b": 3}, {"oversize": 1}))
    assert (m["streams"], m["dropped"], m["errors"], m["active"]) == (5, 5, 1, 0)
    assert math.isfinite(m["id"])
    before = {1.0: {"streams": 2, "dropped": 0, "errors": 0}, 2.0: {"streams": 1, "dropped": 1, "errors": 0}}
    after = {1.0: {"streams": 9, "dropped": 0, "errors": 1}, 2.0: {"streams": 6, "dropped": 4, "errors": 0}}
    assert bw.metric_deltas(before, after) == {"m_dropped": 3, "m_errors": 1, "split": [7, 5]}
    with pytest.raises(RuntimeError):
        bw.metric_deltas(before, {1.0: after[1.0]})
    with pytest.raises(ValueError):
        bw.parse_metrics("# nothing\n")


def _level(config: str, n: int, ok: bool, **over) -> dict:
    row = dict(config=config, n=n, ok=ok, fp50=0.25, fp95=0.5, fl50=1.0, fl95=1.5, eos_max=0.75, send_lag_max=0.0)
    row.update(overflow=0, m_dropped=0.0, split=[n], why="" if ok else "final P95 2.50 s > 2.0 s", ping=[], final=[])
    return {**row, **over}


def test_report_prints_its_tables(capsys):
    configs = {"direct-1": [_level("direct-1", 4, True), _level("direct-1", 6, False, fl95=float("nan"))]}
    overhead = [
        _level("direct-1", 4, True, ping=[0.001, 0.002], final=[1.0]),
        _level("haproxy-1", 4, True, ping=[0.002, 0.004], final=[1.25]),
    ]
    args = bw.parse_args(["--quick"])
    bw.report(configs, overhead, args, "a model", (0.0, 0.0, 0.0))
    lines = capsys.readouterr().out.splitlines()
    i = lines.index(
        "| configuration | largest sustained N | levels tried (N: ok/fail) | final P50 / P95 at that N (s) |"
    )
    assert lines[i + 1 : i + 3] == ["|---|---|---|---|", "| direct-1 | 4 | 4: ok, 6: fail | 1.00 / 1.50 |"]
    assert lines[i - 1] == lines[i + 3] == ""
    i = lines.index("|---|---|---|---|---|---|---|---|---|---|")
    assert lines[i + 1 : i + 4] == [
        "| direct-1 | 4 | yes | 0.25 / 0.50 | 1.00 / 1.50 | 0.75 | 0.00 | 0 + 0 | 4 |  |",
        "| direct-1 | 6 | no | 0.25 / 0.50 | 1.00 / n/a | 0.75 | 0.00 | 0 + 0 | 6 | final P95 2.50 s > 2.0 s |",
        "",
    ]
    i = lines.index(
        "| measure | direct P50 / P95 (ms) | through HAProxy P50 / P95 (ms) | added P50 / P95 (ms) | samples |"
    )
    assert lines[i + 1 : i + 4] == [
        "|---|---|---|---|---|",
        "| WebSocket ping -> pong | 1.0 / 2.0 | 2.0 / 4.0 | 1.0 / 2.0 | 2 / 2 |",  # P50 of two: the lower
        "| finalisation latency | 1000.0 / 1000.0 | 1250.0 / 1250.0 | 250.0 / 250.0 | 1 / 1 |",
    ]
