"""bench/bench_ws_load.py's Markdown table (``md_table``), which bench_workers.py prints its tables with too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_ws_load as wl  # noqa: E402


def test_md_table_lines():
    got = wl.md_table("clients | real time | P50 / P95 (s)", [[1, "yes", "0.51 / 0.90"], (12, "no", 3.5)])
    assert got.splitlines() == [
        "| clients | real time | P50 / P95 (s) |",
        "|---|---|---|",
        "| 1 | yes | 0.51 / 0.90 |",
        "| 12 | no | 3.5 |",
    ]


def test_md_table_takes_a_generator_and_no_rows():
    assert wl.md_table("a", (r for r in [])) == "| a |\n|---|"
    assert wl.md_table("a | b", ([i, i * i] for i in range(2))).splitlines()[2:] == ["| 0 | 0 |", "| 1 | 1 |"]


def test_md_table_refuses_a_row_of_another_width():
    with pytest.raises(ValueError, match="2 cells, the header 3"):
        wl.md_table("a | b | c", [[1, 2, 3], [1, 2]])


def test_the_clip_and_its_sentences():
    x, pcm = wl.clip_pcm(5.0)
    assert len(x) == 5 * wl.SR + int(1.5 * wl.SR) and len(pcm) == 2 * len(x)  # 1.5 s of silence after 5 s
    assert not x[5 * wl.SR :].any() and x[: 5 * wl.SR].any()
    whole, _ = wl.clip_pcm()
    assert len(whole) > len(x)
    every = wl.sentences()
    assert len(every) == 4 and all(s < e for s, e in every)
    assert wl.sentences(every[1][1]) == every[:2]
    assert wl.sentences(every[1][1] - 1) == every[:1]
