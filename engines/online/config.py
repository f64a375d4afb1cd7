"""The recogniser's one configuration: streaming geometry, endpoint rules, decoding and batching.

Defined once, here in the engines (the lowest layer that uses it), and nested by every front end:
``stream.recognizer.Recognizer`` (the async node), the CLI's transcribe / eval / serve settings and the
facade. Each value is checked once, when the configuration is built (``ConfigError`` naming the value).
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.errors import ConfigError

__all__ = [
    "RecognizerConfig",
    "NO_LM",
    "FRAME_MS",
    "MAX_LOOKAHEAD_MS",
    "check_lookahead_ms",
    "check_language",
]

NO_LM = "none"  # --lm none: greedy finals, even for a checkpoint with its own language_model/
FRAME_MS = 20  # the encoders' frame stride (every family's output frame is 20 ms)
MAX_LOOKAHEAD_MS = 10_000  # window mode: the pipeline's right stride; cached mode recomputes (C + R) / C


def check_lookahead_ms(lookahead_ms: int) -> None:
    """``lookahead_ms`` (``--lookahead-ms``, TOML ``lookahead_ms``, ``RecognizerConfig.lookahead_ms``) at
    parse time: a whole number of 20 ms frames from 0 to MAX_LOOKAHEAD_MS; ConfigError otherwise."""
    v = lookahead_ms
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"--lookahead-ms must be a whole number of ms, not {v!r}")
    if v < 0:
        raise ConfigError(f"--lookahead-ms must be >= 0, not {v}")
    if v % FRAME_MS:
        raise ConfigError(f"--lookahead-ms must be a multiple of the {FRAME_MS} ms frame stride, not {v}")
    if v > MAX_LOOKAHEAD_MS:
        raise ConfigError(f"--lookahead-ms must be at most {MAX_LOOKAHEAD_MS}, not {v}")


def check_language(language: str | None) -> None:
    """``language`` (``--language``, TOML ``language``) at parse time: None or a code without spaces;
    ConfigError otherwise. Whether the model has it is checked when the model loads."""
    if language is not None and (not language.strip() or any(c.isspace() for c in language)):
        raise ConfigError(f"--language must be a language code such as 'eng', not {language!r}")


@dataclass(frozen=True)
class RecognizerConfig:
    """Streaming geometry, endpoint rules and (optional) LM. Units are in the names."""

    # "cached" / "window": engine streaming modes (partials per chunk); "offline": each VAD segment
    # (or max_utterance_ms of audio) is recognised whole when it ends (finals only, no partials)
    mode: str = "cached"
    # 640 ms chunks with 5.12 s of left context: the engines' reference streaming geometry.
    chunk_ms: int = 640
    left_context_ms: int = 5120
    lookahead_ms: int = 0
    # CTC endpoint rules; None disables rules 1/2. Rule 1 is sherpa-onnx's 2.4 s; rule 2 (trailing
    # blanks after speech) is 0.5 s, not sherpa's 1.2 s: it ends a segment at a pause the VAD calls
    # speech (noise), see bench/bench_finals.py --noise-snr-db
    rule1_min_trailing_silence_ms: int | None = 2400
    rule2_min_trailing_silence_ms: int | None = 500
    max_utterance_ms: int = 20_000
    vad_endpoints: bool = True  # close segments on SpeechEnded from a VAD node
    # at a VAD end, decode the frames the engine still buffers (a peek: its state is immutable) so
    # the final does not wait for the chunk to fill; those frames are not decoded twice
    peek_at_vad_end: bool = True
    emit_unchanged_partials: bool = False
    # n-gram LM beam search for finals (engines.lm); partials stay greedy unless partial_beam_width > 0.
    # lm_path "none" (NO_LM): no LM, not even the checkpoint's own language_model/ folder.
    lm_path: str | None = None
    unigrams_path: str | None = None
    # None: the checkpoint LM's attrs.json values, else 0.5 / 1.0; a given value always wins
    lm_alpha: float | None = None
    lm_beta: float | None = None
    beam_width: int = 32
    partial_beam_width: int = 0  # 0: greedy partials (cheapest; see bench/bench_decode.py)
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = 10.0
    beam_without_lm: bool = False  # beam search finals even without an LM file
    # use the checkpoint's own LM (language_model/ folder, HF Wav2Vec2ProcessorWithLM layout) when
    # lm_path is not given (its attrs.json alpha/beta apply unless lm_alpha/lm_beta are given)
    model_lm: bool = True
    # cross-stream batching (streaming modes): chunks per forward, and how long one may wait for others
    max_batch: int = 8
    max_wait_ms: int = 10
    # multilingual checkpoints (MMS adapters, nested vocab.json): the language of every stream that
    # does not name its own (``Recognizer.set_language``); None: the checkpoint as stored
    language: str | None = None

    def __post_init__(self) -> None:
        check_lookahead_ms(self.lookahead_ms)  # ConfigError at construction, not when the graph starts
