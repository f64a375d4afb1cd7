"""One typed configuration object for ``speechstream transcribe``.

CLI options map one to one onto :class:`TranscribeConfig` fields (``--chunk-ms`` ->
``chunk_ms``). A TOML file (``--config FILE``) can set any field, in a ``[transcribe]`` table
or at the top level; options given on the command line win over the file::

    # speechstream.toml
    [transcribe]
    vad = "silero"
    chunk_ms = 320
    srt = "out/talk.srt"
    caption_max_chars_per_line = 37

This module is light on purpose (no numpy, no torch): the CLI imports it before parsing.
Validation raises :class:`~stream.errors.ConfigError` naming the offending value.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import tomllib

from engines.online.config import NO_LM, check_compute_device, check_language, check_lookahead_ms, parse_hub_id
from stream.errors import ConfigError

__all__ = [
    "TranscribeConfig",
    "check_lookahead_ms",
    "VadName",
    "ModeName",
    "VAD_NAMES",
    "NO_MODEL",
    "NO_LM",
    "MODE_NAMES",
    "default_model_dir",
    "load_toml",
]

VadName = Literal["webrtc", "silero", "none"]
ModeName = Literal["offline", "window", "cached"]
NO_MODEL = "none"  # --model none: VAD only
VAD_NAMES: tuple[str, ...] = get_args(VadName)
MODE_NAMES: tuple[str, ...] = get_args(ModeName)


def default_model_dir() -> Path | None:
    """The bundled default model (``engines/default_model/``) if it is installed, else None."""
    spec = importlib.util.find_spec("engines")  # locates the package without importing it (no torch)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "default_model"
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file: the same resolved path, or (both existing) the same inode."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and a.samefile(b)
    except (OSError, RuntimeError):  # a symlink loop, a vanished file: not provably the same
        return False


@dataclass(frozen=True, slots=True)
class TranscribeConfig:
    """Everything ``speechstream transcribe`` needs. Units are in the field names."""

    # input: exactly one of a file or the microphone
    input_path: Path | None = None
    mic: bool = False
    device: str | None = None  # capture device name (substring) or index; None: system default
    stream_id: str | None = None  # None: the file's stem, or "mic"

    # recognition
    model: str | None = None  # local HF-layout dir or hub id (local cache); None: bundled default; "none": VAD only
    mode: ModeName = "cached"
    # 640 ms chunks with 5.12 s of left context: the engines' reference streaming geometry.
    chunk_ms: int = 640
    left_context_ms: int = 5120
    lookahead_ms: int = 0
    # multilingual checkpoints (MMS: adapter.<lang>.safetensors files, nested vocab.json): the
    # language code to recognise; None: the checkpoint as stored (its tokenizer's target_lang)
    language: str | None = None
    compute_device: str = "auto"  # auto (cuda when available, else cpu), cpu, cuda or cuda:N

    # n-gram LM beam search for finals (partials stay greedy); None: greedy finals, or the
    # checkpoint's own language_model/ folder when it has one
    lm: str | None = None  # ARPA or KenLM binary; "none": not even the model's own language_model/
    unigrams: str | None = None  # word list, for a binary LM (an ARPA file carries its own)
    lm_alpha: float | None = None  # LM weight; None: the LM's attrs.json, else 0.5
    lm_beta: float | None = None  # word insertion bonus; None: the LM's attrs.json, else 1.0
    beam_width: int = 32
    hotwords: tuple[str, ...] = ()  # words or phrases to boost in finals (--hotword, repeatable)

    # voice activity detection; None: that VAD's tuned default (stream.vad.DEFAULT_VAD_CONFIGS)
    vad: VadName = "webrtc"
    vad_pre_speech_pad_ms: int | None = None  # audio kept before the detected onset
    vad_hangover_ms: int | None = None  # audio kept after the last speech frame
    vad_min_speech_ms: int | None = None  # shorter bursts are not speech
    vad_min_silence_ms: int | None = None  # a pause this long ends a segment (a final)
    vad_threshold: float | None = None  # silero speech probability threshold (0-1)
    vad_aggressiveness: int | None = None  # webrtc 0-3
    max_utterance_ms: int = 20_000  # longest segment: cut at its best pause between words

    # speaker diarization (online): None = on when an RTTM output or an enrolled speaker is asked for
    diarize: bool | None = None
    speakers: tuple[str, ...] = ()  # "NAME=clip.wav" enrollments (--speaker, repeatable)
    max_speakers: int | None = None  # None: no limit beyond the clustering's memory
    # speaker embeddings: None = the bundled voice encoder; else an HF *ForXVector checkpoint
    speaker_model: str | None = None

    # pacing
    realtime: bool = False  # pace a file like a live source (the microphone always is)
    progress: bool = True  # progress bar on stderr while a file runs faster than real time

    # outputs
    console: bool = True  # live captions on stdout (off automatically with --jsonl -)
    jsonl: str | None = None  # path, or "-" for stdout
    srt: Path | None = None
    vtt: Path | None = None
    rttm: Path | None = None
    fsync: bool = False  # fsync caption files after every final
    # Caption cue limits (SRT/WebVTT); see sinks.captions.CaptionLimits.
    caption_max_chars_per_line: int = 42
    caption_max_lines: int = 2
    caption_max_duration_ms: int = 7000

    # -- derived ------------------------------------------------------------------------------

    def vad_timing(self) -> dict[str, int]:
        """The VadConfig fields given (others keep the VAD's tuned default)."""
        names = ("pre_speech_pad_ms", "hangover_ms", "min_speech_ms", "min_silence_ms")
        return {n: getattr(self, "vad_" + n) for n in names if getattr(self, "vad_" + n) is not None}

    @property
    def resolved_stream_id(self) -> str:
        if self.stream_id:
            return self.stream_id
        if self.mic or self.input_path is None:
            return "mic"
        return self.input_path.stem or "input"

    @property
    def diarize_enabled(self) -> bool:
        if self.diarize is None:
            return self.rttm is not None or bool(self.speakers)
        return self.diarize

    def speaker_clips(self) -> dict[str, Path]:
        """``speakers`` as ``{name: clip}``; ConfigError for a malformed or repeated entry."""
        clips: dict[str, Path] = {}
        for item in self.speakers:
            name, sep, clip = str(item).partition("=")
            name, clip = name.strip(), clip.strip()
            if not sep or not name or not clip:
                raise ConfigError(f"--speaker expects NAME=clip.wav, got {item!r}")
            if name in clips:
                raise ConfigError(f"--speaker {name!r} is given twice")
            clips[name] = Path(clip)
        return clips

    @property
    def console_enabled(self) -> bool:
        return self.console and self.jsonl != "-"

    def resolved_model(self) -> str | None:
        """The model to load: ``model`` if given, else the bundled default, else None (VAD only).

        ``model = "none"`` asks for no recognition at all (VAD events only).
        """
        if self.model == NO_MODEL:
            return None
        if self.model:
            return self.model
        found = default_model_dir()
        return str(found) if found else None

    # -- validation ---------------------------------------------------------------------------

    def check_vad(self) -> TranscribeConfig:
        """The VAD and endpointing checks (transcribe, eval and serve share them); raises ConfigError."""
        if self.vad not in VAD_NAMES:
            raise ConfigError(f"vad must be one of {', '.join(VAD_NAMES)}, not {self.vad!r}")
        for name in ("vad_pre_speech_pad_ms", "vad_hangover_ms", "vad_min_speech_ms", "vad_min_silence_ms"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 10_000:
                raise ConfigError(f"{name} must be between 0 and 10000 ms, not {v}")
        if self.vad_threshold is not None and not 0.0 < self.vad_threshold < 1.0:
            raise ConfigError(f"vad_threshold must be between 0 and 1 (exclusive), not {self.vad_threshold}")
        if self.vad_threshold is not None and self.vad != "silero":
            raise ConfigError(f"vad_threshold is silero's; it does nothing with vad = {self.vad!r}")
        if self.vad_aggressiveness is not None and self.vad_aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"vad_aggressiveness must be 0, 1, 2 or 3, not {self.vad_aggressiveness}")
        if self.vad_aggressiveness is not None and self.vad != "webrtc":
            raise ConfigError(f"vad_aggressiveness is webrtc's; it does nothing with vad = {self.vad!r}")
        if self.max_utterance_ms < 1000:
            raise ConfigError(f"max_utterance_ms must be at least 1000, not {self.max_utterance_ms}")
        return self

    def validate(self) -> TranscribeConfig:
        """Cheap checks that need no heavy import; raises ConfigError. Returns self."""
        if self.mic and self.input_path is not None:
            raise ConfigError(f"give either FILE ({self.input_path}) or --mic, not both")
        if not self.mic and self.input_path is None:
            raise ConfigError("give an audio FILE to transcribe, or --mic to use the microphone")
        if self.device is not None and not self.mic:
            raise ConfigError(f"--device {self.device!r} needs --mic")
        if self.input_path is not None:
            if not self.input_path.exists():
                raise ConfigError(f"input file not found: {self.input_path}")
            if self.input_path.is_dir():
                raise ConfigError(f"input is a directory, not an audio file: {self.input_path}")
        self.check_vad()
        if self.mode not in MODE_NAMES:
            raise ConfigError(f"mode must be one of {', '.join(MODE_NAMES)}, not {self.mode!r}")
        if self.chunk_ms < 20:
            raise ConfigError(f"chunk_ms must be at least 20 (one frame), not {self.chunk_ms}")
        if self.left_context_ms < 0:
            raise ConfigError(f"left_context_ms must be >= 0, not {self.left_context_ms}")
        check_lookahead_ms(self.lookahead_ms)
        check_compute_device(self.compute_device)
        for name in ("caption_max_chars_per_line", "caption_max_lines", "caption_max_duration_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        for name in ("lm", "unigrams"):
            path = getattr(self, name)
            if path is not None and not (name == "lm" and path == NO_LM) and not Path(path).is_file():
                raise ConfigError(f"--{name.replace('_', '-')} file not found: {path}")
        if self.unigrams is not None and self.lm in (None, NO_LM):
            raise ConfigError("--unigrams needs --lm")
        for name in ("lm_alpha", "lm_beta"):
            if getattr(self, name) is not None and not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, not {getattr(self, name)}")
        check_language(self.language)
        if self.beam_width < 1:
            raise ConfigError(f"beam_width must be >= 1, not {self.beam_width}")
        if any(not h.strip() for h in self.hotwords):
            raise ConfigError("--hotword must not be empty")
        if (
            self.model
            and self.model != NO_MODEL
            and not _looks_like_hub_id(self.model)
            and not Path(self.model).exists()
        ):
            raise ConfigError(f"model path does not exist: {self.model}")
        for name in ("srt", "vtt", "rttm"):
            path = getattr(self, name)
            if path is not None and not Path(path).parent.is_dir():
                raise ConfigError(f"--{name} {path}: directory {Path(path).parent} does not exist")
        clips = self.speaker_clips()
        for name, clip in clips.items():
            if not clip.is_file():
                raise ConfigError(f"--speaker {name}={clip}: enrollment clip not found")
        if self.max_speakers is not None and self.max_speakers < 1:
            raise ConfigError(f"max_speakers must be >= 1, not {self.max_speakers}")
        if self.max_speakers is not None and len(clips) > self.max_speakers:
            raise ConfigError(f"{len(clips)} --speaker enrollments exceed --max-speakers {self.max_speakers}")
        sm = self.speaker_model
        if sm and sm != "voice-encoder" and not _looks_like_hub_id(sm) and not Path(sm).exists():
            raise ConfigError(f"--speaker-model path does not exist: {sm}")
        if (clips or self.max_speakers is not None or sm) and self.diarize is False:
            raise ConfigError("--speaker / --max-speakers / --speaker-model need diarization; drop --no-diarize")
        if self.jsonl not in (None, "-") and not Path(self.jsonl).parent.is_dir():
            raise ConfigError(f"--jsonl {self.jsonl}: directory {Path(self.jsonl).parent} does not exist")
        self._check_output_paths(clips)
        return self

    def outputs(self) -> dict[str, Path]:
        """The output files, by option name (``--jsonl -`` is standard output, not a file)."""
        named = {
            "--jsonl": None if self.jsonl in (None, "-") else Path(self.jsonl),
            "--srt": self.srt,
            "--vtt": self.vtt,
            "--rttm": self.rttm,
        }
        return {k: Path(v) for k, v in named.items() if v is not None}

    def refuse_output_at(self, path: Path, what: str) -> None:
        """ConfigError if an output file is ``path`` (a file this run reads, e.g. its ``--config``)."""
        for option, out in self.outputs().items():
            if _same_file(out, Path(path)):
                raise ConfigError(f"{option} {out} is {what} ({path}): refusing to overwrite what this run reads")

    def _check_output_paths(self, clips: dict[str, Path]) -> None:
        """No output may be a file this run reads, or another output (before anything is opened).

        Paths are compared after resolving symlinks and ``..``, and by inode for files that
        exist (a hard link is the same file). Character devices and FIFOs (``/dev/null``,
        ``/dev/stdout``) are not files we could destroy, and may be named more than once.
        """
        reads: dict[str, Path] = {}
        if self.input_path is not None:
            reads["the input FILE"] = self.input_path
        for name, clip in clips.items():
            reads[f"--speaker {name}="] = clip
        for name in ("lm", "unigrams"):
            value = getattr(self, name)
            if value is not None and value != NO_LM:
                reads[f"--{name}"] = Path(value)
        seen: list[tuple[str, Path]] = []
        for option, path in self.outputs().items():
            if path.is_dir():
                raise ConfigError(f"{option} {path}: is a directory, not a file")
            if path.exists() and not path.is_file():
                continue  # a device or a FIFO
            for what, other in reads.items():
                if _same_file(path, other):
                    raise ConfigError(f"{option} {path} is {what} ({other}): refusing to overwrite what this run reads")
            for prev_option, prev in seen:
                if _same_file(path, prev):
                    raise ConfigError(
                        f"{option} {path} and {prev_option} {prev} are the same file: give each output its own path"
                    )
            seen.append((option, path))

    # -- building -----------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, source: str = "config") -> TranscribeConfig:
        """Build from plain values (TOML, CLI); unknown keys and wrong types raise ConfigError."""
        names = set(cls.field_names())
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            kwargs[key] = _coerce(key, value, source)
        return cls(**kwargs)

    def merged(self, **overrides: Any) -> TranscribeConfig:
        return dataclasses.replace(self, **overrides)


_PATH_FIELDS = {"input_path", "srt", "vtt", "rttm"}
_INT_FIELDS = {
    "chunk_ms",
    "left_context_ms",
    "lookahead_ms",
    "caption_max_chars_per_line",
    "caption_max_lines",
    "caption_max_duration_ms",
    "max_speakers",
    "beam_width",
    "vad_pre_speech_pad_ms",
    "vad_hangover_ms",
    "vad_min_speech_ms",
    "vad_min_silence_ms",
    "vad_aggressiveness",
    "max_utterance_ms",
}
_FLOAT_FIELDS = {"lm_alpha", "lm_beta", "vad_threshold"}
_STR_LIST_FIELDS = {"speakers": '"NAME=clip.wav" strings', "hotwords": "strings"}  # field -> what the items are
_BOOL_FIELDS = {"mic", "realtime", "progress", "console", "fsync", "diarize"}


def _coerce(key: str, value: Any, source: str) -> Any:
    if value is None:
        return None
    if key in _PATH_FIELDS:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{source}: {key} must be a path, not {value!r}")
        return Path(value)
    if key in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, not {value!r}")
        return value
    if key in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, not {value!r}")
        return value
    if key in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, not {value!r}")
        return float(value)
    if key in _STR_LIST_FIELDS:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{source}: {key} must be a list of {_STR_LIST_FIELDS[key]}, not {value!r}")
        return tuple(items)
    if key == "device" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a string, not {value!r}")
    return value


def _looks_like_hub_id(model: str) -> bool:
    """Spelled as a hub id (engines' one rule, the loader's too) and not a local path."""
    return parse_hub_id(model) is not None and not Path(model).exists()


def load_toml(path: Path) -> dict[str, Any]:
    """Read settings from a TOML file (``[transcribe]`` table or top level)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    table = data.get("transcribe", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [transcribe] must be a table")
    return table
