"""Cached streaming with lookahead (Emformer-style right context) equals its offline equivalent.

Cached mode with ``lookahead_ms = R`` frames runs every chunk on C central frames plus the R frames
after them; every query attends to L cached central frames, the chunk and the lookahead; only the
central frames' states are cached, the lookahead frames are computed again as central frames by the
next call. The offline computation this stands for (Emformer's training-time form) is a forward
over the *augmented* sequence: the T central frames followed by, for each chunk n, a copy of the R
frames after it (its "right context", at their own positions), with the mask

    central or copy query of chunk n may attend: central frames [s_n - L, s_n + C) + the copies of chunk n

where s_n is the chunk's first frame; per-frame layers act on every frame; a convolution sees, for
a copy of chunk n, the central frames before s_n + C followed by the copies. The central outputs
are compared with the stream at ATOL, over >= 10 chunk boundaries, for every family: wav2vec2
(layer- and group-norm CNN, post- and pre-LN), WavLM (gated relative position bias), Wav2Vec2-
Conformer (relative and rotary positions, symmetric depthwise conv) and Wav2Vec2-BERT (relative_key
and rotary, causal conv; and with its strided adapter, whose lookahead runs at the adapter's rate).
The GroupNorm CNN variants take the stream's own CNN features (running statistics, the same with or
without lookahead; their approximation is tested in test_wav2vec2_streaming.py).
"""

from __future__ import annotations

import pytest
import torch

from engines import frontend_fbank as fb
from engines.api import load_model
from engines.common.blocks import mask_value
from tests import hf_tiny
from tests.streamkit import step_through

pytest.importorskip("transformers")
torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")

ATOL = 1e-4
FRAME_MS = 20
SIZES = [999, 5, 4321, 0, 1600]  # irregular feeding, as a capture callback


def _audio(num_samples, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples) / 16000
    return (
        0.2 * torch.sin(2 * torch.pi * 250 * t) * torch.sin(2 * torch.pi * 1.5 * t)
        + 0.05 * torch.randn(num_samples, generator=g)
    ).float()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    built = {}

    def get(family, head="ctc", **overrides):
        key = (family, head, tuple(sorted(overrides.items())))
        if key not in built:
            # perturb 0.1: sharper attention than HF's init, so a wrong mask shows
            path = hf_tiny.build_tiny(
                family, head, tmp_path_factory.mktemp("m"), perturb=0.1, do_normalize=False, **overrides
            )
            built[key] = load_model(path)
        return built[key]

    return get


def _blocks(T: int, C: int, first: int):
    """Chunk starts s_n = first + n*C covering frames [0, T)."""
    n0 = -((first + C - 1) // C) if first < 0 else 0
    starts = []
    s = first + n0 * C
    while s < T:
        if s + C > 0:
            starts.append(s)
        s += C
    return starts


def _augmented(T: int, C: int, L: int, R: int, first: int):
    """Positions (T',), owning chunk start (T',), copy flag (T',) and the allowed mask (T', T')."""
    starts = _blocks(T, C, first)
    pos = [torch.arange(T)]
    owner = [first + torch.div(torch.arange(T) - first, C, rounding_mode="floor") * C]
    copy = [torch.zeros(T, dtype=torch.bool)]
    for s in starts:
        p = torch.arange(s + C, max(s + C, min(s + C + R, T)))
        p = p[p >= 0]
        pos.append(p)
        owner.append(torch.full((p.numel(),), s))
        copy.append(torch.ones(p.numel(), dtype=torch.bool))
    pos, owner, copy = torch.cat(pos), torch.cat(owner), torch.cat(copy)
    central_ok = (~copy)[None, :] & (pos[None, :] >= owner[:, None] - L) & (pos[None, :] < owner[:, None] + C)
    copy_ok = copy[None, :] & (owner[None, :] == owner[:, None])
    return pos, owner, copy, central_ok | copy_ok


# -------------------------------------------------------------------------------------------------
# wav2vec2 / WavLM: one offline forward over the augmented sequence
# -------------------------------------------------------------------------------------------------


def _waveform_reference(model, h: torch.Tensor, C: int, L: int, R: int, delay: int) -> torch.Tensor:
    """h (1, T, D) projected CNN features -> (T, V): the encoder over the augmented sequence."""
    m = model.module
    enc = m.backbone.encoder
    T = h.shape[1]
    pos, _, _, allowed = _augmented(T, C, L, R, -delay)
    with torch.no_grad():
        x = enc.embed(h, enc.pos_conv_embed(h))[:, pos]  # layer-0 input is per frame after the positional conv
        bias = torch.zeros(allowed.shape).masked_fill(~allowed, mask_value(torch.float32))[None, None]
        rel = enc.relative_bias(pos, pos)
        states = [x]
        for layer in enc.layers:
            x = layer(x, bias, rel)
            states.append(x)
        if enc.stable:
            x = enc.layer_norm(x)
        if m.weighted:
            w = torch.softmax(m.layer_weights, dim=-1)
            x = (torch.stack(states, dim=1) * w.view(1, -1, 1, 1)).sum(dim=1)
        return m.head_frames(x)[0, :T]


def _stream_capturing_features(model, audio, state):
    """Stream, and record the projected CNN features the stream computed (group norm: running stats)."""
    got = []
    hook = model.module.backbone.feature_projection.register_forward_hook(lambda mod, i, o: got.append(o[0]))
    try:
        y, state = step_through(model, audio, state, SIZES)
    finally:
        hook.remove()
    return y, state, torch.cat(got)


WAVEFORM_VARIANTS = {
    "w2v-layer-postln": ("wav2vec2", dict(feat_extract_norm="layer")),
    "w2v-group-postln": ("wav2vec2", dict(feat_extract_norm="group")),
    "w2v-layer-preln-weighted": (
        "wav2vec2",
        dict(feat_extract_norm="layer", do_stable_layer_norm=True, use_weighted_layer_sum=True),
    ),
    "wavlm-layer": ("wavlm", dict(feat_extract_norm="layer")),
    "wavlm-group-preln": ("wavlm", dict(feat_extract_norm="group", do_stable_layer_norm=True)),
}


@pytest.mark.parametrize("variant", sorted(WAVEFORM_VARIANTS))
@pytest.mark.parametrize("chunk,left,right", [(4, 8, 3), (5, 10, 7)])
def test_waveform_cached_lookahead_equals_augmented_offline(models, variant, chunk, left, right):
    family, overrides = WAVEFORM_VARIANTS[variant]
    head = "frame" if overrides.get("use_weighted_layer_sum") else "ctc"
    model = models(family, head, **overrides)
    audio = _audio(16000 + 16000 // 2 + 123)
    T = model.num_frames(audio.numel())
    state = model.init_state(
        "cached",
        chunk_ms=chunk * FRAME_MS,
        left_context_ms=left * FRAME_MS,
        lookahead_ms=right * FRAME_MS,
        normalize="none",
    )
    k = model.config.num_conv_pos_embeddings
    assert state.delay_frames == 1 + (k - 1 - k // 2) + right  # CNN overhang + positional conv + lookahead
    y, state, feats = _stream_capturing_features(model, audio, state)
    assert T // chunk >= 10 and y.shape[0] == T
    # the stream's CNN features start at frame -1 (the CNN overhang); group norm uses running
    # statistics there (tested in test_wav2vec2_streaming), so the reference takes the same features
    h = feats[1 : 1 + T][None]
    if overrides["feat_extract_norm"] == "layer":
        with torch.no_grad():
            torch.testing.assert_close(h, model.module.features(audio[None]), atol=ATOL, rtol=0)
    else:  # the lookahead changes nothing in front of the encoder: same running statistics as without
        plain = model.init_state("cached", chunk_ms=chunk * FRAME_MS, left_context_ms=left * FRAME_MS, normalize="none")
        torch.testing.assert_close(
            h, _stream_capturing_features(model, audio, plain)[2][1 : 1 + T][None], atol=1e-6, rtol=0
        )
    want = _waveform_reference(model, h, chunk, left, right, state.delay_frames)
    torch.testing.assert_close(y, want, atol=ATOL, rtol=0)
    # the lookahead matters, so the comparison can fail
    without = _waveform_reference(model, h, chunk, left, 0, state.delay_frames)
    assert (want - without).abs().max().item() > 10 * ATOL


# -------------------------------------------------------------------------------------------------
# Conformers: the same augmented sequence, layer by layer (the depthwise conv of a copy of chunk n
# reads the central frames before it, then the copy; Wav2Vec2-Conformer's layers run r frames
# behind each other for its symmetric conv, so chunk n of layer l starts at first - l*r + n*C)
# -------------------------------------------------------------------------------------------------


def _conformer_reference(layers, h: torch.Tensor, C: int, L: int, R: int, first: int, stagger: int, causal: bool):
    """h (1, T, D) layer-0 input -> (the central hidden states [(1, T, D) per layer input/output],
    the last layer's copies {layer-0 chunk start: (1, R, D)})."""
    T, D = h.shape[1], h.shape[2]
    zero = torch.zeros(1, 1, D)

    def at(X, copy, s, p):
        """The frame at position p as seen by chunk start s: central before s + C, else the copy."""
        if p < 0 or p >= T:
            return zero
        return X[:, p : p + 1] if p < s + C else copy[:, p - s - C : p - s - C + 1]

    def cat(frames):
        return torch.cat(frames, dim=1) if frames else torch.zeros(1, 0, D)

    starts = _blocks(T + len(layers) * stagger, C, first)  # later layers run behind: more chunks reach [0, T)
    X = h
    copies = {s: cat([at(h, None, s + C + R, p) for p in range(s + C, s + C + R)]) for s in starts}
    states = [X]
    for l, layer in enumerate(layers):
        shift = l * stagger

        def half(x):
            return x + 0.5 * layer.ffn1(layer.ffn1_layer_norm(x))

        Xa = half(X)
        Ya = {s: half(y) for s, y in copies.items()}
        # attention, one chunk at a time: queries [q0, e) and keys [a, e) are contiguous positions
        post_x = Xa.clone()
        post_y = {}
        sa = layer.self_attn
        for s0 in starts:
            s = s0 - shift
            q0 = max(s, 0)
            q1 = max(min(s + C, T), q0)  # central queries [q0, q1)
            a = max(s - L, 0)  # keys [a, e): central [a, q1), then the copy's real frames [c0, e)
            c0 = min(max(s + C, 0), T)
            e = max(min(s + C + R, T), c0)
            y = Ya[s0]
            j0, n_copy = max(c0 - (s + C), 0), e - c0
            py = y.clone()
            if q1 > q0 or n_copy:
                seq = torch.cat([Xa[:, a:q1], y[:, j0 : j0 + n_copy]], dim=1)  # positions [a, e)
                normed = layer.self_attn_layer_norm(seq)
                kv = sa.project_kv(normed, torch.arange(a, e))
                first_q = q0 if q1 > q0 else c0
                out = sa.attend(normed[:, first_q - a :], torch.arange(first_q, e), kv, None, q_offset=first_q - a)
                post_x[:, q0:q1] = Xa[:, q0:q1] + out[:, : q1 - q0]
                py[:, j0 : j0 + n_copy] = y[:, j0 : j0 + n_copy] + out[:, q1 - q0 :]
            post_y[s0] = py
        # conv: central offline; a copy reads the central frames before it, then itself
        cm = layer.conv_module
        K = cm.kernel_size
        conv_x = cm(post_x)
        new_copies = {}
        for s0 in starts:
            s = s0 - shift
            ps = range(s + C - (K - 1), s + C + R)
            z = torch.cat([at(post_x, post_y[s0], s, p) for p in ps], dim=1)
            real = torch.tensor([[0 <= p < T for p in ps]])
            c = cm._glu_out(cm._glu_in(z, real)) if R else torch.zeros(1, 0, D)  # (1, R, D)
            lag = 0 if causal else (K - 1) // 2
            res = cat([at(post_x, post_y[s0], s, p) for p in range(s + C - lag, s + C + R - lag)])
            new_copies[s0] = res + c

        def rest(x):
            x = x + 0.5 * layer.ffn2(layer.ffn2_layer_norm(x))
            return layer.final_layer_norm(x)

        X = rest(post_x + conv_x)
        copies = {s: rest(y) for s, y in new_copies.items()}
        states.append(X)
    return states, copies


CONFORMER_VARIANTS = {
    "relative": dict(position_embeddings_type="relative"),
    "rotary": dict(position_embeddings_type="rotary"),
}


@pytest.mark.parametrize("variant", sorted(CONFORMER_VARIANTS))
@pytest.mark.parametrize("chunk,left,right", [(4, 9, 3), (5, 6, 8)])
def test_conformer_cached_lookahead_equals_augmented_offline(models, variant, chunk, left, right):
    model = models("wav2vec2-conformer", "ctc", feat_extract_norm="layer", **CONFORMER_VARIANTS[variant])
    m = model.module
    audio = _audio(16000 + 16000 // 2 + 123, seed=1)
    T = model.num_frames(audio.numel())
    state = model.init_state(
        "cached",
        chunk_ms=chunk * FRAME_MS,
        left_context_ms=left * FRAME_MS,
        lookahead_ms=right * FRAME_MS,
        normalize="none",
    )
    N, r = m.config.num_hidden_layers, m.lookahead
    assert state.delay_frames == 1 + N * r + right  # CNN overhang + per-layer conv lag + lookahead
    y, state = step_through(model, audio, state, SIZES)
    assert T // chunk >= 10 and y.shape[0] == T
    with torch.no_grad():
        h = m.features(audio[None])
        layers = m.backbone.encoder.layers
        want = m.head_frames(
            m.backbone.encoder.layer_norm(
                _conformer_reference(layers, h, chunk, left, right, -1 - right, r, False)[0][-1]
            )
        )[0]
        without = m.head_frames(
            m.backbone.encoder.layer_norm(_conformer_reference(layers, h, chunk, left, 0, -1 - right, r, False)[0][-1])
        )[0]
    torch.testing.assert_close(y, want, atol=ATOL, rtol=0)
    assert (want - without).abs().max().item() > 10 * ATOL


W2V_BERT_VARIANTS = {
    "relative_key": dict(position_embeddings_type="relative_key"),
    "rotary": dict(position_embeddings_type="rotary"),
}


@pytest.mark.parametrize("variant", sorted(W2V_BERT_VARIANTS))
@pytest.mark.parametrize("chunk,left,right", [(4, 9, 3), (5, 6, 8)])
def test_w2v_bert_cached_lookahead_equals_augmented_offline(models, variant, chunk, left, right):
    model = models("wav2vec2-bert", "ctc", **W2V_BERT_VARIANTS[variant])
    m = model.module
    audio = _audio(16000 + 16000 // 2 + 555, seed=2)
    T = model.num_frames(audio.numel())
    state = model.init_state(
        "cached", chunk_ms=chunk * FRAME_MS, left_context_ms=left * FRAME_MS, lookahead_ms=right * FRAME_MS
    )
    assert state.delay_frames == 1 + right
    y, state = step_through(model, audio, state, SIZES)
    assert T // chunk >= 10 and y.shape[0] == T
    feats = fb.stream_features(audio, "cumulative", prior=m.fbank_prior)
    bb = m.backbone
    with torch.no_grad():
        h = bb.feature_projection(feats[None])

        def run(R):
            x = _conformer_reference(bb.encoder.layers, h, chunk, left, R, -1 - right, 0, True)[0][-1]
            if bb.intermediate_ffn is not None:
                x = x + 0.5 * bb.intermediate_ffn(x)
            return m.head_frames(x)[0]

        want, without = run(right), run(0)
    torch.testing.assert_close(y, want, atol=ATOL, rtol=0)
    assert (want - without).abs().max().item() > 10 * ATOL


@pytest.mark.parametrize(
    "family,overrides",
    [
        ("wavlm", dict(feat_extract_norm="layer")),
        ("wav2vec2-conformer", dict(feat_extract_norm="layer")),
        ("wav2vec2-bert", {}),
    ],
)
def test_lookahead_step_batch_equals_unbatched_and_state_is_bounded(models, family, overrides):
    model = models(family, "ctc", **overrides)
    audios = [_audio(12000 + 517 * i, seed=6 + i) for i in range(3)]
    kw = dict(mode="cached", chunk_ms=80, left_context_ms=160, lookahead_ms=60, normalize="none")
    single = [step_through(model, a, model.init_state(**kw), [900])[0] for a in audios]
    states = [model.init_state(**kw) for _ in audios]
    outs, sizes = [[] for _ in audios], []
    for pos in range(0, max(a.numel() for a in audios), 900):
        res, states = model.step_batch([a[pos : pos + 900] for a in audios], states)
        for i, r in enumerate(res):
            outs[i].append(r.frames)
        sizes.append(sum(t.numel() for t in states[0].cache))
    for i, st in enumerate(states):
        outs[i].append(model.flush(st).frames)
        torch.testing.assert_close(torch.cat(outs[i]), single[i], atol=ATOL, rtol=0)
    assert max(sizes) == min(sizes)  # fixed-size caches, whatever the length


def _adapter_reference(layer, X, copies, C, L, R, first):
    """One W2V-BERT adapter layer (strided conv + GLU, position-free attention) over the augmented
    sequence. X (1, T, D) central inputs, copies {chunk start s: (1, R, D) inputs at [s + C, s + C + R)}
    at the input rate -> the same at the output rate (chunk starts, C, L, R divided by the stride)."""
    st, p, k = layer.stride, layer.padding, layer.kernel_size
    T, D = X.shape[1], X.shape[2]
    n = layer.output_length(T)
    nx = layer._normed(X)
    res_c, h_c = layer._convs(nx, (p, p))  # central outputs (1, n, D), offline padding
    conv_copies = {}
    for s, y in copies.items():
        if not R:
            conv_copies[s // st] = (torch.zeros(1, 0, D), torch.zeros(1, 0, D))
            continue
        e, ny = s + C, layer._normed(y)
        z = [
            nx[:, q : q + 1]
            if 0 <= q < min(e, T)
            else ny[:, q - e : q - e + 1]
            if e <= q < T
            else torch.zeros(1, 1, 2 * D)
            for q in range(e - p, e + R)
        ]
        conv_copies[s // st] = layer._convs(torch.cat(z, dim=1), (0, k - p - st))  # outputs at [(s + C) / st, ...)
    Co, Lo, Ro, fo = C // st, L // st, R // st, first // st
    pos, owner, copy, allowed = _augmented(n, Co, Lo, Ro, fo)
    h_aug = [h_c]
    for so in _blocks(n, Co, fo):
        h_aug.append(conv_copies[so][1][:, : int(((owner == so) & copy).sum())])
    bias = torch.zeros(allowed.shape).masked_fill(~allowed, mask_value(torch.float32))[None, None]
    a = layer.self_attn(torch.cat(h_aug, dim=1), bias)
    out = layer._tail(res_c, a[:, :n])
    new_copies, i = {}, n
    for so, (res, h) in conv_copies.items():
        m = int(((owner == so) & copy).sum()) if so in _blocks(n, Co, fo) else 0
        att = torch.zeros_like(h)
        att[:, :m] = a[:, i : i + m]
        i += m
        new_copies[so] = layer._tail(res, att)
    return out, new_copies


def test_w2v_bert_adapter_cached_lookahead_equals_augmented_offline(models):
    """The adapter (stride 2: 40 ms output frames) streams its lookahead too, at its own rate."""
    model = models(
        "wav2vec2-bert",
        "ctc",
        add_adapter=True,
        num_adapter_layers=1,
        adapter_stride=2,
        adapter_kernel_size=3,
        position_embeddings_type="relative_key",
    )
    m, bb = model.module, model.module.backbone
    chunk, left, right = 3, 4, 2  # output frames (40 ms); the encoder sees twice as many
    audio = _audio(16000 * 2 + 555, seed=4)
    T = model.num_frames(audio.numel())
    state = model.init_state("cached", chunk_ms=chunk * 40, left_context_ms=left * 40, lookahead_ms=right * 40)
    assert state.delay_frames == 1 + right
    y, state = step_through(model, audio, state, SIZES)
    assert T // chunk >= 10 and y.shape[0] == T
    feats = fb.stream_features(audio, "cumulative", prior=m.fbank_prior)
    with torch.no_grad():
        h = bb.feature_projection(feats[None])

        def run(R):
            first = -2 - 2 * right
            states, copies = _conformer_reference(bb.encoder.layers, h, 2 * chunk, 2 * left, 2 * R, first, 0, True)
            x = bb.adapter.project(states[-1])
            copies = {s: bb.adapter.project(c) for s, c in copies.items()}
            x, _ = _adapter_reference(bb.adapter.layers[0], x, copies, 2 * chunk, 2 * left, 2 * R, first)
            return m.head_frames(x)[0]

        want, without = run(right), run(0)
    torch.testing.assert_close(y, want, atol=ATOL, rtol=0)
    assert (want - without).abs().max().item() > 10 * ATOL


def test_lookahead_of_a_fraction_of_a_frame_is_refused(models):
    from engines.errors import StreamUsageError

    model = models(
        "wav2vec2-bert",
        "ctc",
        add_adapter=True,
        num_adapter_layers=1,
        adapter_stride=2,
        adapter_kernel_size=3,
        position_embeddings_type="relative_key",
    )
    with pytest.raises(StreamUsageError, match="whole number of the model's 40 ms frames"):
        model.init_state("cached", chunk_ms=120, left_context_ms=160, lookahead_ms=60)


@pytest.mark.parametrize("family", ["wav2vec2-conformer", "wav2vec2-bert"])
def test_conformers_weighted_layer_sum_with_lookahead(models, family):
    """Frame head on the weighted sum of every layer's states: each layer's central frames line up."""
    extra = dict(feat_extract_norm="layer") if family == "wav2vec2-conformer" else {}
    model = models(family, "frame", use_weighted_layer_sum=True, **extra)
    m = model.module
    chunk, left, right = 4, 6, 3
    audio = _audio(16000 + 4000, seed=5)
    T = model.num_frames(audio.numel())
    state = model.init_state(
        "cached",
        chunk_ms=chunk * FRAME_MS,
        left_context_ms=left * FRAME_MS,
        lookahead_ms=right * FRAME_MS,
        normalize="none" if extra else "stream",
    )
    y, _ = step_through(model, audio, state, SIZES)
    assert T // chunk >= 10 and y.shape[0] == T
    with torch.no_grad():
        if extra:
            h, layers, stagger, causal = m.features(audio[None]), m.backbone.encoder.layers, m.lookahead, False
        else:
            feats = fb.stream_features(audio, "cumulative", prior=m.fbank_prior)
            h, layers, stagger, causal = m.backbone.feature_projection(feats[None]), m.backbone.encoder.layers, 0, True
        states, _ = _conformer_reference(layers, h, chunk, left, right, -1 - right, stagger, causal)
        w = torch.softmax(m.layer_weights, dim=-1)
        x = (torch.stack(states, dim=1) * w.view(1, -1, 1, 1)).sum(dim=1)
        want = m.classifier(x)[0]
    torch.testing.assert_close(y, want, atol=ATOL, rtol=0)
