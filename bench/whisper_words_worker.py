"""Whisper word timestamps for a job list; run under the teacher's Python by ``bench/bench_vad_labels.py``.

    TEACHER_PYTHON bench/whisper_words_worker.py MODEL_DIR JOBS.tsv OUT.jsonl [--threads 1]

JOBS.tsv: ``id<TAB>audio path`` lines (16 kHz), optionally ``<TAB>[[start s, end s], ...]``: stretches set to zero
before transcribing. OUT.jsonl: one JSON object per job, ``{"id", "audio_s", "decode_s", "words": [[start s, end s,
word, probability], ...]}``, appended one by one; a job whose id is there already is skipped (a run resumes). Needs
only faster-whisper, soundfile and numpy (the teacher's virtualenv has no project dependency); its one project
import is ``examples/train/whisper_common.py`` (the model load and audio read of the teacher's worker), standard
library only. Greedy (beam 1), English, word timestamps, no VAD filter, no conditioning on earlier text: each
utterance alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for examples.train.whisper_common

from examples.train.whisper_common import RATE, load_model, read_audio, worker_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = worker_args(argv)
    model = load_model(args.model_dir, args.threads)
    done = set()
    if args.out.exists():
        done = {json.loads(line)["id"] for line in args.out.read_text().splitlines() if line}
    with open(args.out, "a") as out:
        for line in args.jobs.read_text().splitlines():
            uid, path, *zero = line.split("\t")
            if uid in done:
                continue
            audio = read_audio(path)
            for a, b in json.loads(zero[0]) if zero else []:
                audio[int(round(a * RATE)) : int(round(b * RATE))] = 0.0
            t = time.perf_counter()
            segments, _ = model.transcribe(
                audio,
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
            rec = {"id": uid, "audio_s": len(audio) / RATE, "decode_s": time.perf_counter() - t, "words": words}
            out.write(json.dumps(rec) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
