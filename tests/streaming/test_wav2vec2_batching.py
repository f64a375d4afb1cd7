"""engines.batching: the micro-batch policy, and batched results equal unbatched steps."""

import pytest
import torch

from engines.api import load_model
from engines.batching import BatchPolicy, BatchQueue, Request, run_batch
from engines.errors import StreamUsageError
from tests import hf_tiny

pytest.importorskip("transformers")
torch.set_num_threads(1)


def test_due_when_full_or_after_max_wait():
    p = BatchPolicy(max_batch=3, max_wait_ms=20)
    q = BatchQueue()
    assert not q.due(p, 0) and q.wait_ms(p, 0) is None
    q = q.add(Request("a", None, None), 100).add(Request("b", None, None), 105)
    assert not q.due(p, 110) and q.wait_ms(p, 110) == 10
    assert q.due(p, 120)
    q3 = q.add(Request("c", None, None), 111)
    assert q3.due(p, 111)
    batch, rest = q3.take(p)
    assert [r.stream_id for r in batch] == ["a", "b", "c"] and len(rest) == 0
    assert len(q) == 2  # immutable


def test_a_stream_appears_once_per_batch():
    p = BatchPolicy(max_batch=4, max_wait_ms=0)
    q = BatchQueue()
    for sid in ["a", "a", "b", "a", "c"]:
        q = q.add(Request(sid, None, None), 0)
    batch, rest = q.take(p)
    assert [r.stream_id for r in batch] == ["a", "b", "c"]
    assert [q.request.stream_id for q in rest.items] == ["a", "a"]
    with pytest.raises(StreamUsageError):
        BatchPolicy(max_batch=0)


def test_batched_results_equal_unbatched(tmp_path):
    model = load_model(hf_tiny.build_tiny("wavlm", "ctc", tmp_path, feat_extract_norm="layer"))
    g = torch.Generator().manual_seed(0)
    audio = {sid: 0.1 * torch.randn(16000, generator=g) for sid in "abc"}
    kw = dict(chunk_ms=200, left_context_ms=400)
    ref = {}
    for sid, x in audio.items():
        st, outs = model.init_state("cached", **kw), []
        for i in range(0, 16000, 1600):
            o, st = model.step(x[i : i + 1600], st)
            outs.append(o.frames)
        ref[sid] = torch.cat(outs)
    states = {sid: model.init_state("cached", **kw) for sid in audio}
    got = {sid: [] for sid in audio}
    p = BatchPolicy(max_batch=2, max_wait_ms=10)
    q, now = BatchQueue(), 0
    for i in range(0, 16000, 1600):
        for sid in audio:
            q = q.add(Request(sid, audio[sid][i : i + 1600], None), now)
        now += 100
        while q.due(p, now):
            batch, q = q.take(p)
            batch = [Request(r.stream_id, r.chunk, states[r.stream_id]) for r in batch]
            for sid, out, st in run_batch(model, batch):
                states[sid] = st
                got[sid].append(out.frames)
    for sid in audio:
        torch.testing.assert_close(torch.cat(got[sid]), ref[sid], atol=1e-5, rtol=0)
