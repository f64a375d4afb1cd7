"""One typed configuration object for ``speechstream transcribe``.

The recogniser's settings are the one :class:`~engines.online.config.RecognizerConfig`
(``TranscribeConfig.recognizer``), the VAD's the one :class:`VadSettings` (``TranscribeConfig.vad``);
eval and serve nest the same two. CLI options and TOML keys are flat and map onto them
(``--chunk-ms`` -> ``recognizer.chunk_ms``, ``--vad-threshold`` -> ``vad.threshold``, ``--lm`` ->
``recognizer.lm_path``; :func:`split_settings`). A TOML file (``--config FILE``) can set any
setting, in a ``[transcribe]`` table or at the top level; options given on the command line win::

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import tomllib

from engines.online.config import (
    NO_LM,
    RecognizerConfig,
    check_lookahead_ms,
    check_max_speakers,
    check_max_utterance_ms,
    parse_hub_id,
)
from stream.errors import ConfigError

__all__ = [
    "TranscribeConfig",
    "VadSettings",
    "RecognizerConfig",
    "VAD_KEYS",
    "TRANSCRIBE_RECOGNIZER_KEYS",
    "MAX_VAD_TIMING_MS",
    "split_settings",
    "nest_settings",
    "check_lookahead_ms",
    "check_max_speakers",
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


MAX_VAD_TIMING_MS = 10_000

# flat setting (CLI option / TOML key) -> VadSettings field
VAD_KEYS: dict[str, str] = {
    "vad": "name",
    "vad_pre_speech_pad_ms": "pre_speech_pad_ms",
    "vad_hangover_ms": "hangover_ms",
    "vad_min_speech_ms": "min_speech_ms",
    "vad_min_silence_ms": "min_silence_ms",
    "vad_backdate_max_ms": "backdate_max_ms",
    "vad_threshold": "threshold",
    "vad_aggressiveness": "aggressiveness",
}
_TIMING = ("pre_speech_pad_ms", "hangover_ms", "min_speech_ms", "min_silence_ms", "backdate_max_ms")


@dataclass(frozen=True, slots=True)
class VadSettings:
    """The voice activity detector and its timing, in ms (transcribe, eval and serve nest it).

    None: that VAD's tuned default (``stream.vad.DEFAULT_VAD_CONFIGS``, ``DEFAULT_SILERO_THRESHOLD``,
    ``DEFAULT_WEBRTC_AGGRESSIVENESS``). Checked when built (:meth:`validate`, ConfigError).
    """

    name: VadName = "webrtc"
    pre_speech_pad_ms: int | None = None  # audio kept before the detected onset
    hangover_ms: int | None = None  # audio kept after the start of the pause that ends a segment
    min_speech_ms: int | None = None  # shorter bursts are not speech
    min_silence_ms: int | None = None  # a pause this long ends a segment (a final)
    # the pause counts from where the energy fell, at most this much before the classifier's first silent frame (0: off)
    backdate_max_ms: int | None = None
    threshold: float | None = None  # silero speech probability threshold (0-1)
    aggressiveness: int | None = None  # webrtc 0-3

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> VadSettings:
        """The one VAD check (messages name the flat settings, as the user typed them); returns self."""
        if self.name not in VAD_NAMES:
            raise ConfigError(f"vad must be one of {', '.join(VAD_NAMES)}, not {self.name!r}")
        for name in _TIMING:
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_VAD_TIMING_MS):
                raise ConfigError(f"vad_{name} must be between 0 and {MAX_VAD_TIMING_MS} ms, not {v}")
        t, a = self.threshold, self.aggressiveness
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < t < 1.0):
            raise ConfigError(f"vad_threshold must be between 0 and 1 (exclusive), not {t}")
        if t is not None and self.name != "silero":
            raise ConfigError(f"vad_threshold is silero's; it does nothing with vad = {self.name!r}")
        if a is not None and (isinstance(a, bool) or a not in (0, 1, 2, 3)):
            raise ConfigError(f"vad_aggressiveness must be 0, 1, 2 or 3, not {a}")
        if a is not None and self.name != "webrtc":
            raise ConfigError(f"vad_aggressiveness is webrtc's; it does nothing with vad = {self.name!r}")
        return self

    def timing(self) -> dict[str, int]:
        """The ``stream.vad.VadConfig`` fields given (others keep the VAD's tuned default)."""
        return {n: getattr(self, n) for n in _TIMING if getattr(self, n) is not None}


def split_settings(
    values: Mapping[str, Any], recognizer_keys: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Flat settings (CLI options, TOML keys, keywords) -> (RecognizerConfig fields, VadSettings
    fields, the rest). ``recognizer_keys``: each front end's flat name -> RecognizerConfig field."""
    rec: dict[str, Any] = {}
    vad: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in values.items():
        if (key == "recognizer" and isinstance(value, RecognizerConfig)) or (
            key == "vad" and isinstance(value, VadSettings)
        ):
            rest[key] = value  # a nested config given whole: the base for the flat values
        elif key in recognizer_keys:
            rec[recognizer_keys[key]] = value
        elif key in VAD_KEYS:
            vad[VAD_KEYS[key]] = value
        else:
            rest[key] = value
    return rec, vad, rest


def nest_settings(
    values: Mapping[str, Any], recognizer_keys: Mapping[str, str]
) -> tuple[RecognizerConfig, VadSettings, dict[str, Any]]:
    """:func:`split_settings`, built: flat values replace those of a ``recognizer=`` / ``vad=`` given
    among ``values`` (else the defaults). ConfigError for a bad value."""
    rec, vad, rest = split_settings(values, recognizer_keys)
    base_rec = rest.pop("recognizer", None) or RecognizerConfig()
    base_vad = rest.pop("vad", None) or VadSettings()
    return dataclasses.replace(base_rec, **rec), dataclasses.replace(base_vad, **vad), rest


# TranscribeConfig's flat names (its CLI options and TOML keys) of RecognizerConfig fields
TRANSCRIBE_RECOGNIZER_KEYS: dict[str, str] = {
    "mode": "mode",
    "chunk_ms": "chunk_ms",
    "left_context_ms": "left_context_ms",
    "lookahead_ms": "lookahead_ms",
    "language": "language",
    "compute_device": "compute_device",
    "lm": "lm_path",
    "unigrams": "unigrams_path",
    "lm_alpha": "lm_alpha",
    "lm_beta": "lm_beta",
    "beam_width": "beam_width",
    "hotwords": "hotwords",
    "max_utterance_ms": "max_utterance_ms",
}


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
    """Everything ``speechstream transcribe`` needs. Units are in the field names.

    ``recognizer`` and ``vad`` are the nested configurations (checked when built); :meth:`from_flat` and
    :meth:`from_mapping` take the flat names (``chunk_ms``, ``vad``, ``vad_threshold``, ``lm``, ...)."""

    # input: exactly one of a file or the microphone
    input_path: Path | None = None
    mic: bool = False
    device: str | None = None  # capture device name (substring) or index; None: system default
    stream_id: str | None = None  # None: the file's stem, or "mic"

    # recognition: the recogniser's one configuration (CLI/TOML names: TRANSCRIBE_RECOGNIZER_KEYS)
    model: str | None = None  # local HF-layout dir or hub id (local cache); None: bundled default; "none": VAD only
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    # voice activity detection (CLI/TOML names: VAD_KEYS)
    vad: VadSettings = field(default_factory=VadSettings)

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
        # the recogniser's and the VAD's own values were checked when they were built
        rc = self.recognizer
        check_max_utterance_ms(rc.max_utterance_ms)  # the front ends' floor
        for name in ("caption_max_chars_per_line", "caption_max_lines", "caption_max_duration_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        for name, path in (("lm", rc.lm_path), ("unigrams", rc.unigrams_path)):
            if path is not None and not (name == "lm" and path == NO_LM) and not Path(path).is_file():
                raise ConfigError(f"--{name} file not found: {path}")
        if rc.unigrams_path is not None and rc.lm_path in (None, NO_LM):
            raise ConfigError("--unigrams needs --lm")
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
        check_max_speakers(self.max_speakers, enrolled=len(clips))
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
        for name, value in (("lm", self.recognizer.lm_path), ("unigrams", self.recognizer.unigrams_path)):
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
        """The flat settings (CLI options, TOML keys): own fields, then the nested configs' flat names."""
        own = tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("recognizer", "vad"))
        return own + tuple(TRANSCRIBE_RECOGNIZER_KEYS) + tuple(VAD_KEYS)

    @classmethod
    def from_flat(cls, **values: Any) -> TranscribeConfig:
        """Keyword construction with flat names (``chunk_ms=320, vad="silero", lm="lm.arpa"``); a
        ``recognizer=`` / ``vad=`` config given whole is the base the flat values replace fields of."""
        rec, vad, rest = nest_settings(values, TRANSCRIBE_RECOGNIZER_KEYS)
        return cls(recognizer=rec, vad=vad, **rest)

    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, source: str = "config") -> TranscribeConfig:
        """Build from plain flat values (TOML, CLI); unknown keys and wrong types raise ConfigError."""
        names = set(cls.field_names())
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s): {', '.join(unknown)}")
        return cls.from_flat(**{key: _coerce(key, value, source) for key, value in values.items()})

    def merged(self, **overrides: Any) -> TranscribeConfig:
        """A copy with flat or own settings replaced (``merged(chunk_ms=320, srt=Path("a.srt"))``)."""
        rec, vad, rest = split_settings(overrides, TRANSCRIBE_RECOGNIZER_KEYS)
        recognizer = dataclasses.replace(rest.pop("recognizer", self.recognizer), **rec)
        vad_settings = dataclasses.replace(rest.pop("vad", self.vad), **vad)
        return dataclasses.replace(self, recognizer=recognizer, vad=vad_settings, **rest)


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
    "vad_backdate_max_ms",
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
