"""Streaming an MMS checkpoint (attention adapters, one adapter file per language) equals the offline
computation it stands for, in every language: cached mode == the language's offline forward under the
chunk mask (atol 1e-4, >= 10 chunk boundaries); window mode == transformers after
``load_adapter(lang)`` on each window; streams of different languages batched together == each alone."""

import pytest
import torch

from engines.api import load_model
from engines.common.masks import chunk_attention_mask, chunk_block_ids
from tests import hf_tiny
from tests.streamkit import step_through, window_plan

pytest.importorskip("transformers")
torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")

ATOL = 1e-4
LANGS = tuple(hf_tiny.MMS_VOCABS)


@pytest.fixture(scope="module")
def mms(tmp_path_factory):
    path = hf_tiny.build_tiny_mms(tmp_path_factory.mktemp("mms") / "m", do_normalize=False)
    return load_model(path)


def _audio(seconds=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(seconds * 16000) + 77, generator=g)


@pytest.mark.parametrize("language", LANGS)
@pytest.mark.parametrize("chunk,left", [(4, 8), (7, 30)])
def test_cached_equals_offline_under_chunk_mask_per_language(mms, language, chunk, left):
    x = _audio()
    T = mms.num_frames(x.numel())
    state = mms.init_state(
        "cached", chunk_ms=chunk * 20, left_context_ms=left * 20, normalize="none", language=language
    )
    assert state.spec.language == language and T // chunk >= 10
    y, state = step_through(mms, x, state, [1234, 0, 3001])
    view = mms.for_language(language)
    mask = chunk_attention_mask(chunk_block_ids(T, chunk, state.delay_frames), left)
    with torch.no_grad():
        ref = view.module(x[None], None, attn_mask=mask).frames[0]
        other = mms.for_language([l for l in LANGS if l != language][0]).module(x[None], None, attn_mask=mask).frames[0]
    assert y.shape == ref.shape == (T, len(hf_tiny.MMS_VOCABS[language]))
    assert (y - ref).abs().max().item() < ATOL
    assert other.shape[-1] != ref.shape[-1] or (other - ref).abs().max().item() > 10 * ATOL


@pytest.mark.parametrize("language", LANGS)
def test_window_equals_transformers_load_adapter_on_each_window(mms, language):
    from transformers import Wav2Vec2FeatureExtractor

    ref, _ = hf_tiny.reference_mms(mms.model_dir, language)
    fe = Wav2Vec2FeatureExtractor.from_pretrained(mms.model_dir)
    x = _audio(seed=3)
    C, L, R = 10, 6, 4
    state = mms.init_state("window", chunk_ms=C * 20, left_context_ms=L * 20, lookahead_ms=R * 20, language=language)
    got, _ = step_through(mms, x, state, [999])
    plan = window_plan(x.numel(), C, L, R, mms.samples_per_frame, mms.receptive_field_samples)
    assert got.shape[0] == sum(n for _, n, _, _ in plan) and len(plan) >= 5
    for f, n, s0, s1 in plan:
        with torch.no_grad():
            logits = ref(fe(x[s0:s1].numpy(), sampling_rate=16000, return_tensors="pt").input_values).logits[0]
        a = s0 // mms.samples_per_frame
        torch.testing.assert_close(got[f : f + n], logits[f - a : f - a + n], atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["cached", "window"])
def test_step_batch_of_two_languages_equals_each_alone(mms, mode):
    xs = [_audio(1.5, seed=s) for s in (5, 6, 7)]
    langs = ["aaa", "bbb", "aaa"]
    states = [mms.init_state(mode, chunk_ms=160, left_context_ms=320, language=l) for l in langs]
    alone = [mms.stream(x, mode, chunk_ms=160, left_context_ms=320, language=l) for x, l in zip(xs, langs)]
    outs = [[] for _ in xs]
    for pos in range(0, xs[0].numel(), 2560):
        res, states = mms.step_batch([x[pos : pos + 2560] for x in xs], states)
        for i, r in enumerate(res):
            outs[i].append(r.frames)
    for i, st in enumerate(states):
        outs[i].append(mms.flush(st).frames)
        got = torch.cat(outs[i])
        assert got.shape == alone[i].shape and got.shape[-1] == len(hf_tiny.MMS_VOCABS[langs[i]])
        assert (got - alone[i]).abs().max().item() < ATOL


async def test_recognizer_batches_streams_of_two_languages_like_each_alone(mms):
    """Streams in different languages through one Recognizer: batched (mixed languages in one
    step_batch) == one step per chunk == each language's own recogniser."""
    from dataclasses import replace

    from stream.events import FinalTranscript, PartialTranscript
    from stream.graph import Graph
    from stream.node import Collect
    from stream.recognizer import Recognizer, RecognizerConfig
    from stream.sources.array import ArraySource
    from tests.streamkit import gated_tones

    cfg = RecognizerConfig(chunk_ms=320, left_context_ms=1280, max_utterance_ms=600)
    streams = {"a": ("aaa", gated_tones(0, 1.7)), "b": ("bbb", gated_tones(1, 2.3)), "c": ("bbb", gated_tones(2, 1.1))}

    async def run(config, languages=True, only=None):
        rec, collect = Recognizer(mms, config), Collect(keep_audio=False)
        for sid, (lang, _) in streams.items():
            if languages and (only is None or sid in only):
                rec.set_language(sid, lang)
        sources = [
            ArraySource(x, 16000, stream_id=sid, block=(1000, 2300, 517))
            for sid, (_, x) in streams.items()
            if only is None or sid in only
        ]
        await Graph(sources=sources, nodes=[rec, collect]).run(timeout_s=120)
        return rec, {
            sid: [
                (type(e).__name__, e.segment_id, e.revision, e.text, e.sample, e.end_sample)
                for e in collect.of(sid)
                if isinstance(e, (PartialTranscript, FinalTranscript))
            ]
            for sid in streams
        }

    rec1, one = await run(replace(cfg, max_batch=1))
    rec3, batched = await run(replace(cfg, max_batch=3, max_wait_ms=50))
    assert rec3.stats.largest_batch > 1 and rec1.stats.batches == 0
    assert batched == one
    for lang in ("aaa", "bbb"):  # a recogniser whose default language is that one
        _, own = await run(
            replace(cfg, language=lang), languages=False, only=[s for s, (l, _) in streams.items() if l == lang]
        )
        for sid, (l, _) in streams.items():
            if l == lang:
                assert own[sid] == one[sid] and any(k == "FinalTranscript" and t for k, _, _, t, _, _ in own[sid])
    from stream.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown language 'zzz'"):  # set before start: checked at start
        rec = Recognizer(mms, cfg)
        rec.set_language("x", "zzz")
        await rec.start()
