"""MMS (``facebook/mms-1b-all`` layout) against transformers: the attention adapters in the encoder
(``adapter_attn_dim``), and the per-language adapter files with their nested vocabulary
(``Wav2Vec2ForCTC.load_adapter``, ``Wav2Vec2CTCTokenizer.set_target_lang``). fp32, atol 1e-4."""

import pytest
import torch

from engines.api import load_model
from engines.errors import KeyMismatchError, UnknownLanguageError
from engines.tokenizer import CTCTokenizer
from tests import hf_tiny
from tests.parity.waveform_parity import ATOL, audio_batch, check_family

pytest.importorskip("transformers")
torch.set_num_threads(1)


@pytest.mark.parametrize("head", ["ctc", "base"])
def test_attention_adapter_layers_match_transformers(head, tmp_path):
    """Every hidden state, the encoder output and the head: pre-LN layers with ``adapter_layer``."""
    check_family("wav2vec2", "mms", head, tmp_path, overrides=hf_tiny.MMS_CONFIG)
    model = load_model(tmp_path / "m")
    assert sum(1 for n, _ in model.module.named_modules() if n.endswith("adapter_layer")) == 2


@pytest.fixture(scope="module")
def mms(tmp_path_factory):
    # "aaa" as safetensors (and in model.safetensors), "bbb" as a .bin file: both names load_adapter reads
    return hf_tiny.build_tiny_mms(tmp_path_factory.mktemp("mms") / "m", bin_langs=("bbb",))


def _features(mms, audio, amask):
    from transformers import Wav2Vec2FeatureExtractor

    fe = Wav2Vec2FeatureExtractor.from_pretrained(mms)
    waves = [a[: int(n)].numpy() for a, n in zip(audio, amask.sum(-1))]
    return fe(waves, sampling_rate=16000, padding=True, return_tensors="pt")


def test_each_language_matches_transformers_load_adapter(mms):
    model = load_model(mms)
    assert model.languages == ("aaa", "bbb")
    audio, amask = audio_batch()
    lengths = amask.sum(-1)
    base_logits = model.forward(audio, lengths).frames
    outs = {}
    ref_model, tok = hf_tiny.reference_mms(mms, "bbb")
    inputs = _features(mms, audio, amask)
    for language in ("bbb", "aaa", "bbb"):  # switching back and forth, in both
        ref_model.load_adapter(language)
        tok.set_target_lang(language)
        with torch.no_grad():
            ref = ref_model(**inputs).logits
        out = model.forward(audio, lengths, language=language)
        mask = out.frame_mask
        assert out.frames.shape == ref.shape  # each language's own vocabulary size
        err = (out.frames - ref).abs()[mask].max().item()
        assert err <= ATOL, (language, err)
        # the transcripts: ours (the language's vocabulary) against the language's tokenizer
        mine = CTCTokenizer.from_dir(mms, target_lang=language)
        for i in range(2):
            n = int(mask[i].sum())
            want = tok.decode(ref[i, :n].argmax(-1).tolist())
            assert mine.decode(out.frames[i, :n].argmax(-1).tolist()) == want
            assert want.strip()
        outs[language] = out.frames
    assert outs["aaa"].shape[-1] == len(hf_tiny.MMS_VOCABS["aaa"]) != outs["bbb"].shape[-1]
    # without a language: the checkpoint as stored (its weights hold "aaa", its tokenizer's target_lang)
    assert torch.equal(base_logits, outs["aaa"])
    assert CTCTokenizer.from_dir(mms).labels == CTCTokenizer.from_dir(mms, target_lang="aaa").labels


def test_language_views_share_the_base_weights_and_leave_it_unchanged(mms):
    model = load_model(mms)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    bbb = model.for_language("bbb")
    assert model.for_language("bbb") is bbb  # loaded once, then cached
    assert bbb.language == "bbb" and bbb.config.vocab_size == 15 and model.config.vocab_size == 12
    shared = dict(model.module.named_parameters())
    own = [n for n, p in bbb.module.named_parameters() if p is not shared.get(n)]
    assert own and all(".adapter_layer." in n or n.startswith("lm_head.") for n in own), own
    assert len(own) == 2 * 6 + 2  # two layers x (norm, linear_1, linear_2) x (weight, bias) + lm_head
    bbb.forward(torch.randn(8000) * 0.1)
    after = model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert bbb.for_language(None) is model and bbb.for_language("aaa") is model.for_language("aaa")


def test_unknown_language_lists_the_available_ones(mms, tmp_path):
    model = load_model(mms)
    with pytest.raises(UnknownLanguageError, match=r"unknown language 'zzz' .*available: aaa, bbb"):
        model.for_language("zzz")
    with pytest.raises(UnknownLanguageError, match="not multilingual"):
        load_model(hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path / "mono")).for_language("aaa")


def test_adapter_file_with_wrong_keys_is_refused_by_name(mms, tmp_path):
    import shutil

    from safetensors.torch import save_file

    bad = tmp_path / "bad"
    shutil.copytree(mms, bad)
    sd = torch.load(bad / "adapter.bbb.bin", weights_only=True)
    sd["wav2vec2.encoder.layers.0.adapter_layer.extra"] = torch.zeros(1)
    del sd["lm_head.bias"]
    torch.save(sd, bad / "adapter.bbb.bin")
    with pytest.raises(KeyMismatchError, match=r"adapter\.bbb\.bin.*missing keys: lm_head\.bias.*unexpected keys"):
        load_model(bad).for_language("bbb")
    load_model(bad).for_language("aaa")  # the other language still loads
    save_file({}, str(bad / "adapter.ccc.safetensors"))  # no vocabulary for ccc: not offered
    assert load_model(bad).languages == ("aaa", "bbb")


def test_language_adapters_with_add_adapter_match_transformers(tmp_path):
    """Both adapters at once: MMS attention adapters per language, and the conv stack after the encoder."""
    path = hf_tiny.build_tiny_mms(tmp_path / "m", add_adapter=True, num_adapter_layers=1)
    model = load_model(path)
    audio, amask = audio_batch((8000,))
    ref, _ = hf_tiny.reference_mms(path, "bbb")
    inputs = _features(path, audio, amask)
    for language in ("bbb", "aaa"):
        ref.load_adapter(language)
        with torch.no_grad():
            want = ref(**inputs).logits
        got = model.forward(audio, language=language).frames
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= ATOL, language
