"""PushSource.discard with reports queued between blocks."""

from __future__ import annotations

import numpy as np

from stream.events import AudioLost
from stream.sources.push import PushSource


async def test_discard_counts_samples_and_skips_queued_reports():
    src = PushSource("s", 16000)
    assert await src.feed_at(np.zeros(160, np.float32), 0, max_gap=1000) is None
    lost = await src.feed_at(np.zeros(80, np.float32), 400, max_gap=1000)  # 240-sample gap: a report, then audio
    assert isinstance(lost, AudioLost)
    assert src.discard() == 160 + 240 + 80  # the report is dropped, not counted
    assert src.ended and src.inbox_full is False
