"""Whisper word timestamps for a job list; run under the teacher's Python by ``bench/bench_vad_labels.py``.

    TEACHER_PYTHON bench/whisper_words_worker.py MODEL_DIR JOBS.tsv OUT.jsonl [--threads 1]

JOBS.tsv: ``id<TAB>audio path`` lines (16 kHz), optionally ``<TAB>[[start s, end s], ...]``: stretches set to zero
before transcribing. OUT.jsonl: one JSON object per job, ``{"id", "audio_s", "decode_s", "words": [[start s, end s,
word, probability], ...]}``, appended one by one; a job whose id is there already is skipped (a run resumes). Needs only faster-whisper and soundfile (the
teacher's virtualenv has no project import). Greedy (beam 1), English, word timestamps, no VAD filter, no
conditioning on earlier text: each utterance alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("jobs", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import numpy as np
    import soundfile as sf
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(args.model_dir), device="cpu", compute_type="int8", cpu_threads=args.threads, num_workers=1
    )
    done = set()
    if args.out.exists():
        done = {json.loads(line)["id"] for line in args.out.read_text().splitlines() if line}
    with open(args.out, "a") as out:
        for line in args.jobs.read_text().splitlines():
            uid, path, *zero = line.split("\t")
            if uid in done:
                continue
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            audio = audio.mean(axis=1)
            if rate != 16000:
                raise SystemExit(f"{path}: {rate} Hz, the teacher takes 16 kHz")
            for a, b in json.loads(zero[0]) if zero else []:
                audio[int(round(a * rate)) : int(round(b * rate))] = 0.0
            t = time.perf_counter()
            segments, _ = model.transcribe(
                np.ascontiguousarray(audio),
                language="en",
                beam_size=1,
                word_timestamps=True,
                vad_filter=False,
                condition_on_previous_text=False,
            )
            words = [
                [round(w.start, 3), round(w.end, 3), w.word.strip(), round(w.probability, 3)]
                for s in segments
                for w in s.words or []
            ]
            rec = {"id": uid, "audio_s": len(audio) / rate, "decode_s": time.perf_counter() - t, "words": words}
            out.write(json.dumps(rec) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
