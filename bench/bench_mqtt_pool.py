"""MQTT worker pool: takeover time after a worker process is SIGKILLed, P50/P95 over bounded runs.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_mqtt_pool.py --runs 5

Each run: a fresh mosquitto on loopback, 3 ``speechstream mqtt-worker --group g1 --model none``
processes, 12 streams; the worker holding the most streams is killed mid-stream. ``will`` is
kill -> the broker's ``offline`` will seen by the client; ``takeover`` is kill -> every orphaned
stream claimed again by a live worker (the client re-sends ``start`` on the will). The run
itself is the test's (tests/integration/test_mqtt_pool.py), so the bench measures what is tested.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.test_mqtt_pool import run_once  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="bounded number of kill runs")
    args = p.parse_args()
    will, take, orphans = [], [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            r = run_once(Path(d))
        will.append(float(r["will_s"]))  # type: ignore[arg-type]
        take.append(float(r["takeover_s"]))  # type: ignore[arg-type]
        orphans.append(len(r["orphans"]))  # type: ignore[arg-type]
        print(
            f"run {i}: {orphans[-1]} orphaned streams, will {will[-1] * 1e3:.1f} ms, takeover {take[-1] * 1e3:.1f} ms"
        )
    for name, xs in (("will", will), ("takeover", take)):
        a = np.array(xs) * 1e3
        print(f"{name}: P50 {np.percentile(a, 50):.1f} ms  P95 {np.percentile(a, 95):.1f} ms  (n={len(a)})")
    print("reproduce: PYTHONPATH=$PWD .venv/bin/python " + shlex.join(["bench/bench_mqtt_pool.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
