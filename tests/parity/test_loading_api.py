"""The public engine API: exported names, error tree, streaming-state immutability."""

import dataclasses

import pytest
import torch

import engines.api as api
import engines.errors as errors
from engines.api import load_model
from tests import hf_tiny

pytest.importorskip("transformers")
torch.set_num_threads(1)


def test_exported_names():
    assert set(api.__all__) == {
        "SAMPLE_RATE_HZ",
        "HEADS",
        "MODES",
        "ForwardOutput",
        "StepOutput",
        "StreamSpec",
        "StreamState",
        "Frontend",
        "EngineModule",
        "FamilySpec",
        "register_family",
        "get_family",
        "supported_model_types",
        "LoadedModel",
        "load_model",
    }
    for name in api.__all__ + errors.__all__:
        assert hasattr(api, name) or hasattr(errors, name), name
    assert api.supported_model_types() == ["wav2vec2", "wav2vec2-bert", "wav2vec2-conformer", "wavlm"]


def test_error_tree():
    import stream.errors as S
    from engines.speakers.enrollment import EnrollmentError

    E = errors
    for cls in (E.ModelNotFoundError, E.CheckpointError, E.UnsupportedConfigError, E.StreamUsageError):
        assert issubclass(cls, E.EngineError)
    assert issubclass(E.KeyMismatchError, E.CheckpointError)
    # one root; what a bad --model / checkpoint / language raises is a ConfigError, caught once at the edges
    for cls in (E.ModelNotFoundError, E.CheckpointError, E.UnsupportedConfigError, E.UnknownLanguageError):
        assert issubclass(cls, E.ConfigError)
    assert not issubclass(E.StreamUsageError, E.ConfigError)  # a programming error, not a user's
    assert S.SpeechStreamError is E.SpeechStreamError and S.ConfigError is E.ConfigError
    for cls in (E.EngineError, S.StreamError, S.GraphError, S.ProtocolError, EnrollmentError):
        assert issubclass(cls, E.SpeechStreamError)
    assert issubclass(S.ProtocolError, S.StreamError) and issubclass(EnrollmentError, E.ConfigError)
    err = S.ProtocolError("gap", "audio jumps", fatal=True)
    assert (err.code, err.fatal, str(err)) == ("gap", True, "audio jumps")


def test_state_is_immutable_and_not_on_the_module(tmp_path):
    model = load_model(hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path))
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    attrs = set(vars(model.module))
    state = model.init_state("cached", chunk_ms=200, left_context_ms=400)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.samples_in = 5
    out, new = model.step(0.1 * torch.randn(8000), state)
    assert state.samples_in == 0 and new.samples_in == 8000 and new is not state
    # the same old state gives the same output again: nothing leaked into the module
    out2, _ = model.step(0.1 * torch.randn(8000, generator=torch.Generator().manual_seed(0)), state)
    out3, _ = model.step(0.1 * torch.randn(8000, generator=torch.Generator().manual_seed(0)), state)
    torch.testing.assert_close(out2.frames, out3.frames, atol=0, rtol=0)
    assert set(vars(model.module)) == attrs
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_stream_spec_refuses_bad_values(tmp_path):
    model = load_model(hf_tiny.build_tiny("wav2vec2", "ctc", tmp_path))
    with pytest.raises(errors.UnsupportedConfigError, match="mode"):
        model.init_state("chunky")
    with pytest.raises(errors.StreamUsageError, match="chunk_ms"):
        model.init_state("window", chunk_ms=5)
    with pytest.raises(errors.StreamUsageError, match="normalize"):
        model.init_state("cached", normalize="window")
    state = model.init_state("window")
    with pytest.raises(errors.StreamUsageError, match="1-D"):
        model.step(torch.zeros(2, 100), state)
