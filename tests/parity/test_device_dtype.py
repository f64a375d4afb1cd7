"""A model loaded in another dtype computes the float32 model's outputs within a stated tolerance, and
every LoadedModel path keeps its contract (CPU float32 audio in, CPU float32 out, per-stream caches in
the weights' dtype on the weights' device). On CPU, so it runs everywhere; bench/bench_gpu.py checks
the same on CUDA.

Tolerances: max |logit difference| against float32, relative to the float32 logits' standard deviation
(tiny random-init models; measured here: float64 < 1e-5, float16 < 0.02, bfloat16 < 0.12), and the
share of frames whose argmax agrees (on outputs of 40 frames or more). On the bundled default model (a trained W2V-BERT) float16 keeps
the greedy transcripts of real TTS speech identical, offline and cached (max |diff| 0.055 on logits of
std 5.4, measured)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engines.api import load_model
from engines.device import FORCE_FP32_ENV, default_dtype, resolve_device, resolve_dtype, to_cpu, to_device
from engines.errors import ConfigError
from tests import hf_tiny

pytest.importorskip("transformers")
torch.set_num_threads(1)

REL_TOL = {torch.float64: 1e-4, torch.float16: 0.04, torch.bfloat16: 0.25}
MIN_AGREE = {torch.float64: 1.0, torch.float16: 0.98, torch.bfloat16: 0.9}
DTYPES = sorted(REL_TOL, key=str)
CHUNK = dict(chunk_ms=160, left_context_ms=640)
WINDOW = dict(chunk_ms=320, left_context_ms=320, lookahead_ms=160)


# -- resolve_device / default_dtype ------------------------------------------------------------


def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    want = torch.device("cuda", 0) if torch.cuda.is_available() and torch.cuda.device_count() else torch.device("cpu")
    assert resolve_device("auto") == want


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "cuda0", "", "mps"])
def test_resolve_device_refuses_a_bad_string_in_one_line(bad):
    with pytest.raises(ConfigError) as err:
        resolve_device(bad)
    msg = str(err.value)
    assert repr(bad) in msg and "\n" not in msg and "auto, cpu, cuda, cuda:N" in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_config_error(spec, tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve_device(spec)
    assert repr(spec) in str(err.value) and "\n" not in str(err.value)
    # load_model refuses it before reading anything
    with pytest.raises(ConfigError):
        load_model(tmp_path / "no-such-model", device=spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_index_past_the_gpus_is_a_config_error():
    n = torch.cuda.device_count()
    with pytest.raises(ConfigError, match="no such GPU"):
        resolve_device(f"cuda:{n}")


def test_default_dtype_and_force_fp32(monkeypatch):
    monkeypatch.delenv(FORCE_FP32_ENV, raising=False)
    assert default_dtype(torch.device("cpu")) == torch.float32
    assert default_dtype(torch.device("cuda", 0)) == torch.float16
    assert default_dtype(torch.device("cuda", 0), force_fp32=True) == torch.float32
    monkeypatch.setenv(FORCE_FP32_ENV, "1")
    assert default_dtype(torch.device("cuda", 0)) == torch.float32
    assert resolve_dtype(None, torch.device("cuda", 0)) == torch.float32
    monkeypatch.setenv(FORCE_FP32_ENV, "0")
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.float16


def test_resolve_dtype_names_and_errors():
    cpu = torch.device("cpu")
    assert resolve_dtype("fp16", cpu) == torch.float16
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype(torch.float64, cpu) == torch.float64
    for bad in ("int8", torch.int32, "double-ish"):
        with pytest.raises(ConfigError):
            resolve_dtype(bad, cpu)


def test_to_device_and_to_cpu_keep_integer_dtypes():
    x, m = torch.randn(2, 3), torch.ones(2, 3, dtype=torch.bool)
    assert to_device(x, torch.device("cpu"), torch.float16).dtype == torch.float16
    assert to_device(m, torch.device("cpu"), torch.float16).dtype == torch.bool
    assert to_cpu(x.half()).dtype == torch.float32 and to_cpu(m).dtype == torch.bool


# -- parity of every path in another dtype -----------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("device_dtype")
    return {f: hf_tiny.build_tiny(f, "ctc", root / f) for f in hf_tiny.FAMILIES}


def _audio(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, generator=g)


def _stream(model, audio: torch.Tensor, mode: str, **kw) -> torch.Tensor:
    st = model.init_state(mode, **kw)
    outs = []
    for i in range(0, audio.numel(), 2900):
        o, st = model.step(audio[i : i + 2900], st)
        outs.append(o.frames)
    outs.append(model.flush(st).frames)
    return torch.cat(outs)


def _batched(model, audios: list[torch.Tensor]) -> list[torch.Tensor]:
    """The streams side by side through step_batch (one forward per due chunk), then flushed."""
    states = [model.init_state("cached", **CHUNK) for _ in audios]
    outs: list[list[torch.Tensor]] = [[] for _ in audios]
    feed = 2600
    for i in range(0, max(a.numel() for a in audios), feed):
        o, states = model.step_batch([a[i : i + feed] for a in audios], states)
        for j, oj in enumerate(o):
            outs[j].append(oj.frames)
    for j, st in enumerate(states):
        outs[j].append(model.flush(st).frames)
    return [torch.cat(o) for o in outs]


def _check(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str, logits: bool = True) -> None:
    assert got.dtype == torch.float32 and got.device.type == "cpu", (what, got.dtype, got.device)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    rel = (got - ref).abs().max().item() / ref.std().item()
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert rel <= REL_TOL[dtype], f"{what}: max|diff|/std {rel:.3g} > {REL_TOL[dtype]}"
    if logits and got.shape[0] >= 40:  # on fewer frames one near-tie of random logits is several per cent
        assert agree >= MIN_AGREE[dtype], f"{what}: argmax agreement {agree:.3f} < {MIN_AGREE[dtype]}"


def _cache_dtypes(state) -> set[torch.dtype]:
    return {t.dtype for t in state.cache if isinstance(t, torch.Tensor) and t.is_floating_point()}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("family", hf_tiny.FAMILIES)
def test_every_path_matches_float32(family, dtype, tiny):
    ref, model = load_model(tiny[family]), load_model(tiny[family], dtype=dtype)
    assert model.dtype == dtype and next(model.module.parameters()).dtype == dtype
    a, b, c = _audio(16000, 1), _audio(11000, 2), _audio(7300, 3)
    _check(model.forward(a).frames[0], ref.forward(a).frames[0], dtype, "offline")
    # a padded batch offline (lengths): the frame mask comes back as it was
    batch = torch.zeros(2, 16000)
    batch[0], batch[1, :11000] = a, b
    lengths = torch.tensor([16000, 11000])
    out, want = model.forward(batch, lengths), ref.forward(batch, lengths)
    assert out.frame_mask is None or out.frame_mask.dtype == torch.bool
    n_b = ref.num_frames(11000)
    _check(out.frames[1, :n_b], want.frames[1, :n_b], dtype, "offline padded")
    _check(_stream(model, a, "cached", **CHUNK), _stream(ref, a, "cached", **CHUNK), dtype, "cached step")
    _check(_stream(model, a, "window", **WINDOW), _stream(ref, a, "window", **WINDOW), dtype, "window step")
    for i, (g, r) in enumerate(zip(_batched(model, [a, b, c]), _batched(ref, [a, b, c]))):
        _check(g, r, dtype, f"step_batch stream {i}")
    # the per-stream caches are in the weights' dtype (float64 running statistics and the float32
    # raw-sample tail of modules that take float32 samples aside)
    st = model.init_state("cached", **CHUNK)
    _, st = model.step(a[:8000], st)
    allowed = {dtype, torch.float64, torch.float32 if getattr(model.module, "samples_in_float32", False) else dtype}
    assert dtype in _cache_dtypes(st) and _cache_dtypes(st) <= allowed, _cache_dtypes(st)
    assert st.pending.dtype == torch.float32 and st.pending.device.type == "cpu"


@pytest.mark.parametrize("head", ["xvector", "sequence"])
def test_utterance_heads_pool_in_float16(head, tmp_path):
    path = hf_tiny.build_tiny("wav2vec2", head, tmp_path / head)
    ref, model = load_model(path), load_model(path, dtype=torch.float16)
    a = _audio(16000, 4)
    frames, want = _stream(model, a, "cached", **CHUNK), _stream(ref, a, "cached", **CHUNK)
    _check(frames, want, torch.float16, f"{head} frames", logits=False)  # hidden states
    got, gw = model.pool(frames), ref.pool(want)
    for g, r in zip(got, gw):
        if r is None:
            assert g is None
            continue
        assert g is not None and g.dtype == torch.float32 and g.device.type == "cpu"
        assert (g - r).abs().max().item() <= REL_TOL[torch.float16] * r.std().item() * 4, head
    off = model.forward(a)
    assert off.utterance is not None and off.utterance.dtype == torch.float32


def test_language_views_keep_the_dtype(tmp_path):
    path = hf_tiny.build_tiny_mms(tmp_path / "mms")
    ref, model = load_model(path), load_model(path, dtype=torch.float64)
    a = _audio(12000, 5)
    for lang in model.languages:
        view = model.for_language(lang)
        assert view.dtype == torch.float64 and all(p.dtype == torch.float64 for p in view.module.parameters())
        _check(view.forward(a).frames[0], ref.for_language(lang).forward(a).frames[0], torch.float64, lang)
        got = _stream(model, a, "cached", language=lang, **CHUNK)
        want = _stream(ref, a, "cached", language=lang, **CHUNK)
        _check(got, want, torch.float64, f"{lang} cached")


def test_default_model_float16_keeps_greedy_transcripts():
    """The trained default model on TTS speech: float16 gives the float32 transcript, offline and
    cached (tolerance: max |logit diff| within 2% of the logits' std; the greedy path differs only at
    near-tie frames, under 1% of them)."""
    from tests.support import tts

    if not tts.have_espeak():
        pytest.skip("espeak-ng is not installed")
    from engines.ctc import greedy_decode
    from engines.tokenizer import CTCTokenizer

    path = Path(__file__).resolve().parents[2] / "engines" / "default_model"
    tok = CTCTokenizer.from_dir(path)
    ref, half = load_model(path), load_model(path, dtype=torch.float16)
    for text in ("the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore"):
        a = torch.from_numpy(tts.espeak_ng(text))
        for name, run in (
            ("offline", lambda m: m.forward(a).frames[0]),
            ("cached", lambda m: _stream(m, a, "cached", chunk_ms=320, left_context_ms=2560)),
        ):
            r, h = run(ref), run(half)
            assert h.dtype == torch.float32
            assert (h - r).abs().max().item() <= 0.02 * r.std().item(), (text, name)
            # the greedy path may differ only at frames where float32's top two logits are closer than
            # float16's error bound (a near-tie; which way it falls depends on the CPU's fp16 kernels)
            tol = 0.02 * r.std().item()
            flips = (h.argmax(-1) != r.argmax(-1)).nonzero().flatten()
            for f in flips.tolist():
                gap = r[f, r[f].argmax()] - r[f, h[f].argmax()]
                assert gap.item() <= 2 * tol, (text, name, f, gap.item(), tol)
            if not len(flips):
                assert greedy_decode(tok, h.numpy()) == greedy_decode(tok, r.numpy()), (text, name)
            assert len(flips) <= max(1, r.shape[0] // 100), (text, name, len(flips))
