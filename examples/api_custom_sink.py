"""A custom sink, and two streams in one graph.

    .venv/bin/python examples/api_custom_sink.py examples/hello.wav

A sink implements ``handle(event) -> bool`` (True when it wrote something); the base class
gives it the async ``consume``/``close`` contract, per-stream filtering and failure isolation.
Here one graph (the graph form of ``Pipeline``) runs two streams, the same file under two stream
ids, through resampling and VAD, and a small sink totals speech time per stream.
"""

from __future__ import annotations

import sys

import speechstream as ss


class SpeechTime(ss.Sink):
    """Seconds of speech per stream, printed when each stream ends."""

    kind = "speech-time"

    def __init__(self) -> None:
        super().__init__()
        self.samples: dict[str, int] = {}

    def handle(self, event: ss.Event) -> bool:
        if isinstance(event, ss.SpeechEnded):
            self.samples[event.stream_id] = self.samples.get(event.stream_id, 0) + event.sample - event.start_sample
        elif isinstance(event, ss.EndOfStream):
            seconds = self.samples.get(event.stream_id, 0) / event.sample_rate_hz
            print(f"{event.stream_id}: {seconds:.2f} s of speech in {event.time_s:.2f} s of audio")
            return True
        return False


def main(path: str) -> None:
    sources = [ss.FileSource(path, stream_id=sid, progress=False) for sid in ("left", "right")]
    ss.Pipeline(sources=sources, nodes=[ss.Resample(), ss.VadNode.create("webrtc")], sinks=[SpeechTime()]).run()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/hello.wav")
