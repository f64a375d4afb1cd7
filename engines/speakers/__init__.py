"""Speaker embeddings, online clustering, enrollment and online diarization (pure, synchronous).

- ``embedding``: ``SpeakerEmbedder.embed(audio_16k) -> (D,)``; the bundled voice encoder and
  HF ``*ForXVector`` checkpoints (``load_embedder``).
- ``clustering``: incremental cosine clustering with immutable state.
- ``enrollment``: reference clips -> named voice prints, with errors that name the clip.
- ``online``: speech segments -> speaker turns with revisions, bounded latency.
- ``frames``: frame-level diarization through ``*ForAudioFrameClassification`` checkpoints.
"""

from engines.speakers.clustering import Assignment, ClusterConfig, ClusterState, assign, init_state, merge_close
from engines.speakers.embedding import SpeakerEmbedder, VoiceEncoderEmbedder, XVectorEmbedder, load_embedder
from engines.speakers.enrollment import EnrollmentError, enroll, parse_speaker_arg
from engines.speakers.online import DiarizerConfig, DiarizerState, TurnUpdate, latency_samples

__all__ = [
    "Assignment",
    "ClusterConfig",
    "ClusterState",
    "assign",
    "init_state",
    "merge_close",
    "SpeakerEmbedder",
    "VoiceEncoderEmbedder",
    "XVectorEmbedder",
    "load_embedder",
    "EnrollmentError",
    "enroll",
    "parse_speaker_arg",
    "DiarizerConfig",
    "DiarizerState",
    "TurnUpdate",
    "latency_samples",
]
