"""examples.train.evaluate: the held-out scorer behind the default model's card, greedy and with the
checkpoint's own LM, on two sentences of the bundled example recording (the scores themselves are
the card's business, measured on the held-out sets; here the wiring)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import soundfile as sf
import torch

from engines.api import load_model
from engines.tokenizer import CTCTokenizer
from examples.train import evaluate as ev

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "engines" / "default_model"


@pytest.fixture(scope="module")
def sets_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sets")
    audio, rate = sf.read(ROOT / "examples" / "hello.wav", dtype="float32")
    with open(ROOT / "examples" / "hello.segments.tsv", newline="") as f:
        segs = list(csv.DictReader(f, delimiter="\t"))
    rows = []
    for i in (0, 3):  # the first and the last sentence
        s = segs[i]
        wav = d / f"utt{i}.wav"
        sf.write(wav, audio[int(s["start_sample"]) - 3200 : int(s["end_sample"]) + 3200], rate)
        rows.append((str(wav), s["text"].upper().rstrip(".")))
    with open(d / "hello.tsv", "w") as f:
        f.write("audio\ttext\n" + "".join(f"{a}\t{t}\n" for a, t in rows))
    return d


@pytest.fixture(scope="module")
def scored_320(sets_dir) -> dict:
    """evaluate() with the checkpoint's LM at 320 ms chunks (its greedy columns are those of lm="none")."""
    return ev.evaluate(MODEL, sets_dir, 320, 10240, None, ["hello"], lm="auto")["hello"]


def test_lm_columns_come_from_the_checkpoints_own_lm(sets_dir, scored_320):
    res = scored_320
    attrs = ev.find_model_lm(MODEL)
    assert res["lm"]["alpha"] == attrs["alpha"] and res["lm"]["beta"] == attrs.get("beta", 1.0)
    assert res["lm"]["beam_width"] == 32
    # wiring: the reported LM hypotheses are the beam search over the same offline / cached-streaming logits
    torch.set_num_threads(1)
    model, tok = load_model(MODEL), CTCTokenizer.from_dir(MODEL)
    dec = ev.model_lm_decoder(MODEL, tok)
    wav, _ = ev.read_set(sets_dir / "hello.tsv", None)[0]
    x = torch.from_numpy(sf.read(wav, dtype="float32")[0])
    with torch.inference_mode():
        assert res["examples"][0]["offline_lm"] == ev.beam(dec, model.forward(x[None]).frames[0])
        assert res["examples"][0]["stream_lm"] == ev.beam(dec, ev.stream_logits(model, x, 320, 10240))
    assert all(0.0 <= res[k] <= 1.5 for k in ("offline_lm_wer", "offline_lm_cer", "stream_lm_wer", "stream_lm_cer"))
    md = ev.table({"hello": res}, 320, 10240)
    assert "streaming +LM CER" in md and f"{100 * res['stream_lm_cer']:.1f}%" in md


def test_lm_none_scores_greedy_only(sets_dir):
    res = ev.evaluate(MODEL, sets_dir, 640, 10240, 1, ["hello"], lm="none")
    assert res["hello"]["utterances"] == 1
    assert not any(k.endswith("_lm_cer") for k in res["hello"])
    assert "+LM" not in ev.table(res, 640, 10240)
    with pytest.raises(ValueError, match="lm must be"):
        ev.evaluate(MODEL, sets_dir, 640, 10240, 1, ["hello"], lm="yes")


def test_decompose_ends_are_the_engines_offline_and_cached_streaming(sets_dir, scored_320):
    """examples.train.decompose switches each offline/streaming difference on alone; its two ends must
    be what the engine really does: utterance norm + full context = offline, prior norm + the 320 ms
    chunk mask = cached streaming (left context longer than the clips)."""
    from examples.train import decompose

    model = load_model(MODEL)
    rows = ev.read_set(sets_dir / "hello.tsv", None)
    cols = decompose.decompose(model, rows, 16)
    assert list(cols) == [
        "utterance, full",
        "running, full",
        "prior, full",
        "utterance, 320 ms",
        "running, 320 ms",
        "prior, 320 ms",
    ]
    res = scored_320
    assert cols["utterance, full"] == pytest.approx(res["offline_cer"])
    assert cols["prior, 320 ms"] == pytest.approx(res["stream_cer"])


def test_lm_tune_grids_the_unknown_word_offset_and_writes_the_winner(sets_dir, tmp_path, capsys):
    import json
    import shutil

    from examples.lm import tune
    from examples.lm.lm_build import build_arpa, write_arpa

    model = tmp_path / "model"
    shutil.copytree(MODEL, model, ignore=shutil.ignore_patterns("language_model"))
    sents = [line.upper().rstrip(".").split() for line in (ROOT / "examples" / "hello.txt").read_text().splitlines()]
    arpa = write_arpa(*build_arpa(sents * 3, order=3), tmp_path / "lm.arpa")
    assert (
        tune.main(
            [
                str(sets_dir / "hello.tsv"),
                "--model",
                str(model),
                "--lm",
                str(arpa),
                "--alphas",
                "0.5",
                "--betas",
                "0,1",
                "--unk-offsets=-3,-12",
                "--write-model-lm",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = [r.split("|")[1:-1] for r in out.splitlines() if r.startswith("| beam + LM")]
    assert sorted((r[2].strip(), r[3].strip()) for r in rows) == [("0", "-12"), ("0", "-3"), ("1", "-12"), ("1", "-3")]
    best = min(rows, key=lambda r: (float(r[4].strip(" %")), float(r[5].strip(" %"))))
    attrs = json.loads((model / "language_model" / "attrs.json").read_text())
    assert attrs == {"alpha": 0.5, "beta": float(best[2]), "unk_score_offset": float(best[3])}
    assert (model / "language_model" / "lm.arpa").is_file()


def test_baseline_model_adds_a_before_after_table(sets_dir, tmp_path, capsys):
    """--baseline-model scores both checkpoints on the same utterances in one run; the before/after table
    shows each one's score and the change. A copy of the model with its head's bias for 'E' raised stands in
    for a second checkpoint, so the two score differently."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    other = tmp_path / "other"
    shutil.copytree(MODEL, other, ignore=shutil.ignore_patterns("language_model"))
    sd = load_file(str(other / "model.safetensors"))
    vocab = json.loads((other / "vocab.json").read_text())
    sd["lm_head.bias"][vocab["E"]] += 6.0
    save_file(sd, str(other / "model.safetensors"))
    out = tmp_path / "cmp.json"
    ev.main(
        [
            "--model",
            str(other),
            "--baseline-model",
            str(MODEL),
            "--sets-dir",
            str(sets_dir),
            "--sets",
            "hello",
            "--lm",
            "none",
            "--limit",
            "1",
            "--json",
            str(out),
        ]
    )
    md = capsys.readouterr().out
    got = json.loads(out.read_text())
    new, base = got["model"]["hello"], got["baseline"]["hello"]
    assert new["offline_cer"] > base["offline_cer"]
    row = next(line for line in md.splitlines() if line.startswith("| hello | 1 |") and "→" in line)
    cell = f"{100 * base['offline_cer']:.1f} → {100 * new['offline_cer']:.1f} ({100 * (new['offline_cer'] - base['offline_cer']):+.1f})"
    assert cell in row
    assert "+LM" not in md


def test_read_set_every_spreads_the_subset(tmp_path):
    p = tmp_path / "s.tsv"
    p.write_text("audio\ttext\n" + "".join(f"a{i}.wav\tT{i}\n" for i in range(10)))
    assert [t for _, t in ev.read_set(p, None, 4)] == ["T0", "T4", "T8"]
    assert [t for _, t in ev.read_set(p, 2, 3)] == ["T0", "T3"]
    assert len(ev.read_set(p, None)) == 10
