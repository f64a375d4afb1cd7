"""Transcribe a job list with the Whisper base teacher; run under the teacher's Python (``examples.train.teacher``).

    TEACHER_PYTHON examples/train/teacher_worker.py MODEL_DIR JOBS.tsv OUT.tsv [--threads 1]

JOBS.tsv: ``id<TAB>audio path`` lines. OUT.tsv: ``id<TAB>seconds of audio<TAB>seconds decoding<TAB>text`` lines,
appended one by one and skipped when already there, so an interrupted run resumes. Needs only faster-whisper,
soundfile and numpy (the teacher lives in its own virtualenv); its one project import is ``whisper_common`` (the
model load and audio read it shares with ``bench/whisper_words_worker.py``), standard library only. Greedy
decoding (beam 1), English, no timestamps, no VAD, no conditioning on earlier text: each utterance alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for examples.train.whisper_common

from examples.train.whisper_common import RATE, load_model, read_audio, worker_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = worker_args(argv)
    model = load_model(args.model_dir, args.threads)
    done = set()
    if args.out.exists():
        done = {line.split("\t", 1)[0] for line in args.out.read_text().splitlines() if line}
    with open(args.out, "a") as out:
        for line in args.jobs.read_text().splitlines():
            uid, path = line.split("\t")
            if uid in done:
                continue
            audio = read_audio(path)
            t = time.perf_counter()
            segments, _ = model.transcribe(
                audio,
                language="en",
                beam_size=1,
                without_timestamps=True,
                vad_filter=False,
                condition_on_previous_text=False,
            )
            text = " ".join(s.text.strip() for s in segments).replace("\t", " ").replace("\n", " ")
            out.write(f"{uid}\t{len(audio) / RATE:.3f}\t{time.perf_counter() - t:.3f}\t{text}\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
