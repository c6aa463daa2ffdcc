"""The Qwen vision towers' batched segment attention equals transformers' per-segment loop."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rats_ros.models import load_backend
from rats_ros.models.fast import fused, vision_parts, vision_rope
from rats_ros.models.fast import vision as fast_vision

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def per_segment(query, key, value, cu_seqlens, scaling):
    """transformers' non-flash path, written out: one SDPA per segment. ``(1, n, H, d)``."""
    bounds = cu_seqlens.tolist()
    parts = [F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b],
                                            scale=scaling)
             for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return torch.cat(parts, dim=2).transpose(1, 2)


@pytest.mark.parametrize("bounds", [
    [0, 64, 128, 192, 256],  # equal frames: one batch, no gather
    [0, 64, 96, 160, 192, 200, 264, 264, 280],  # cut windows and an empty one
    [0, 7]])
def test_grouped_attention_equals_one_attention_per_segment(bounds):
    torch.manual_seed(0)
    n = bounds[-1]
    # the module lays q/k/v out as (1, H, n, d) views of (n, H, d): not contiguous
    query, key, value = (torch.randn(n, 4, 16).transpose(0, 1)[None] for _ in range(3))
    cu_seqlens = torch.tensor(bounds, dtype=torch.int32)
    out, weights = fast_vision.grouped_segment_attention(
        None, query, key, value, None, scaling=0.25, cu_seq_lens_q=cu_seqlens)
    assert weights is None and out.shape == (1, n, 4, 16)
    torch.testing.assert_close(out, per_segment(query, key, value, cu_seqlens, 0.25))
    plans = fast_vision.SegmentPlans()
    assert plans.of(cu_seqlens) is plans.of(cu_seqlens)  # grouped once per boundary tensor
    del cu_seqlens
    assert not plans._groups  # dropped with the tensor


@pytest.mark.parametrize("name", ["tiny-random-qwen2_5_vl", "tiny-random-qwen3_vl"])
def test_the_tower_gives_the_stock_towers_tokens(model_cache, name):
    """Frames large enough for cut windows at the right and bottom edges (Qwen2.5-VL's tiny
    windows are 4x4 patches); DeepStack features (Qwen3-VL) too."""
    backend = load_backend(name)
    config = backend.model.config.vision_config
    assert config._attn_implementation == fast_vision.GROUPED_ATTENTION  # installed at load
    backend.max_pixels = 400 * 600 * (4 if name == "tiny-random-qwen3_vl" else 1)  # Qwen3: clip's
    frames = np.random.default_rng(3).integers(0, 256, (4, 400, 600, 3), dtype=np.uint8)
    fast = backend.encode_clip(frames)
    assert len(backend._plans) == 1
    again = backend.encode_clip(frames)  # the cached plan: no second one
    assert len(backend._plans) == 1
    torch.testing.assert_close(again.tokens, fast.tokens)
    visual = backend.model.model.visual
    assert isinstance(visual.patch_embed.proj, vision_parts.PatchProjection)
    assert all(isinstance(block.attn, vision_parts.SegmentAttention) for block in visual.blocks)
    keys = set(backend.model.state_dict())
    fast_vision.stock(backend.model)  # transformers' attention loop, Conv3d, RMSNorm
    assert set(backend.model.state_dict()) == keys  # the swapped modules kept every name
    try:
        stock = backend.encode_clip(frames)
    finally:
        fast_vision.install(backend.model)
    assert fast.tokens.shape == stock.tokens.shape and fast.count > 400
    torch.testing.assert_close(fast.tokens, stock.tokens, rtol=1e-5, atol=1e-6)
    assert isinstance(visual.blocks[0].attn, vision_parts.SegmentAttention)  # installed again
    assert (fast.deepstack is None) == (name == "tiny-random-qwen2_5_vl")
    if fast.deepstack is not None:
        torch.testing.assert_close(fast.deepstack, stock.deepstack, rtol=1e-5, atol=1e-6)


def test_other_families_are_left_alone(model_cache):
    backend = load_backend("tiny-random")
    assert not fast_vision.install(backend.model)
    assert backend.model.config.vision_config._attn_implementation != \
        fast_vision.GROUPED_ATTENTION


@pytest.mark.parametrize("name", ["tiny-random-qwen2_5_vl", "tiny-random-qwen3_vl"])
def test_the_patch_projection_is_the_convolution(model_cache, name):
    """One matrix product over flattened patches, on the Conv3d's own weights and names."""
    proj = load_backend(name).model.model.visual.patch_embed.proj
    assert isinstance(proj, vision_parts.PatchProjection)
    conv = proj.conv
    assert proj.weight is conv.weight and set(proj.state_dict()) == set(conv.state_dict())
    patches = torch.randn(50, conv.in_channels, *conv.kernel_size)
    with torch.no_grad():
        torch.testing.assert_close(proj(patches), conv(patches), rtol=1e-5, atol=1e-5)
    assert not vision_parts.PatchProjection.applies(torch.nn.Conv3d(3, 8, 2, stride=1))


@pytest.mark.parametrize("name", ["tiny-random-qwen2_5_vl", "tiny-random-qwen3_vl"])
def test_a_padded_mlp_gives_the_same_outputs(model_cache, name):
    """Zero rows and columns: Qwen2.5-VL's gated SiLU MLP and Qwen3-VL's GELU MLP alike."""
    mlp = load_backend(name).model.model.visual.blocks[0].mlp
    hidden = torch.randn(40, mlp.hidden_size)
    with torch.no_grad():
        before = mlp(hidden)
        assert vision_parts.pad_mlp(mlp) == 0  # an aligned width is left alone
        width = mlp.intermediate_size
        added = vision_parts.pad_mlp(mlp, multiple=width * 3 // 4, force=True)
        down = mlp.down_proj if hasattr(mlp, "down_proj") else mlp.linear_fc2
        assert added > 0 and down.in_features == down.weight.shape[1] == width + added
        torch.testing.assert_close(mlp(hidden), before, rtol=1e-6, atol=1e-6)
        vision_parts.unpad_mlp(mlp)
        assert down.weight.shape[1] == width
        torch.testing.assert_close(mlp(hidden), before, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen kernel needs CUDA")
@pytest.mark.parametrize("bounds", [[0, 64, 96, 160, 192, 200, 264, 264, 280], [0, 64, 128]])
def test_the_varlen_kernel_equals_the_grouped_path_on_cuda(bounds):
    torch.manual_seed(0)
    n = bounds[-1]
    query, key, value = (torch.randn(n, 4, 80, device="cuda", dtype=torch.bfloat16)
                         .transpose(0, 1)[None] for _ in range(3))
    cu_seqlens = torch.tensor(bounds, dtype=torch.int32, device="cuda")
    assert fast_vision.use_varlen(query)
    fused, _ = fast_vision.grouped_segment_attention(None, query, key, value, None,
                                                     scaling=80 ** -0.5, cu_seq_lens_q=cu_seqlens)
    grouped, _ = fast_vision.grouped_segment_attention(
        None, query, key, value, None, scaling=80 ** -0.5, cu_seq_lens_q=cu_seqlens, varlen=False)
    torch.testing.assert_close(fused, grouped, rtol=2e-2, atol=2e-2)


def test_rotary_of_q_and_k_together_is_transformers_rotary():
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    torch.manual_seed(0)
    qk = torch.randn(30, 2, 4, 16, dtype=torch.bfloat16)
    angles = torch.randn(30, 8)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    q, k = apply_rotary_pos_emb_vision(qk[:, 0], qk[:, 1], cos, sin)
    both = vision_parts.rotary_qk(qk, cos, sin)
    torch.testing.assert_close(both, torch.stack((q, k), dim=1), rtol=8e-3, atol=1e-2)
    exact = vision_parts.rotary_qk(qk.float(), cos, sin)  # float32: the same formula
    q, k = apply_rotary_pos_emb_vision(qk[:, 0].float(), qk[:, 1].float(), cos, sin)
    torch.testing.assert_close(exact, torch.stack((q, k), dim=1), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not fused.available(DEVICE), reason="Triton is not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_rope_kernel_is_the_torch_rope(dtype):
    """The Triton RoPE (CPU: interpreted; CUDA: compiled) on a strided q/k/v of 3 heads of 80
    dims (Qwen2.5-VL's head size: masked, not a power of two) against :func:`rotary_qk`."""
    torch.manual_seed(0)
    qkv = torch.randn(12, 3 * 3 * 80 + 16, dtype=dtype)[:, :720].view(12, 3, 3, 80)  # row gap
    angles = torch.randn(12, 40)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    q, k, v = vision_rope.rope_qkv(qkv.to(DEVICE), cos.to(DEVICE), sin.to(DEVICE))
    both = vision_parts.rotary_qk(qkv[:, :2], cos, sin)
    tol = {} if dtype == torch.float32 else {"rtol": 8e-3, "atol": 1e-2}
    torch.testing.assert_close(q.cpu(), both[:, 0], **tol)
    torch.testing.assert_close(k.cpu(), both[:, 1], **tol)
    assert torch.equal(v.cpu(), qkv[:, 2]) and q.is_contiguous() and v.is_contiguous()


def test_the_fused_rms_norm_is_transformers_rms_norm(model_cache):
    norm = load_backend("tiny-random-qwen2_5_vl").model.model.visual.blocks[0].norm1
    assert isinstance(norm, vision_parts.FusedRMSNorm)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        hidden = torch.randn(20, norm.weight.shape[0])
        torch.testing.assert_close(norm(hidden), norm.original(hidden), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen kernel needs CUDA")
@pytest.mark.parametrize("name", ["tiny-random-qwen2_5_vl", "tiny-random-qwen3_vl"])
def test_the_tower_on_cuda_in_bf16_is_the_stock_tower(model_cache, name):
    """What a GPU runs (varlen kernel, fused norm and RoPE, patch product) against transformers'
    own tower on the same weights, both in bf16: equal up to bf16 rounding."""
    backend = load_backend(name, device="cuda", dtype="bfloat16")
    frames = np.random.default_rng(5).integers(0, 256, (4, 400, 600, 3), dtype=np.uint8)
    fast = backend.encode_clip(frames).tokens.float()
    fast_vision.stock(backend.model)
    stock = backend.encode_clip(frames).tokens.float()
    cosine = F.cosine_similarity(fast, stock, dim=-1)
    assert fast.shape == stock.shape and float(cosine.min()) > 0.99
