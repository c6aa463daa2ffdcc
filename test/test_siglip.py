"""LLaVA-OV's SigLIP tower on CUDA (``fast/siglip.py``): the fused fc1 + GELU and cuDNN-first
attention give the stock tower's tokens; the CPU keeps the stock ops."""
import numpy as np
import pytest
import torch

from rats_ros.models import load_backend
from rats_ros.models.base import FastConfig

CUDA = torch.cuda.is_available()


def _mlps(backend):
    return [m for m in backend.model.modules() if type(m).__name__ == "SiglipMLP"]


def test_every_tanh_gelu_mlp_is_swapped_and_the_cpu_keeps_the_stock_ops(model_cache):
    backend = load_backend("tiny-random")
    mlps = _mlps(backend)
    assert mlps and all("_mlp_forward" in m.forward.__qualname__ for m in mlps)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
    ours = backend.encode_clip(pixels)
    backend.use_fast(FastConfig(siglip=False))
    assert not any("forward" in vars(m) for m in mlps)  # the stock forward again
    torch.testing.assert_close(ours.tokens, backend.encode_clip(pixels).tokens, rtol=0, atol=0)
    backend.use_fast(FastConfig())
    assert all("_mlp_forward" in m.forward.__qualname__ for m in mlps)


@pytest.mark.skipif(not CUDA, reason="needs a GPU (bench device)")
def test_cuda_fc1_with_gelu_in_its_epilogue_is_the_stock_mlp(model_cache):
    """float32: cuBLASLt's GELU epilogue is the tanh GELU SigLIP uses."""
    backend = load_backend("tiny-random", device="cuda", dtype="float32")
    mlp = _mlps(backend)[0]
    hidden = torch.randn(2, 300, mlp.fc1.in_features, device="cuda")
    with torch.inference_mode():
        ours = mlp(hidden)
        backend.use_fast(FastConfig(siglip=False))
        stock = mlp(hidden)
    torch.testing.assert_close(ours, stock, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not CUDA, reason="needs a GPU (bench device)")
def test_cuda_bf16_tower_gives_the_stock_towers_tokens(model_cache):
    backend = load_backend("tiny-random", device="cuda", dtype="bfloat16")
    pixels = np.random.default_rng(1).integers(0, 256, (8, 96, 128, 3), dtype=np.uint8)
    ours = backend.encode_clip(pixels).tokens.float()
    backend.use_fast(FastConfig(siglip=False))
    stock = backend.encode_clip(pixels).tokens.float()
    assert float(torch.nn.functional.cosine_similarity(ours, stock, dim=-1).min()) > 0.99
