"""The recogniser's one configuration: streaming geometry, endpoint rules, decoding and batching.

Defined once, here in the engines (the lowest layer that uses it), and nested by every front end:
``stream.recognizer.Recognizer`` (the async node), the CLI's transcribe / eval / serve settings and the
facade. Each value is checked once, when the configuration is built (``ConfigError`` naming the value).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from engines.errors import ConfigError

__all__ = [
    "RecognizerConfig",
    "NO_LM",
    "FRAME_MS",
    "MAX_LOOKAHEAD_MS",
    "MODE_NAMES",
    "MIN_CHUNK_MS",
    "MIN_MAX_UTTERANCE_MS",
    "DEFAULT_CHUNK_MS",
    "DEFAULT_LEFT_CONTEXT_MS",
    "check_max_speakers",
    "check_lookahead_ms",
    "check_language",
    "check_mode",
    "check_chunk_ms",
    "check_left_context_ms",
    "check_lm_weight",
    "check_beam_width",
    "check_hotwords",
    "check_max_utterance_ms",
    "check_compute_device",
    "resolve_compute_device",
    "parse_hub_id",
]

NO_LM = "none"  # --lm none: greedy finals, even for a checkpoint with its own language_model/
FRAME_MS = 20  # the encoders' frame stride (every family's output frame is 20 ms)
MAX_LOOKAHEAD_MS = 10_000  # window mode: the pipeline's right stride; cached mode recomputes (C + R) / C
MODE_NAMES = ("offline", "window", "cached")
MIN_CHUNK_MS = FRAME_MS  # one encoder frame
MIN_MAX_UTTERANCE_MS = 1000  # the front ends' floor (tests may build shorter segments directly)
# 640 ms chunks with 5.12 s of left context: the engines' reference streaming geometry (written once,
# here: RecognizerConfig's defaults and LoadedModel.init_state / stream use them)
DEFAULT_CHUNK_MS = 640
DEFAULT_LEFT_CONTEXT_MS = 5120


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


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_mode(mode: str) -> None:
    """``mode`` (``--mode``): one of MODE_NAMES."""
    if mode not in MODE_NAMES:
        raise ConfigError(f"mode must be one of {', '.join(MODE_NAMES)}, not {mode!r}")


def check_chunk_ms(chunk_ms: int) -> None:
    """``chunk_ms`` (``--chunk-ms``): a whole number of ms, at least one 20 ms frame."""
    if not _is_int(chunk_ms) or chunk_ms < MIN_CHUNK_MS:
        raise ConfigError(f"chunk_ms must be at least {MIN_CHUNK_MS} (one frame), not {chunk_ms!r}")


def check_left_context_ms(left_context_ms: int) -> None:
    """``left_context_ms`` (``--left-context-ms``): a whole number of ms, >= 0."""
    if not _is_int(left_context_ms) or left_context_ms < 0:
        raise ConfigError(f"left_context_ms must be >= 0, not {left_context_ms!r}")


def check_lm_weight(name: str, value: float | None) -> None:
    """``lm_alpha`` / ``lm_beta``: None (the LM's attrs.json) or a finite number."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ):
        raise ConfigError(f"{name} must be a finite number, not {value!r}")


def check_beam_width(beam_width: int) -> None:
    """``beam_width`` (``--beam-width``): >= 1."""
    if not _is_int(beam_width) or beam_width < 1:
        raise ConfigError(f"beam_width must be >= 1, not {beam_width!r}")


def check_hotwords(hotwords: tuple[str, ...]) -> None:
    """``hotwords`` (``--hotword``, repeatable): non-empty words or phrases."""
    if any(not isinstance(h, str) or not h.strip() for h in hotwords):
        raise ConfigError("--hotword must not be empty")


def check_max_utterance_ms(max_utterance_ms: int) -> None:
    """``max_utterance_ms`` (``--max-utterance-ms``) as the CLI, TOML, eval and serve accept it."""
    if not _is_int(max_utterance_ms) or max_utterance_ms < MIN_MAX_UTTERANCE_MS:
        raise ConfigError(f"max_utterance_ms must be at least {MIN_MAX_UTTERANCE_MS}, not {max_utterance_ms!r}")


def check_max_speakers(max_speakers: int | None, enrolled: int = 0) -> None:
    """``max_speakers`` (``--max-speakers``, TOML, serve, the diarizer, the clustering): None (no limit)
    or a whole number >= 1, and at least the ``enrolled`` speakers; ConfigError otherwise."""
    if max_speakers is None:
        return
    if not _is_int(max_speakers) or max_speakers < 1:
        raise ConfigError(f"--max-speakers must be >= 1, not {max_speakers!r}")
    if enrolled > max_speakers:
        raise ConfigError(f"{enrolled} enrolled speakers exceed --max-speakers {max_speakers}")


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_compute_device(compute_device: str) -> None:
    """``compute_device`` (``--compute-device``): ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (the spelling;
    whether that GPU exists is :func:`resolve_compute_device`'s check, which imports torch)."""
    if not isinstance(compute_device, str) or _DEVICE.fullmatch(compute_device) is None:
        raise ConfigError(f"--compute-device must be auto, cpu, cuda or cuda:N, not {compute_device!r}")


def resolve_compute_device(compute_device: str) -> str:
    """The torch device for ``compute_device``: ``auto`` is ``cuda`` when a GPU is usable, else ``cpu``;
    ``cuda`` / ``cuda:N`` without that GPU is a ConfigError. Imports torch (call it after parsing)."""
    check_compute_device(compute_device)
    if compute_device == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if compute_device == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise ConfigError(f"--compute-device {compute_device}: no CUDA GPU is available (use cpu or auto)")
    index = int(compute_device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(
            f"--compute-device {compute_device}: this machine has {count} CUDA GPU(s) (cuda:0..{count - 1})"
        )
    return compute_device


# huggingface_hub's own rule (``validate_repo_id``): "name" or "namespace/name", letters, digits, "-", "_",
# "." (not first or last), at most 96 characters each, no "--" or "..", not ending in ".git"; then an
# optional "@revision" (a branch, tag or commit; may hold "/": "refs/pr/1")
_HUB_PART = r"(?![-.])[\w\-.]{1,96}(?<![-.])"
_HUB_ID = re.compile(rf"(?:{_HUB_PART}/)?{_HUB_PART}(?:@[\w\-./]+)?")


def parse_hub_id(model: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` if ``model`` is spelled as a hub id, else None. The one rule for the CLI's
    parse-time check and the loader (engines.common.hf.resolve_model_dir); a local path wins over it."""
    if _HUB_ID.fullmatch(model) is None:
        return None
    repo_id, _, revision = model.partition("@")
    if "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
        return None
    return repo_id, revision or None


@dataclass(frozen=True)
class RecognizerConfig:
    """Streaming geometry, endpoint rules and (optional) LM. Units are in the names."""

    # "cached" / "window": engine streaming modes (partials per chunk); "offline": each VAD segment
    # (or max_utterance_ms of audio) is recognised whole when it ends (finals only, no partials)
    mode: str = "cached"
    chunk_ms: int = DEFAULT_CHUNK_MS
    left_context_ms: int = DEFAULT_LEFT_CONTEXT_MS
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
    # start that VAD-end work at the VAD's pause hint (stream.events.SpeechPausing), while the rest of
    # the min silence arrives, so the final is ready at the end; the same final either way (a pause
    # that does not end the segment costs one decode for nothing)
    decode_ahead: bool = True
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

    # where the model runs: "auto" (cuda when available, else cpu), "cpu", "cuda" or "cuda:N"
    compute_device: str = "auto"

    def __post_init__(self) -> None:
        # ConfigError at construction, not when the graph starts (max_utterance_ms: the front ends' floor
        # is check_max_utterance_ms; built directly, shorter segments are allowed)
        check_mode(self.mode)
        check_chunk_ms(self.chunk_ms)
        check_left_context_ms(self.left_context_ms)
        check_lookahead_ms(self.lookahead_ms)
        check_language(self.language)
        check_lm_weight("lm_alpha", self.lm_alpha)
        check_lm_weight("lm_beta", self.lm_beta)
        check_beam_width(self.beam_width)
        check_hotwords(self.hotwords)
        check_compute_device(self.compute_device)
