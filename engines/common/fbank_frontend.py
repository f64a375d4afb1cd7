"""W2V-BERT's frontend glue: the offline frontend (``SeamlessM4TFeatureExtractor`` features from
engines.frontend_fbank) and the check of a checkpoint's preprocessor_config.json.

In cached mode the fbank is part of the module's step (engines.wav2vec2_bert), so the frontend
passes samples through unchanged there.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from engines import frontend_fbank as fbank
from engines.errors import UnsupportedConfigError
from engines.types import Frontend

__all__ = ["FbankFrontend", "make_fbank_frontend"]


class FbankFrontend(Frontend):
    """Offline: ``SeamlessM4TFeatureExtractor`` features. Streaming: samples pass through unchanged;
    the module computes the fbank and its running normalisation in its cache."""

    def __call__(self, audio: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if lengths is None:
            waves = list(audio)
        else:
            waves = [a[: int(n)] for a, n in zip(audio, lengths)]
        features, mask = fbank.extract(waves)
        return features, mask


def make_fbank_frontend(config: object, preprocessor: dict[str, Any] | None) -> Frontend:
    """The registry's ``make_frontend`` for W2V-BERT: refuses a preprocessor that is not the 80-bin, stride-2,
    16 kHz SeamlessM4T one."""
    if preprocessor is not None:
        for key, want in (("num_mel_bins", 80), ("stride", 2), ("sampling_rate", 16000)):
            if key in preprocessor and preprocessor[key] != want:
                raise UnsupportedConfigError(f"preprocessor {key}", preprocessor[key], [want])
    return FbankFrontend()
