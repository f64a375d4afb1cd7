"""Transcribe a file with the Python API.

    .venv/bin/python examples/api_transcribe.py examples/hello.wav [--model DIR|none] [--srt out.srt]

The standard graph (resample to 16 kHz mono -> webrtc VAD -> recogniser -> outputs), with live
captions on the console. Without a model (none given and no bundled default) it runs VAD only.
"""

from __future__ import annotations

import argparse

from speechstream import Pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--model", default=None, help="HF-layout model dir; 'none' for VAD only (default: bundled model)")
    ap.add_argument("--srt", default=None)
    args = ap.parse_args()
    result = Pipeline.from_file(args.file, model=args.model, srt=args.srt, console=True).run()
    for note in result.notes:
        print("note:", note)
    raise SystemExit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
