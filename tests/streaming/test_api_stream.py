"""``LoadedModel.stream``: a whole waveform through init_state/step/flush, as a live source feeds it."""

from __future__ import annotations

import torch

from engines.api import load_model
from tests import hf_tiny


def test_stream_equals_the_step_loop_and_ignores_feed_size(tmp_path):
    torch.manual_seed(0)
    model = load_model(hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path / "tiny"))
    audio = 0.1 * torch.randn(16000 * 3 + 123)
    state = model.init_state("cached", chunk_ms=320, left_context_ms=1280)
    manual = []
    for i in range(0, audio.numel(), 5120):
        out, state = model.step(audio[i : i + 5120], state)
        manual.append(out.frames)
    manual.append(model.flush(state).frames)
    manual = torch.cat(manual)
    whole = model.stream(audio, "cached", chunk_ms=320, left_context_ms=1280)
    torch.testing.assert_close(whole, manual, rtol=0, atol=0)
    torch.testing.assert_close(model.stream(audio, "cached", 320, 1280, feed_ms=70), manual, rtol=1e-5, atol=1e-5)
    assert whole.shape[0] == model.num_frames(audio.numel())
