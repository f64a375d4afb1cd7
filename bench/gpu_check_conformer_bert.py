"""Device check for the Conformer and W2V-BERT engines: offline and cached streaming on CUDA equal
CPU (fp32). Run on a machine with a GPU: ``python bench/gpu_check_conformer_bert.py``."""

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.api import load_model  # noqa: E402
from tests import hf_tiny  # noqa: E402


def stream(model, audio, **kw):
    st = model.init_state("cached", **kw)
    outs = []
    for i in range(0, audio.numel(), 3000):
        o, st = model.step(audio[i : i + 3000], st)
        outs.append(o.frames.cpu())
    outs.append(model.flush(st).frames.cpu())
    return torch.cat(outs)


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    audio = torch.randn(16000 * 3) * 0.1
    tmp = Path(tempfile.mkdtemp())
    cases = [
        ("wav2vec2-bert", dict(position_embeddings_type="relative_key")),
        ("wav2vec2-bert", dict(position_embeddings_type="rotary", add_adapter=True)),
        ("wav2vec2-conformer", dict(position_embeddings_type="relative", feat_extract_norm="layer")),
        ("wav2vec2-conformer", dict(position_embeddings_type="rotary")),
    ]
    for i, (family, kw) in enumerate(cases):
        path = hf_tiny.build_tiny(family, "ctc", tmp / str(i), **kw)
        cpu, gpu = load_model(path), load_model(path, device="cuda", dtype=torch.float32)
        off = (cpu.forward(audio).frames - gpu.forward(audio).frames.cpu()).abs().max().item()
        skw = dict(chunk_ms=160, left_context_ms=640)
        cached = (stream(cpu, audio, **skw) - stream(gpu, audio, **skw)).abs().max().item()
        print(f"{family} {kw}: offline max|cpu-cuda| {off:.2e}, cached max|cpu-cuda| {cached:.2e}")


if __name__ == "__main__":
    main()
