"""speechocean762 in the default-model recipe: the speakers held out by ``build_data`` never reach the
training manifest, and both age groups (adults and children) are held out, on a stand-in corpus and, when
``../shared/corpora`` is beside the checkout, on the real one."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from examples.train import build_data

COLUMNS = [
    "audio",
    "text",
    "text_original",
    "duration_s",
    "speaker",
    "source_repo",
    "source_path",
    "source_commit",
    "licence",
    "split",
    "age",
    "gender",
]


def _write(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True)
    with open(folder / "manifest.tsv", "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, delimiter="\t", quoting=csv.QUOTE_NONE, extrasaction="ignore", restval="")
        w.writeheader()
        w.writerows(rows)


def _stand_in(root: Path) -> Path:
    """A corpora folder: speechocean762 with 48 speakers (train/test x adult/child x f/m x 6), 3 utterances each,
    and one-row stand-ins for the other corpora."""
    rows, k = [], 0
    for split in ("train", "test"):
        for age in ("8", "30"):
            for gender in ("f", "m"):
                for _i in range(6):
                    spk = f"so762-{k:04d}"
                    k += 1
                    rows += [
                        {
                            "audio": f"audio/{spk}/{j}.ogg",
                            "text": f"WORD {spk[-4:]} {j}",
                            "speaker": spk,
                            "split": split,
                            "age": age,
                            "gender": gender,
                        }
                        for j in range(3)
                    ]
    _write(root / build_data.SO762, rows)
    for folder, spk in (
        ("ljspeech_subset", "LJ"),
        ("rhasspy_kathleen", "kathleen"),
        ("dctts_philipp_ljprompts", "philipp"),
        ("fsdd", "theo"),
    ):
        _write(root / folder, [{"audio": "a.flac", "text": f"{spk} SAYS HI", "speaker": spk}])
    return root


def _check(corpora: Path) -> dict[str, str]:
    rows = build_data.read_manifest(build_data.SO762, corpora)
    held = build_data.so762_heldout_speakers(rows)
    assert len(held) >= 15
    assert set(held.values()) == {"adults", "children"}
    ages = {r["speaker"]: int(r["age"]) for r in rows}
    splits = {r["speaker"]: r["split"] for r in rows}
    for spk, group in held.items():
        assert splits[spk] == "test"
        assert (ages[spk] < 18) == (group == "children")
    per_group = {g: sum(1 for v in held.values() if v == g) for g in ("adults", "children")}
    assert per_group["adults"] == per_group["children"]
    train = build_data.real_train_utts(corpora)
    trained = {voice.split("/", 1)[1] for _, voice, _ in train if voice.startswith(f"real:{build_data.SO762}/")}
    assert trained and not trained & set(held)
    assert trained | set(held) == set(ages)  # every other speaker trains
    # the evaluation sets hold exactly the held-out speakers' utterances, adults and children apart
    by_path = {str((corpora / build_data.SO762 / r["audio"]).resolve()): r["speaker"] for r in rows}
    for name, group in (("so762_adults", "adults"), ("so762_children", "children")):
        eval_rows = build_data.heldout_real_rows(name, corpora)
        assert {by_path[a] for a, _ in eval_rows} == {s for s, g in held.items() if g == group}
        assert not {t for _, t in eval_rows} & {t for _, _, t in train}
    return held


def test_so762_holdout_on_a_stand_in_corpus(tmp_path):
    held = _check(_stand_in(tmp_path))
    assert len(held) == 4 * build_data.SO762_PER_GROUP
    # fixed: the draw does not depend on anything but the manifest
    assert build_data.so762_heldout_speakers(build_data.read_manifest(build_data.SO762, tmp_path)) == held


def test_so762_holdout_on_the_shared_corpus():
    corpora = build_data.CORPORA
    if not (corpora / build_data.SO762 / "manifest.tsv").is_file():
        pytest.skip(f"{corpora} has no speechocean762")
    held = _check(corpora)
    assert len(held) == 20


def test_pack_index_has_no_heldout_speaker():
    """The training manifest itself (the pack's index.tsv), where a pack has been built here."""
    index = Path(os.environ.get("SPEECHSTREAM_PACK", "data/pack")) / "index.tsv"
    corpora = build_data.CORPORA
    if not index.is_file() or not (corpora / build_data.SO762 / "manifest.tsv").is_file():
        pytest.skip("no pack or no speechocean762 here")
    held = build_data.so762_heldout_speakers(build_data.read_manifest(build_data.SO762, corpora))
    with open(index, newline="") as f:
        voices = {r["voice"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}
    assert not {f"real:{build_data.SO762}/{s}" for s in held} & voices
