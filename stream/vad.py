"""Voice activity detection: pure, synchronous state machines (no asyncio).

Two layers:

1. A *frame classifier* labels fixed-size frames of 16 kHz mono float32 audio
   speech / not speech: :class:`WebRtcClassifier` (webrtcvad, 10/20/30 ms frames,
   ``aggressiveness`` 0-3) or :class:`SileroClassifier` (silero-vad's bundled
   TorchScript model, 512-sample frames, probability ``threshold`` with silero's
   own hysteresis). :class:`AlwaysSpeech` labels everything speech (``--vad none``).
2. The :class:`Segmenter` turns frame labels into segments with the timing rules
   of :class:`VadConfig`, all in ms, and re-emits the audio *in order*, split at
   segment boundaries and labelled, with the boundary marks between::

       [Audio(0, .., speech=False), Start(4800), Audio(4800, .., speech=True), ...,
        End(20160, start=4800), Audio(20160, .., speech=False), ...]

   So a consumer can segment by reading the stream front to back: every sample
   between ``Start(s)`` and ``End(e)`` is in ``speech=True`` audio, nothing else is.

Timing rules (``F`` = frame length; all times are exact integer sample offsets):

- speech starts after ``min_speech_ms`` of consecutive speech frames; the segment
  begins ``pre_speech_pad_ms`` before the first of those frames (not before the
  previous segment's end, nor before 0);
- speech ends after ``min_silence_ms`` of consecutive non-speech frames; the
  segment ends ``hangover_ms`` after the start of that silence run (at most where the
  silence was confirmed); with ``backdate_max_ms`` > 0 the silence run starts at the first
  10 ms energy sub-frame more than ``backdate_db`` under the segment's loudest one when the
  classifier flags silence later (at most ``backdate_max_ms`` earlier than its first non-speech
  frame; never before audio already released as speech); else at the first non-speech frame.
  A backdated run is also confirmed between frames, at its exact sample, when the energy of the
  audio not yet classified stays that low up to there (and a hint comes at its sample the same way);
- at end of stream an open segment ends at ``min(silence run start + hangover, end)``,
  or at the end if its last frame was speech; an unconfirmed run is dropped.

With ``pause_hints=True`` the segmenter also says, once per silence run, when the segment's
audio up to its would-be end has all been released (``Pause(sample=that end)``): if the run
goes on to ``min_silence_ms``, the ``End`` comes at exactly that sample and no audio comes in
between, so a recogniser can decode the segment while the rest of the silence arrives
(``hangover_ms < min_silence_ms`` is needed; the default is 100 < 180 ms). If speech resumes
instead, no ``End`` follows and the segment goes on.

Decisions look ahead at most ``max(pre_speech_pad + min_speech, min_silence)``
ms, so the segmenter holds back at most that much audio (bounded memory); that
hold-back is the latency the VAD adds.

State is immutable (``SegmenterState``, replaced by each ``step``). The webrtc
``Vad`` object and silero's LSTM state tensors inside a classifier state are
per-stream opaque handles: use each state once (the one ``step`` returned).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

from .errors import ConfigError

__all__ = [
    "VadConfig",
    "FrameClassifier",
    "WebRtcClassifier",
    "SileroClassifier",
    "AlwaysSpeech",
    "Audio",
    "Start",
    "End",
    "Pause",
    "Output",
    "SegmenterState",
    "Segmenter",
    "make_segmenter",
    "DEFAULT_VAD_CONFIGS",
    "DEFAULT_WEBRTC_AGGRESSIVENESS",
    "DEFAULT_SILERO_THRESHOLD",
]

RATE = 16_000
ENERGY_SUBFRAME_MS = 10  # backdating's energy resolution


@dataclass(frozen=True, slots=True)
class VadConfig:
    """Segment timing, all in milliseconds (see module docstring).

    The class defaults are webrtc's tuned ones; :data:`DEFAULT_VAD_CONFIGS` holds each
    classifier's (chosen on real recordings with labelled pauses, ``bench/bench_vad_real.py``).
    """

    pre_speech_pad_ms: int = 100  # keep the onset consonant that the classifier misses
    hangover_ms: int = 100  # kept after the start of the ending pause: the word tail under the threshold
    min_speech_ms: int = 60  # 2 webrtc frames: ignore clicks
    # a pause this long, counted from where the energy fell (backdating), ends a segment: 150 ms
    # pauses inside a sentence stay inside it (bench/bench_finals.py --part breakdown)
    min_silence_ms: int = 180
    # 0: off. Else the min-silence run counts from where the energy fell (the first 10 ms sub-frame
    # more than ``backdate_db`` under the segment's loudest one) when the classifier flags silence
    # later, by at most this much (webrtc keeps calling speech for ~60-90 ms after a word)
    backdate_max_ms: int = 90
    backdate_db: int = 30

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or v < 0:
                raise ConfigError(f"VadConfig.{f.name} must be a non-negative integer (ms), got {v!r}")

    def samples(self, ms: int) -> int:
        return ms * RATE // 1000


# Per-classifier defaults (``make_segmenter`` uses them when no config is given).
DEFAULT_WEBRTC_AGGRESSIVENESS = 3
DEFAULT_SILERO_THRESHOLD = 0.7
DEFAULT_VAD_CONFIGS: dict[str, VadConfig] = {
    "webrtc": VadConfig(),
    # silero's own hysteresis does not eat into pauses; backdating not measured for it
    "silero": VadConfig(min_silence_ms=200, backdate_max_ms=0),
}


# --------------------------------------------------------------------------- classifiers


class FrameClassifier(Protocol):
    frame_samples: int

    def init_state(self) -> Any: ...

    def classify(self, frames: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """``frames``: (k, frame_samples) float32 -> (k,) bool speech labels, new state."""
        ...


@dataclass(frozen=True, slots=True)
class WebRtcState:
    vad: Any  # webrtcvad.Vad: C handle (adaptive noise estimate), one per stream


class WebRtcClassifier:
    """webrtcvad (webrtcvad-wheels) on 10, 20 or 30 ms frames."""

    def __init__(self, aggressiveness: int = 2, frame_ms: int = 30):
        if aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"webrtc aggressiveness must be 0, 1, 2 or 3, got {aggressiveness!r}")
        if frame_ms not in (10, 20, 30):
            raise ConfigError(f"webrtc frame_ms must be 10, 20 or 30, got {frame_ms!r}")
        import webrtcvad

        self._webrtcvad = webrtcvad
        self.aggressiveness = aggressiveness
        self.frame_ms = frame_ms
        self.frame_samples = RATE * frame_ms // 1000

    def init_state(self) -> WebRtcState:
        return WebRtcState(self._webrtcvad.Vad(self.aggressiveness))

    def classify(self, frames: np.ndarray, state: WebRtcState) -> tuple[np.ndarray, WebRtcState]:
        pcm = (np.clip(frames, -1.0, 1.0) * 32767.0).astype("<i2")
        out = np.fromiter((state.vad.is_speech(row.tobytes(), RATE) for row in pcm), dtype=bool, count=pcm.shape[0])
        return out, state


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class SileroState(NamedTuple):
    context: np.ndarray  # (64,) last samples of the previous frame
    lstm: np.ndarray  # (2, 128): LSTM h and c
    triggered: bool  # silero hysteresis: in speech until p < neg_threshold


def _silero_jit_path() -> str:
    # Locate the bundled model without importing silero_vad (its __init__ calls
    # torch.set_num_threads(1) for the whole process).
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("silero VAD needs the 'silero-vad' package (pip install silero-vad, without extras)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "silero_vad.jit")
    if not os.path.exists(path):
        raise ConfigError(f"silero-vad model not found at {path}")
    return path


class SileroClassifier:
    """silero-vad's bundled model: 512-sample frames (32 ms) at 16 kHz, explicit per-stream state.

    The model is loaded once per classifier and shared by every stream; each
    stream's LSTM state and 64-sample context live in its :class:`SileroState`.
    """

    frame_samples = 512
    context_samples = 64

    def __init__(self, threshold: float = 0.5, neg_threshold: float | None = None):
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"silero threshold must be in (0, 1), got {threshold!r}")
        import torch

        self._torch = torch
        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01) if neg_threshold is None else neg_threshold
        try:
            with warnings.catch_warnings():
                # torch 2.13 deprecates TorchScript loading; silero-vad ships TorchScript.
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*", category=DeprecationWarning)
                jit = torch.jit.load(_silero_jit_path(), map_location="cpu")
        except RuntimeError as exc:
            raise ConfigError(f"cannot load silero-vad model: {exc}") from exc
        self._model = jit._model.eval()  # forward(x (B, 64+512), state (2, B, 128)) -> (prob (B, 1), state)
        params = dict(self._model.decoder.named_parameters())
        w_ih, w_hh = params["rnn.weight_ih"], params["rnn.weight_hh"]  # (512, 128) each, gates i f g o
        b = params["rnn.bias_ih"] + params["rnn.bias_hh"]  # (512,)
        w_out, b_out = params["decoder.2.weight"][0, :, 0], params["decoder.2.bias"][0]  # 1x1 conv: (128,), ()
        basis = self._model.stft.forward_basis_buffer[:, 0, :].detach().numpy().astype(np.float32)  # (258, 256)
        convs = []
        for i, stride in enumerate((1, 2, 2, 1)):
            conv = getattr(self._model.encoder, str(i)).reparam_conv
            w = conv.weight.detach().numpy().astype(np.float32)  # (C_out, C_in, 3)
            convs.append((w.reshape(w.shape[0], -1), conv.bias.detach().numpy().astype(np.float32), stride))
        self._enc = (basis, convs)
        self._lstm = tuple(t.detach().numpy().astype(np.float32) for t in (w_ih, w_hh, b, w_out))
        b_out = b_out.detach()
        self._lstm = (*self._lstm, float(b_out))
        self.frame_ms = 32

    def init_state(self) -> SileroState:
        return SileroState(np.zeros(self.context_samples, np.float32), np.zeros((2, 128), np.float32), False)

    def probabilities(self, frames: np.ndarray, state: SileroState) -> tuple[np.ndarray, SileroState]:
        """Speech probability of each frame; equals silero's own frame-by-frame ``model(x, sr)``.

        The convolutional encoder sees each frame (with its 64-sample context) on its
        own, so it runs once over all k frames as a torch batch. The LSTM cell and
        the 1x1 output conv are tiny (128 units), so they step frame by frame in
        numpy, which avoids per-frame torch dispatch (tested equal to the model). All
        products use ``np.einsum`` (single-threaded, no BLAS), see :meth:`_encode`.
        """
        k = frames.shape[0]
        if k == 0:
            return np.zeros(0, np.float32), state
        audio = np.concatenate([state.context, frames.reshape(-1)])
        idx = np.arange(k)[:, None] * self.frame_samples + np.arange(self.context_samples + self.frame_samples)
        feats = self._encode(audio[idx])  # (k, 128)
        w_ih, w_hh, b, w_out, b_out = self._lstm
        pre = np.einsum("ki,gi->kg", feats, w_ih) + b  # (k, 512): input part of all four gates, i f g o
        h, c = state.lstm[0], state.lstm[1]  # (128,) each
        hs = np.empty((k, 128), np.float32)
        for t in range(k):
            g = pre[t] + np.einsum("gi,i->g", w_hh, h)
            i_g, f_g, o_g = _sigmoid(g[0:128]), _sigmoid(g[128:256]), _sigmoid(g[384:512])
            c = f_g * c + i_g * np.tanh(g[256:384])
            h = o_g * np.tanh(c)
            hs[t] = h
        probs = _sigmoid(np.einsum("ki,i->k", np.maximum(hs, 0.0), w_out) + b_out).astype(
            np.float32
        )  # ReLU, 1x1 conv, sigmoid
        context = frames[-1, -self.context_samples :].copy()
        return probs, state._replace(context=context, lstm=np.stack([h, c]).astype(np.float32))

    def _encode(self, x: np.ndarray) -> np.ndarray:
        """silero's STFT + 4-conv encoder in numpy: (k, 576) -> (k, 128).

        Same arithmetic as the TorchScript module (reflect pad 64, STFT as a strided
        conv with the model's own basis, magnitude, then conv(k=3, pad=1) + ReLU with
        strides 1, 2, 2, 1). numpy keeps this tiny model single-threaded: torch's
        intra-op threads (and OpenBLAS threads) made it 5-20x slower on a loaded
        2-core machine.
        """
        basis, convs = self._enc
        k = x.shape[0]
        x = np.concatenate([x, x[:, -2:-66:-1]], axis=1)  # reflect pad right by 64: (k, 640)
        hop, win = 128, 256
        t = (x.shape[1] - win) // hop + 1
        idx = np.arange(t)[:, None] * hop + np.arange(win)
        # einsum (no BLAS): OpenBLAS would spread these small products over threads,
        # which costs more than it gains next to other work on a small machine.
        spec = np.einsum("ktw,fw->ktf", x[:, idx], basis)  # (k, t, 258)
        half = basis.shape[0] // 2
        h = np.sqrt(spec[..., :half] ** 2 + spec[..., half:] ** 2).transpose(0, 2, 1)  # (k, 129, t)
        for w, b, stride in convs:  # w: (C_out, C_in * 3)
            hp = np.pad(h, ((0, 0), (0, 0), (1, 1)))
            t_out = (hp.shape[2] - 3) // stride + 1
            cols = np.stack(
                [hp[:, :, i * stride : i * stride + 3] for i in range(t_out)], axis=1
            )  # (k, t_out, C_in, 3)
            h = np.maximum(np.einsum("kti,oi->kto", cols.reshape(k, t_out, -1), w) + b, 0.0).transpose(
                0, 2, 1
            )  # (k, C_out, t_out)
        return np.ascontiguousarray(h[:, :, -1], dtype=np.float32)

    def reference_probabilities(self, frames: np.ndarray, state: SileroState) -> tuple[np.ndarray, SileroState]:
        """Frame by frame through the model's own forward (slow; the parity reference)."""
        torch = self._torch
        probs = np.empty(frames.shape[0], np.float32)
        context, lstm = state.context, torch.from_numpy(state.lstm)[:, None, :].clone()  # (2, 1, 128)
        with torch.inference_mode():
            for i, frame in enumerate(frames):
                x = torch.from_numpy(np.concatenate([context, frame])[None, :])  # (1, 576)
                p, lstm = self._model(x, lstm)
                probs[i] = float(p[0, 0])
                context = frame[-self.context_samples :].copy()
        return probs, state._replace(context=context, lstm=lstm[:, 0, :].numpy().copy())

    def classify(self, frames: np.ndarray, state: SileroState) -> tuple[np.ndarray, SileroState]:
        probs, state = self.probabilities(frames, state)
        out = np.empty(frames.shape[0], bool)
        trig = state.triggered
        for i, p in enumerate(probs):
            if p >= self.threshold:
                trig = True
            elif p < self.neg_threshold:
                trig = False
            out[i] = trig
        return out, state._replace(triggered=trig)


class AlwaysSpeech:
    """Every frame is speech: the whole input is one segment (``--vad none``)."""

    frame_samples = 160
    frame_ms = 10

    def init_state(self) -> None:
        return None

    def classify(self, frames: np.ndarray, state: None) -> tuple[np.ndarray, None]:
        return np.ones(frames.shape[0], bool), None


# --------------------------------------------------------------------------- segmenter


class Audio(NamedTuple):
    sample: int
    samples: np.ndarray
    speech: bool


class Start(NamedTuple):
    sample: int


class End(NamedTuple):
    sample: int
    start_sample: int


class Pause(NamedTuple):
    """A silence run has begun and the segment's audio up to ``sample`` is out: if the run is
    confirmed, ``End(sample, start_sample)`` follows with no audio between (``pause_hints``)."""

    sample: int
    start_sample: int


Output = Audio | Start | End | Pause

_EMPTY = np.zeros(0, np.float32)


@dataclass(frozen=True, slots=True)
class SegmenterState:
    clf: Any  # classifier state
    pending: np.ndarray  # input not yet a whole frame
    pos: int  # samples classified so far (frame aligned)
    held: np.ndarray  # audio from `released` to `released + len(held)`, not yet emitted
    released: int  # samples emitted so far
    in_speech: bool
    run_start: int | None  # SILENCE: start of the current speech run; SPEECH: start of the current silence run
    seg_start: int
    total: int  # samples received
    peak_db: float = -200.0  # backdating: the open segment's loudest frame (dB re full scale)
    low_since: int | None = None  # backdating: start of the current run of frames under peak - backdate_db
    run_end: int = 0  # SPEECH, in a silence run: where the segment ends if the run is confirmed (before f1)
    hinted: bool = False  # a Pause was emitted for the current silence run


class Segmenter:
    """Frame classifier + timing rules -> labelled audio and segment marks (pure)."""

    def __init__(
        self,
        classifier: FrameClassifier,
        config: VadConfig = VadConfig(),
        *,
        pause_hints: bool = False,
        energy_ms: int = ENERGY_SUBFRAME_MS,
    ):
        self.clf = classifier
        self.config = config
        self.pause_hints = pause_hints
        self.energy_ms = energy_ms
        self.F = classifier.frame_samples
        self.pad = config.samples(config.pre_speech_pad_ms)
        self.hang = config.samples(config.hangover_ms)
        self.min_speech = config.samples(config.min_speech_ms)
        self.min_silence = config.samples(config.min_silence_ms)
        self.backdate = config.samples(config.backdate_max_ms)
        # backdating's energy sub-frame where the frame divides into them (webrtc's 30 ms into 10 ms), else the
        # frame; one frame long, nothing is confirmed between frames (as before sub-frames, for comparisons)
        e = config.samples(energy_ms)
        self.E = e if e > 0 and self.F % e == 0 else self.F

    @property
    def lookahead_samples(self) -> int:
        """Most audio the segmenter holds back before deciding (its added latency)."""
        return max(self.pad + self.min_speech, self.min_silence) + 2 * self.F

    def init_state(self) -> SegmenterState:
        return SegmenterState(self.clf.init_state(), _EMPTY, 0, _EMPTY, 0, False, None, 0, 0)

    def with_pause_hints(self) -> Segmenter:
        """The same segmenter (classifier, config) that also emits :class:`Pause` outputs."""
        return Segmenter(self.clf, self.config, pause_hints=True, energy_ms=self.energy_ms)

    # -- helpers on the held buffer -------------------------------------------------

    @staticmethod
    def _release(st: dict[str, Any], upto: int, speech: bool, out: list[Output]) -> None:
        n = upto - st["released"]
        if n <= 0:
            return
        held = st["held"]
        out.append(Audio(st["released"], held[:n], speech))
        st["held"] = held[n:]
        st["released"] = upto

    def step(self, samples: np.ndarray, state: SegmenterState) -> tuple[list[Output], SegmenterState]:
        """Feed 16 kHz mono float32 samples; returns outputs in stream order and the new state."""
        x = np.asarray(samples, dtype=np.float32)
        pending = np.concatenate([state.pending, x]) if state.pending.size else x
        k = pending.shape[0] // self.F
        frames = pending[: k * self.F].reshape(k, self.F)
        labels, clf = self.clf.classify(frames, state.clf) if k else (np.zeros(0, bool), state.clf)
        db = self._levels(frames.reshape(-1)).reshape(k, self.F // self.E) if self.backdate else np.zeros((k, 1))
        st = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
        st["clf"] = clf
        st["pending"] = pending[k * self.F :].copy()
        st["held"] = np.concatenate([state.held, x]) if state.held.size else x
        st["total"] = state.total + x.shape[0]
        out: list[Output] = []
        for label, levels in zip(labels, db):
            self._frame(st, bool(label), out, levels)
        if self.backdate:
            self._quiet_tail(st, out)
        self._release_safe(st, out)
        return out, SegmenterState(**st)

    def _levels(self, x: np.ndarray) -> np.ndarray:
        """dB (re full scale) of each whole energy sub-frame of ``x``."""
        n = x.shape[0] // self.E
        sub = x[: n * self.E].astype(np.float64).reshape(n, self.E)
        return 10 * np.log10(np.mean(sub**2, axis=1) + 1e-20)

    def _quiet_tail(self, st: dict[str, Any], out: list[Output]) -> None:
        """Between frames: in a silence run whose energy has stayed low, the not yet classified audio
        (``pending``) can bring the hint and the end forward to their exact sample, if its energy
        sub-frames up to there are all low too (speech resuming would raise them)."""
        if not st["in_speech"] or st["run_start"] is None or st["low_since"] is None:
            return
        pos, floor = st["pos"], st["peak_db"] - self.config.backdate_db
        quiet = np.cumprod(self._levels(st["pending"]) <= floor, dtype=bool)  # low sub-frames from pos on
        quiet_to = pos + int(quiet.sum()) * self.E
        confirm = st["run_start"] + max(self.min_silence, 1)
        if confirm <= quiet_to:
            end = min(st["run_end"], confirm)
            self._release(st, end, True, out)
            out.append(End(end, st["seg_start"]))
            st.update(in_speech=False, run_start=None, hinted=False)
        elif self.pause_hints and st["released"] < st["run_end"] <= quiet_to:
            self._release(st, st["run_end"], True, out)  # _release_safe then hints

    def _frame(self, st: dict[str, Any], speech: bool, out: list[Output], levels: np.ndarray) -> None:
        f0 = st["pos"]
        f1 = f0 + self.F
        st["pos"] = f1
        if self.backdate:
            if not st["in_speech"]:  # out of a segment, each frame is the peak of its own
                st.update(low_since=None, peak_db=float(levels.max()))
            else:
                for i, db in enumerate(levels.tolist()):
                    if db > st["peak_db"] - self.config.backdate_db:
                        st.update(low_since=None, peak_db=max(st["peak_db"], db))
                    elif st["low_since"] is None:
                        st["low_since"] = f0 + i * self.E
        if not st["in_speech"]:
            if not speech:
                st["run_start"] = None
                return
            if st["run_start"] is None:
                st["run_start"] = f0
            if f1 - st["run_start"] >= max(self.min_speech, 1):
                start = max(st["run_start"] - self.pad, st["released"])
                self._release(st, start, False, out)
                out.append(Start(start))
                st.update(in_speech=True, seg_start=start, run_start=None)
        else:
            if speech:
                st.update(run_start=None, hinted=False)
                return
            if st["run_start"] is None:
                start = f0
                if st["low_since"] is not None:  # backdating: count from where the energy fell
                    start = max(st["low_since"], f0 - self.backdate)
                # the hangover counts from the run's start; audio already out as speech stays in the segment
                st.update(run_start=start, run_end=max(start + self.hang, st["released"]))
            if f1 - st["run_start"] >= max(self.min_silence, 1):
                end = min(st["run_end"], f1)
                self._release(st, end, True, out)
                out.append(End(end, st["seg_start"]))
                st.update(in_speech=False, run_start=None, hinted=False)

    def _release_safe(self, st: dict[str, Any], out: list[Output]) -> None:
        if st["in_speech"]:
            safe = st["pos"] if st["run_start"] is None else min(st["pos"], st["run_end"])
            self._release(st, safe, True, out)
            if (
                self.pause_hints
                and st["run_start"] is not None
                and not st["hinted"]
                and st["released"] >= st["run_end"]
            ):
                out.append(Pause(st["run_end"], st["seg_start"]))  # the End, if the run is confirmed
                st["hinted"] = True
        else:
            base = st["pos"] if st["run_start"] is None else st["run_start"]
            self._release(st, base - self.pad, False, out)

    def flush(self, state: SegmenterState) -> tuple[list[Output], SegmenterState]:
        """End of stream: close an open segment and release all held audio."""
        st = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
        out: list[Output] = []
        total = st["total"]
        if st["in_speech"]:
            end = total if st["run_start"] is None else min(st["run_end"], total)
            self._release(st, end, True, out)
            out.append(End(end, st["seg_start"]))
            st.update(in_speech=False, run_start=None, hinted=False)
        self._release(st, total, False, out)
        st.update(pending=_EMPTY, pos=total, run_start=None)
        return out, SegmenterState(**st)


def make_segmenter(
    kind: Literal["webrtc", "silero", "none"] = "webrtc",
    config: VadConfig | None = None,
    *,
    aggressiveness: int | None = None,
    frame_ms: int = 30,
    threshold: float | None = None,
) -> Segmenter:
    """The VAD behind ``--vad``: ``webrtc`` | ``silero`` | ``none``; None: that VAD's tuned default."""
    if kind == "webrtc":
        aggr = DEFAULT_WEBRTC_AGGRESSIVENESS if aggressiveness is None else aggressiveness
        return Segmenter(WebRtcClassifier(aggr, frame_ms), config or DEFAULT_VAD_CONFIGS["webrtc"])
    if kind == "silero":
        thr = DEFAULT_SILERO_THRESHOLD if threshold is None else threshold
        return Segmenter(SileroClassifier(thr), config or DEFAULT_VAD_CONFIGS["silero"])
    if kind == "none":
        return Segmenter(AlwaysSpeech(), VadConfig(0, 0, 0, 0, 0))
    raise ConfigError(f"unknown VAD {kind!r}; choose webrtc, silero or none")
