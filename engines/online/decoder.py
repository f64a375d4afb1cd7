"""The recogniser's decoder, composed from the engine modules: tokenizer, endpoint rules, optional LM.

::

    decoder = build_decoder(model, RecognizerConfig(lm_path="lm.arpa"))   # an engines.ctc.StreamingCTCDecoder

Every error here is a ``ConfigError`` (a checkpoint file that cannot be read or does not fit is a
``CheckpointError``, an option the engines do not implement an ``UnsupportedConfigError``; both are
``ConfigError`` subclasses), raised when the recogniser is built, with the offending value or file.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from engines.ctc import EndpointConfig, StreamingCTCDecoder
from engines.errors import ConfigError, UnknownLanguageError
from engines.lm import BeamDecoder, LMConfig, find_model_lm
from engines.online.config import NO_LM, RecognizerConfig
from engines.tokenizer import CTCTokenizer

__all__ = ["build_decoder", "check_model_language"]


def build_decoder(model: Any, cfg: RecognizerConfig) -> StreamingCTCDecoder:
    """Tokenizer + decoder (+ LM) for ``model`` (a ``LoadedModel`` or one shaped like it);
    ConfigError for a model without a CTC head, a vocabulary that does not fit, a missing or corrupt LM."""
    if model.head != "ctc":
        raise ConfigError(f"the recogniser needs a CTC model; {model.model_dir} has a {model.head!r} head")
    tok = CTCTokenizer.from_dir(model.vocab_dir, target_lang=getattr(model, "language", None))
    endpoint = EndpointConfig(
        cfg.rule1_min_trailing_silence_ms, cfg.rule2_min_trailing_silence_ms, cfg.max_utterance_ms
    )
    n_logits = getattr(model.config, "vocab_size", None)
    if n_logits is not None:
        tok = tok.for_model(int(n_logits))  # names the files on a mismatch
    final_dec = partial_dec = None
    lm_path, model_lm = cfg.lm_path, cfg.model_lm
    if lm_path == NO_LM:  # "none": no LM at all, not even the checkpoint's own
        lm_path, model_lm = None, False
    own = find_model_lm(model.model_dir) if (model_lm and not lm_path) else None
    if lm_path or own or cfg.beam_without_lm or cfg.partial_beam_width > 0 or cfg.hotwords:
        lm_kwargs: dict[str, Any] = {"lm_path": lm_path, "unigrams_path": cfg.unigrams_path, **(own or {})}
        if cfg.lm_alpha is not None:  # else the checkpoint LM's values, else LMConfig's defaults
            lm_kwargs["alpha"] = cfg.lm_alpha
        if cfg.lm_beta is not None:
            lm_kwargs["beta"] = cfg.lm_beta
        lmcfg = LMConfig(
            beam_width=cfg.beam_width, hotwords=cfg.hotwords, hotword_weight=cfg.hotword_weight, **lm_kwargs
        )
        final_dec = BeamDecoder(tok, lmcfg)
        if cfg.partial_beam_width > 0:
            partial_dec = BeamDecoder(
                tok, dataclasses.replace(lmcfg, beam_width=cfg.partial_beam_width), lm=final_dec.lm
            )
    return StreamingCTCDecoder(
        tok,
        samples_per_frame=model.samples_per_frame,
        endpoint=endpoint,
        final_decoder=final_dec,
        partial_decoder=partial_dec,
        emit_unchanged_partials=cfg.emit_unchanged_partials,
    )


def check_model_language(model: Any, language: str) -> None:
    """UnknownLanguageError (a ConfigError), listing the available codes, for a language ``model`` lacks."""
    if language != getattr(model, "language", None) and language not in model.languages:
        raise UnknownLanguageError(language, model.languages, model.model_dir)
