"""WavLM against transformers, component by component, every config variant and head
(fp32, atol 1e-4), including the gated relative position bias."""

import pytest
import torch

from tests.parity.waveform_parity import HEADS, VARIANTS, check_family

pytest.importorskip("transformers")
# tiny models: threads only add contention on the shared 2-core machine
torch.set_num_threads(1)

# transformers' WavLM reference passes a bool key-padding mask with a float bias to torch
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_wavlm_matches_transformers(variant, head, tmp_path):
    check_family("wavlm", variant, head, tmp_path)
