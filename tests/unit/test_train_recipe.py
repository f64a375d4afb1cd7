"""The default-model recipe (examples/train): text normalisation, device fbank == engine fbank,
augmentation shapes, and a tiny end-to-end CPU run (pack -> train -> export -> engine + transformers)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engines import frontend_fbank as fb
from examples.train import augment, features
from examples.train.text import normalize, number_words

ROOT = Path(__file__).resolve().parents[2]


def test_normalize_spells_numbers_and_keeps_apostrophes():
    assert number_words(1984) == "NINETEEN EIGHTY FOUR"
    assert number_words(3500) == "THREE THOUSAND FIVE HUNDRED"
    assert (
        normalize("In 1984, I paid 2 cats & a dog -- 'isn't' it?")
        == "IN NINETEEN EIGHTY FOUR I PAID TWO CATS AND A DOG ISN'T IT"
    )


def test_fortune_pool_reads_only_the_named_files(tmp_path):
    """Another fortune package on the machine (here a stand-in for fortune-anarchism) must not change the
    sentence pool: the held-out sentences are drawn from it with a fixed seed."""
    from examples.train.text import FORTUNE_FILES, fortune_sentences

    (tmp_path / "science").write_text("The cat sat on the warm mat today.\n%\nDogs bark at the moon at night.\n%\n")
    (tmp_path / "anarchism").write_text("This sentence comes from another package.\n%\n")
    (tmp_path / "art").write_text("A picture made of letters and dots.\n%\n")
    assert "science" in FORTUNE_FILES and "anarchism" not in FORTUNE_FILES and "art" not in FORTUNE_FILES
    assert fortune_sentences(tmp_path) == ["DOGS BARK AT THE MOON AT NIGHT", "THE CAT SAT ON THE WARM MAT TODAY"]


@pytest.mark.parametrize("mode", ["none", "utterance", "cumulative", "prior"])
def test_batched_fbank_equals_engine_frontend(mode):
    torch.manual_seed(0)
    waves = [torch.randn(16000) * 0.1, torch.randn(12345) * 0.01]
    padded = torch.zeros(2, 16000)
    padded[0], padded[1, :12345] = waves[0], waves[1]
    prior = fb.FbankPrior(
        torch.linspace(4.0, 9.0, 80, dtype=torch.float64), torch.linspace(2.0, 3.0, 80, dtype=torch.float64), 60.0
    )
    got, frames = features.features(padded, torch.tensor([16000, 12345]), mode, prior)
    for i, w in enumerate(waves):
        if mode in ("cumulative", "prior"):
            stream = fb.FbankStream("cumulative", prior=prior if mode == "prior" else None)
            ref, _ = stream.step(w, stream.init_state())
        else:
            ref = fb.extract([w], normalize=mode == "utterance")[0][0][: int(frames[i])]
        assert int(frames[i]) == ref.shape[0] == fb.stacked_frames_for_samples(w.numel())
        torch.testing.assert_close(got[i, : ref.shape[0]], ref, atol=2e-4, rtol=0)


def test_augmentation_keeps_shapes_padding_and_range():
    gen = torch.Generator().manual_seed(0)
    cfg = augment.AugmentConfig(p_reverb=1.0, p_noise=1.0, p_telephone=0.5, p_clip=0.5)
    wave = torch.zeros(3, 8000)
    n = torch.tensor([8000, 6000, 3000])
    for i in range(3):
        wave[i, : n[i]] = torch.sin(torch.arange(int(n[i])) * 0.05) * 0.3
    out = augment.augment_waves(wave, n, cfg, gen)
    assert out.shape == wave.shape and torch.isfinite(out).all() and out.abs().max() <= 1
    assert (out[1, 6000:] == 0).all() and (out[2, 3000:] == 0).all()
    assert augment.speed(wave[0], 1.1).shape[0] == round(8000 / 1.1)
    mel = features.log_mel(out)
    masked = augment.spec_augment(mel, features.frame_counts(n), cfg, gen)
    assert masked.shape == mel.shape and (masked != mel).any()


needs_tts = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None, reason="needs espeak-ng and ffmpeg"
)


def _tiny_pack(pack: Path) -> list:
    from examples.train import build_data, voices

    rng = random.Random(0)
    utts = []
    for text in ["HELLO WORLD", "THE QUICK BROWN FOX", "ONE TWO THREE"]:
        audio, voice = voices.synth_train("espeak", text, rng)
        utts.append((voices.trim_silence(audio), voice, text))
    pack.mkdir()
    build_data._write_rows(pack / "index.tsv", build_data.write_shards("espeak", utts, pack))
    return utts


@needs_tts
def test_tiny_pack_train_export_roundtrip(tmp_path):
    transformers = pytest.importorskip("transformers")
    from engines.api import load_model
    from examples.train import export, train

    pack = tmp_path / "pack"
    utts = _tiny_pack(pack)
    audio, loaded = train.load_pack(pack, None, 1)
    assert [u["text"] for u in loaded] == ["HELLO WORLD", "THE QUICK BROWN FOX", "ONE TWO THREE"]
    assert abs(loaded[0]["n"] - len(utts[0][0])) == 0
    kept = train.load_pack(pack, None, 1, ("festival",))
    assert kept[1] == loaded and torch.equal(kept[0], audio)
    with pytest.raises(ValueError, match="no utterances left after leaving out espeak"):
        train.load_pack(pack, None, 1, ("espeak",))

    run = tmp_path / "run"
    train.main(["--smoke", "--pack", str(pack), "--out", str(run), "--dev-utts", "1"])
    model_dir = export.export(run, tmp_path / "model")
    engine = load_model(model_dir)
    hf = transformers.Wav2Vec2BertForCTC.from_pretrained(str(model_dir)).eval()
    fe = transformers.SeamlessM4TFeatureExtractor.from_pretrained(str(model_dir))
    x = torch.from_numpy(utts[1][0])
    inputs = fe(x.numpy(), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ref = hf(**inputs).logits
    torch.testing.assert_close(engine.forward(x[None]).frames, ref, atol=1e-4, rtol=1e-4)
    tok = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(model_dir))
    assert tok.pad_token_id == 0 and tok.decode([0, 12, 12, 0, 12, 2, 4]) == train.decode_ids([0, 12, 12, 0, 12, 2, 4])


@pytest.mark.parametrize("chunk,left_chunks", [(16, None), (8, 4), (3, 2)])
def test_training_chunk_mask_is_what_cached_streaming_runs(chunk, left_chunks):
    """The recipe's dynamic-chunk forward (prior-normalised batched fbank + ``train.chunk_mask``) gives the
    logits the cached engine streams, for the bundled model: the model is trained on what it will run."""
    import soundfile as sf

    from engines.api import load_model
    from examples.train.train import forward

    torch.set_num_threads(1)
    model = load_model(ROOT / "engines" / "default_model")
    audio = torch.from_numpy(sf.read(ROOT / "examples" / "hello.wav", dtype="float32")[0][: 16000 * 3])
    left_ms = 10**6 if left_chunks is None else left_chunks * chunk * 20
    with torch.inference_mode():
        want = model.stream(audio, "cached", chunk_ms=chunk * 20, left_context_ms=left_ms, lookahead_ms=0)
        feats, frames = features.features(audio[None], torch.tensor([audio.numel()]), "prior", model.module.fbank_prior)
        got, _ = forward(model.module, feats, frames, chunk, left_chunks)
    assert got.shape[1] == want.shape[0]
    torch.testing.assert_close(got[0], want, atol=2e-3, rtol=0)


def test_resumed_run_with_another_dev_split_is_warned(tmp_path):
    from examples.train.train import resumed_dev_warning

    (tmp_path / "train_config.json").write_text(json.dumps({"args": {"seed": "1234", "dev_utts": "300"}}))
    assert resumed_dev_warning(tmp_path, 1234, 300) is None
    assert resumed_dev_warning(tmp_path, 1234, 200) is None  # a subset of the same shuffle
    assert "--seed 1234" in resumed_dev_warning(tmp_path, 4321, 300)
    assert "other 100 were trained on" in resumed_dev_warning(tmp_path, 1234, 400)
    assert resumed_dev_warning(None, 1, 300) is None and resumed_dev_warning(tmp_path / "none", 1, 300) is None


@needs_tts
def test_snapshot_resume_and_soup_of_two_runs(tmp_path):
    """Stage e's path on a tiny pack: a run's fp16 snapshot (snapshot --as-run, the carry to the device)
    resumes, and soup.py averages the two runs, keeps their prior, and scores the average on their dev split."""
    from examples.train import snapshot, soup, train

    pack = tmp_path / "pack"
    _tiny_pack(pack)
    run_a, carry, run_b, avg = (tmp_path / n for n in ("a", "carry", "b", "avg"))
    train.main(["--smoke", "--pack", str(pack), "--out", str(run_a), "--dev-utts", "1"])
    snapshot.main([str(run_a), "--out", str(carry), "--as-run"])
    half = train.read_weights(carry)
    full = train.read_weights(run_a)
    assert half.keys() == full.keys() and all(v.dtype == torch.float16 for v in half.values() if v.is_floating_point())
    train.main(["--smoke", "--pack", str(pack), "--out", str(run_b), "--dev-utts", "1", "--resume", str(carry)])
    assert (run_b / "fbank_prior.json").read_text() == (run_a / "fbank_prior.json").read_text()

    soup.main([str(run_a), str(run_b), "--out", str(avg), "--pack", str(pack)])
    b, got = train.read_weights(run_b), train.read_weights(avg)
    assert any(not torch.equal(full[k], b[k]) for k in full)  # the resumed run trained
    for k in full:
        torch.testing.assert_close(got[k], (full[k] + b[k]) / 2)
    dev = json.loads((avg / "dev.json").read_text())
    assert dev["dev_cer_full_utterance"] >= 0.0 and "dev_cer_chunk16_prior" in dev  # a 3-step model: CER can pass 1
    # the averaged folder is itself a run: it resumes, exports and scores like one
    assert train.score_dev(avg, pack, 1234, 1)["dev_cer_full_utterance"] == dev["dev_cer_full_utterance"]


def test_soup_refuses_runs_of_another_architecture(tmp_path):
    from safetensors.torch import save_file

    from examples.train import soup

    for name, shape in (("a", (4, 4)), ("b", (4, 5))):
        (tmp_path / name).mkdir()
        save_file({"w": torch.zeros(shape)}, str(tmp_path / name / "weights_0.safetensors"))
    with pytest.raises(SystemExit, match="another architecture"):
        soup.average([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(SystemExit, match="no weights"):
        soup.average([tmp_path / "a", tmp_path / "missing"])


def test_vtlp_warp_moves_formants_and_keeps_the_band():
    sr, n = 16000, 16000
    t = torch.arange(n) / sr
    wave = (0.3 * torch.sin(2 * torch.pi * 1000.0 * t))[None].repeat(3, 1)
    alpha = torch.tensor([1.0, 1.1, 0.9])
    torch.testing.assert_close(features.log_mel(wave, alpha)[0], features.log_mel(wave)[0], atol=1e-4, rtol=0)
    R = features.vtlp_matrix(alpha, 257)
    assert torch.allclose(R.sum(2), torch.ones(3, 257))  # each output bin interpolates, no energy invented
    power = torch.fft.rfft(wave[:, 4000:4512], n=512).abs().pow(2)
    peaks = (power[:, None, :] @ R.transpose(1, 2))[:, 0].argmax(1) * sr / 512  # warped spectrum's peak, Hz
    assert abs(peaks[0] - 1000) < 40 and abs(peaks[1] - 1100) < 40 and abs(peaks[2] - 900) < 40
    # the top of the band still maps to Nyquist, and the warp is monotone
    assert torch.equal(R[:, -1].argmax(1), torch.full((3,), 256))
    cfg = augment.AugmentConfig(p_vtlp=1.0)
    f = augment.vtlp_factors(64, cfg, "cpu", torch.Generator().manual_seed(0))
    assert ((f >= 0.9) & (f <= 1.1)).all() and augment.vtlp_factors(
        4, augment.AugmentConfig(), "cpu", torch.Generator()
    ) is None


def test_dev_split_draws_only_from_the_first_sources_and_ignores_later_ones():
    """A source appended to the pack later (festival) trains whole and leaves the dev split as it was,
    so resumed stages keep scoring the same dev utterances."""
    from examples.train.train import DEV_SOURCES, dev_split

    base = [{"source": DEV_SOURCES[i % len(DEV_SOURCES)]} for i in range(60)]
    dev0, train0 = dev_split(base, 1234, 10)
    dev1, train1 = dev_split(base + [{"source": "festival"}] * 15, 1234, 10)
    assert dev0 == dev1 and len(dev1) == 10
    assert set(train1) == set(train0) | set(range(60, 75))
    assert not set(dev1) & set(train1) and len(dev1) + len(train1) == 75
    assert dev_split(base, 1234, 100)[0].__len__() == 20  # at most a third of the pool
    assert dev_split(base, 99, 10)[0] != dev0


def _median_f0(audio: np.ndarray, sr: int = 16000) -> float:
    f0 = []
    for i in range(0, len(audio) - 640, 800):
        x = audio[i : i + 640]
        if np.abs(x).max() < 0.05:
            continue
        c = np.correlate(x, x, "full")[639:]
        lo, hi = sr // 400, sr // 60
        f0.append(sr / (lo + np.argmax(c[lo:hi])))
    return float(np.median(f0))


@pytest.mark.skipif(shutil.which("text2wave") is None, reason="needs festival (Debian festival, festvox-*)")
def test_festival_voices_speak_and_follow_their_prosody_settings():
    from examples.train import voices

    text = "living on earth may be expensive"
    for voice in voices.FESTIVAL_TRAIN:
        normal = voices.festival(text, voice)
        slow = voices.festival(text, voice, stretch=1.25)
        assert normal.dtype == np.float32 and 1.0 < len(normal) / 16000 < 5.0 and np.abs(normal).max() > 0.05
        assert len(slow) > 1.1 * len(normal), voice
    low = voices.festival(text, "ked_diphone", f0_mean=80)
    high = voices.festival(text, "ked_diphone", f0_mean=160)
    assert 65 < _median_f0(low) < 100 and 130 < _median_f0(high) < 190
    audio, voice = voices.synth_train("festival", text.upper(), random.Random(0))
    assert voice.split(":")[1] in voices.FESTIVAL_TRAIN and len(audio) > 16000


@needs_tts
def test_probe_reads_a_manifest_like_the_pack_and_warps_it(tmp_path, capsys):
    """probe.py on a smoke run: a manifest of 16-bit WAVs becomes the same int16 audio ``load_pack`` gives,
    ``greedy_cer`` with the identity warp scores what it scores unwarped, a warp changes the features, and
    both subcommands print their tables."""
    import soundfile as sf

    from examples.train import probe, train

    torch.set_num_threads(1)
    pack = tmp_path / "pack"
    _tiny_pack(pack)
    run = tmp_path / "run"
    train.main(["--smoke", "--pack", str(pack), "--out", str(run), "--dev-utts", "1"])
    audio, utts = train.load_pack(pack, None, 1)
    rows = []
    for i, u in enumerate(utts):
        sf.write(tmp_path / f"{i}.wav", audio[u["start"] : u["start"] + u["n"]].numpy(), 16000, subtype="PCM_16")
        rows.append((str(tmp_path / f"{i}.wav"), u["text"]))
    m_audio, m_utts = probe.manifest_as_pack(rows)
    assert torch.equal(m_audio, audio) and [(u["start"], u["n"], u["text"]) for u in m_utts] == [
        (u["start"], u["n"], u["text"]) for u in utts
    ]

    model = train.load_run(run)[0].eval()
    cpu = torch.device("cpu")
    plain = train.greedy_cer(model, audio, utts, [0, 1, 2], cpu, "utterance", None, None)
    assert train.greedy_cer(model, audio, utts, [0, 1, 2], cpu, "utterance", None, None, warp=1.0) == pytest.approx(
        plain
    )
    wave = audio[: utts[0]["n"]].float()[None] / 32768.0
    assert not torch.allclose(features.log_mel(wave), features.log_mel(wave, torch.tensor([1.1])))

    assert probe.voice_group({"source": "espeak", "voice": "espeak:en-us+m3"}) == "espeak (all variants)"
    assert probe.voice_group({"source": "flite", "voice": "flite:awb"}) == "flite:awb"
    assert probe.main(["voices", str(run), "--pack", str(pack), "--threads", "1"]) == 0
    assert "| espeak (all variants) | 1 |" in capsys.readouterr().out
    (tmp_path / "m.tsv").write_text("audio\ttext\n" + "".join(f"{path}\t{text}\n" for path, text in rows))
    assert probe.main(["warp", str(run), str(tmp_path / "m.tsv"), "--factors", "1,1.1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"| 1 | {100 * plain:.1f} % |" in out and "| 1.1 |" in out


def test_wordnet_sentences_from_glosses_and_examples(tmp_path):
    """WordNet's data files give their glosses and quoted examples, normalised, without the licence header,
    asides in brackets or abbreviations; build_data's pool drops held-out sentences."""
    from examples.train import build_data
    from examples.train.text import wordnet_sentences

    (tmp_path / "data.verb").write_text(
        "  1 This software and database is being provided to you, the LICENSEE, by Princeton University\n"
        '00603822 31 v 01 retrain 1 002 @ 00603298 v 0000 | teach new skills; "We must retrain the 2 linguists"  \n'
        "00603981 31 v 01 drill 3 001 @ 00603298 v 0000 | train in the military, e.g., in the use of weapons  \n"
        "00604225 31 v 02 housebreak 0 001 @ 00603298 v 0000 | train (a pet) to live cleanly in a house  \n"
    )
    (tmp_path / "data.noun").write_text(
        "00001740 03 n 01 entity 0 | that which is perceived or known or inferred to have its own distinct existence  \n"
    )
    got = wordnet_sentences(tmp_path, min_words=2)
    assert got == [
        "TEACH NEW SKILLS",
        "THAT WHICH IS PERCEIVED OR KNOWN OR INFERRED TO HAVE ITS OWN DISTINCT EXISTENCE",
        "WE MUST RETRAIN THE TWO LINGUISTS",
    ]
    assert wordnet_sentences(tmp_path / "missing") == []
    real = wordnet_sentences()
    if real:  # Debian's wordnet-base
        texts = {"eval": real[:3], "lj_excluded": [real[3]]}
        assert build_data.wordnet_pool(texts) == real[4:]


def test_text_stage_refuses_an_empty_fortune_pool(tmp_path, monkeypatch):
    """Without Debian's fortune files the held-out sentences would silently be drawn from nothing."""
    from examples.train import build_data

    monkeypatch.setattr(build_data.textlib, "fortune_sentences", lambda *a, **k: [])
    with pytest.raises(SystemExit, match="fortunes-min"):
        build_data.stage_texts(tmp_path / "work", seed=0)
    assert not (tmp_path / "work" / "texts.json").exists()


def test_shares_fix_each_groups_part_of_the_epoch_audio_and_keep_the_rest_in_proportion():
    import random

    import pytest

    from examples.train.train import parse_shares, weighted_epoch

    utts = (
        [{"source": "so762", "voice": "so762:a", "n": 100} for _ in range(60)]  # 6000: 60 % of the audio
        + [{"source": "real", "voice": "real:fsdd/x", "n": 10} for _ in range(10)]  # 100: 1 %
        + [{"source": "real", "voice": "real:kathleen", "n": 50} for _ in range(40)]  # 2000: 20 %
        + [{"source": "espeak", "voice": "espeak:v", "n": 50} for _ in range(38)]  # 1900: 19 %
    )
    idx = list(range(len(utts)))
    assert weighted_epoch(utts, idx, {}, random.Random(0)) == idx  # no shares: the epoch as it was
    shares = parse_shares("so762=0.3, real:fsdd=0.05")
    assert shares == {"so762": 0.3, "real:fsdd": 0.05}
    epoch = weighted_epoch(utts, idx, shares, random.Random(0))

    def seconds(pred):
        return sum(utts[u]["n"] for u in epoch if pred(utts[u]))

    total = sum(u["n"] for u in utts)
    assert seconds(lambda u: u["source"] == "so762") == pytest.approx(0.3 * total, abs=100)
    assert seconds(lambda u: u["voice"].startswith("real:fsdd")) == pytest.approx(0.05 * total, abs=10)  # repeated
    kathleen = seconds(lambda u: u["voice"] == "real:kathleen")
    espeak = seconds(lambda u: u["source"] == "espeak")
    assert kathleen / espeak == pytest.approx(2000 / 1900, rel=0.05)  # the rest keeps its proportions
    assert kathleen + espeak == pytest.approx(0.65 * total, rel=0.02)
    for bad in ("so762", "so762=1.5", "a=0.6,b=0.5", "=0.2"):
        with pytest.raises(ValueError):
            parse_shares(bad)
    with pytest.raises(ValueError, match="no training utterance"):
        weighted_epoch(utts, idx, {"piper": 0.2}, random.Random(0))


def test_real_speed_parses_and_perturbs_only_the_real_utterances():
    import dataclasses
    import random

    from examples.train.train import make_batch

    assert augment.parse_real_speed("") is None
    assert augment.parse_real_speed("0.9:0.8:1.25") == (0.9, 0.8, 1.25)
    for bad in ("0.9", "0.9:0.8", "a:0.8:1.2", "1.5:0.8:1.2", "0.5:1.2:0.8", "0.5:0:1.2", "0.5:0.8:inf"):
        with pytest.raises(ValueError, match="--real-speed"):
            augment.parse_real_speed(bad)
    n = 32000  # 2 s each
    utts = [
        {"start": 0, "n": n, "text": "A", "voice": "real:fsdd/x", "source": "real"},
        {"start": 0, "n": n, "text": "B", "voice": "real:speechocean762/so762-0001", "source": "so762"},
        {"start": 0, "n": n, "text": "C", "voice": "espeak:en-us", "source": "espeak"},
        {"start": 0, "n": n, "text": "D", "voice": "flite:slt", "source": "flite"},
    ]
    assert [augment.is_real(u) for u in utts] == [True, True, False, False]
    audio = torch.full((n,), 1000, dtype=torch.int16)
    SR = augment.SR
    edges = 0.6 * SR  # make_batch's random leading + trailing silence, at most
    cpu = torch.device("cpu")

    def lengths(aug, real_speed, batch):
        _, lens, _ = make_batch(audio, utts, batch, random.Random(0), aug, cpu, 60.0, real_speed)
        return [int(x) for x in lens]

    # synthetic speed fixed at 2x (half the length), real speed at 0.5x (twice the length), each always
    aug = dataclasses.replace(augment.LIGHT, p_speed=1.0, speed_range=(2.0, 2.0))
    for got, u in zip(lengths(aug, (1.0, 0.5, 0.5), [[0], [1], [2], [3]]), utts):
        want = 2 * n if augment.is_real(u) else n // 2
        assert want <= got <= want + edges, (u["voice"], got)
    # without --real-speed every sample keeps --aug's speed (the behaviour before the option)
    for got in lengths(aug, None, [[0], [1], [2], [3]]):
        assert n // 2 <= got <= n // 2 + edges
    # a joined sample: the real clip on its own draw, the synthetic one on the sample's --aug draw
    (got,) = lengths(aug, (1.0, 0.5, 0.5), [[0, 2]])
    assert 2 * n + n // 2 <= got <= 2 * n + n // 2 + edges + 0.6 * SR
    # probability 0: real clips unchanged, synthetic ones still sped by --aug
    (got,) = lengths(aug, (0.0, 0.5, 0.5), [[1, 3]])
    assert n + n // 2 <= got <= n + n // 2 + edges + 0.6 * SR
    # no augmentation (the plain curriculum batches): --real-speed does nothing either
    assert lengths(None, (1.0, 0.5, 0.5), [[0], [2]]) == [n, n]
