"""The VAD node: async shell around :class:`stream.vad.Segmenter`.

Input: 16 kHz mono float32 ``AudioChunk`` (put :class:`~stream.resample.Resample`
in front). Output, per stream and in stream order: ``AudioChunk`` with
``speech=True|False`` (split exactly at segment boundaries), ``SpeechStarted``
before the first speech sample of a segment and ``SpeechEnded(sample=end,
start_sample=start)`` right after its last one. A recogniser can therefore
segment by reading its input in order: open a segment at ``SpeechStarted``, feed
``speech=True`` audio, close it at ``SpeechEnded`` (or at ``EndOfStream``).

With ``hints=True`` (the default) the node also sends the internal
:class:`~stream.events.SpeechPausing` when a pause has begun and the segment's audio up to its
would-be end is all out (``Segmenter.with_pause_hints``): the recogniser decodes the segment
then, while the rest of the silence arrives, so the final is ready when ``SpeechEnded`` comes.
Sinks never see it (the recogniser consumes it; sink nodes skip internal events).

The segmenter holds back at most ``Segmenter.lookahead_samples`` of audio per
stream (its decision latency). Classification runs in an
:class:`~stream.executor.Executor` (one worker by default), so a slow VAD (silero)
never blocks capture. A mid-stream ``Flush`` does not force a decision (a VAD has
no partial result); ``EndOfStream`` closes the open segment.
"""

from __future__ import annotations

from typing import Literal

from .errors import BadAudioError
from .events import SAMPLE_RATE_HZ, AudioChunk, EndOfStream, Event, SpeechEnded, SpeechPausing, SpeechStarted
from .executor import Executor
from .node import Node
from .vad import Audio, End, Output, Pause, Segmenter, SegmenterState, Start, VadConfig, make_segmenter

__all__ = ["VadNode"]


class VadNode(Node):
    def __init__(
        self, segmenter: Segmenter, *, name: str = "vad", executor: Executor | None = None, hints: bool = True
    ):
        super().__init__(name)
        self.hints = hints
        self.segmenter = segmenter.with_pause_hints() if hints and not segmenter.pause_hints else segmenter
        self._states: dict[str, SegmenterState] = {}
        self._executor = executor
        self._own_executor = executor is None

    @classmethod
    def create(
        cls, kind: Literal["webrtc", "silero", "none"] = "webrtc", config: VadConfig | None = None, **kw: object
    ) -> VadNode:
        """``VadNode.create("webrtc", VadConfig(min_silence_ms=300), aggressiveness=3)``."""
        return cls(make_segmenter(kind, config, **kw))  # type: ignore[arg-type]

    @classmethod
    def webrtc(cls, config: VadConfig | None = None, **kw: object) -> VadNode:
        return cls.create("webrtc", config, **kw)

    async def start(self) -> None:
        if self._executor is None:
            self._executor = Executor(1, name=self.name)

    async def stop(self) -> None:
        if self._own_executor and self._executor is not None:
            await self._executor.aclose()
            self._executor = None

    async def process(self, event: Event) -> None:
        if not isinstance(event, AudioChunk):
            await self.push(event)
            return
        sid = event.stream_id
        if event.sample_rate_hz != SAMPLE_RATE_HZ or event.samples.ndim != 1:
            raise BadAudioError(
                f"VAD needs 16 kHz mono audio, got {event.sample_rate_hz} Hz shape {event.samples.shape}; put Resample() first"
            )
        state = self._states.get(sid) or self.segmenter.init_state()
        if event.sample != state.total:
            raise BadAudioError(f"VAD got audio at sample {event.sample}, expected {state.total}")
        assert self._executor is not None
        out, state = await self._executor.run(self.segmenter.step, event.samples, state)
        self._states[sid] = state
        await self._emit(sid, out)

    async def end_of_stream(self, eos: EndOfStream) -> None:
        sid = eos.stream_id
        state = self._states.get(sid)
        if state is not None:
            out, state = self.segmenter.flush(state)
            self._states[sid] = state
            await self._emit(sid, out)
        await self.push(eos)

    def forget(self, stream_id: str) -> None:
        self._states.pop(stream_id, None)

    async def _emit(self, sid: str, outputs: list[Output]) -> None:
        for o in outputs:
            if isinstance(o, Audio):
                await self.push(AudioChunk(sid, o.sample, samples=o.samples, speech=o.speech))
            elif isinstance(o, Start):
                await self.push(SpeechStarted(sid, o.sample))
            elif isinstance(o, End):
                await self.push(SpeechEnded(sid, o.sample, start_sample=o.start_sample))
            elif isinstance(o, Pause) and self.hints:
                await self.push(SpeechPausing(sid, o.sample, start_sample=o.start_sample))
