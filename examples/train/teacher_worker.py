"""Transcribe a job list with the Whisper base teacher; run under the teacher's Python (``examples.train.teacher``).

    TEACHER_PYTHON examples/train/teacher_worker.py MODEL_DIR JOBS.tsv OUT.tsv [--threads 1]

JOBS.tsv: ``id<TAB>audio path`` lines. OUT.tsv: ``id<TAB>seconds of audio<TAB>seconds decoding<TAB>text`` lines,
appended one by one and skipped when already there, so an interrupted run resumes. Needs only faster-whisper
and soundfile (no project import: the teacher lives in its own virtualenv). Greedy decoding (beam 1), English,
no timestamps, no VAD, no conditioning on earlier text: each utterance alone.
"""

from __future__ import annotations

import argparse
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
        done = {line.split("\t", 1)[0] for line in args.out.read_text().splitlines() if line}
    with open(args.out, "a") as out:
        for line in args.jobs.read_text().splitlines():
            uid, path = line.split("\t")
            if uid in done:
                continue
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            audio = audio.mean(axis=1)
            if rate != 16000:
                raise SystemExit(f"{path}: {rate} Hz, the teacher takes 16 kHz")
            t = time.perf_counter()
            segments, _ = model.transcribe(
                np.ascontiguousarray(audio),
                language="en",
                beam_size=1,
                without_timestamps=True,
                vad_filter=False,
                condition_on_previous_text=False,
            )
            text = " ".join(s.text.strip() for s in segments).replace("\t", " ").replace("\n", " ")
            out.write(f"{uid}\t{len(audio) / rate:.3f}\t{time.perf_counter() - t:.3f}\t{text}\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
