"""Qwen vision towers' segment attention in a few batched products, not one per segment.

Qwen2.5-VL's tower attends within windows of 8x8 patches (28 of its 32 layers) and within
frames (4 layers); Qwen3-VL's within frames. transformers hands the segment boundaries
(``cu_seqlens``) only to attention implementations whose name contains "flash" (varlen kernels);
every other implementation splits the sequence and runs one attention per segment: for 16
frames of 640x480, 240 windows in each of 28 layers, ~6,700 small kernels per clip (measured
at ~280 ms on an H200 against a ~20 ms FLOP floor; issue 13).

:func:`grouped_segment_attention` is registered under a name with "flash" in it, so the tower
hands it ``cu_seqlens``; it gathers segments of equal length into one batch and runs one SDPA
per distinct length (a frame grid has at most four: whole windows and the cut ones at the
right and bottom edges). Same arithmetic per segment as the per-segment loop; the grouping of
a boundary tensor is computed once and kept on it (the backend reuses its plan per clip shape).

:class:`PatchProjection`: both towers embed patches with a ``Conv3d`` whose kernel equals its
stride, which is one matrix product over flattened patches; cuDNN has no good algorithm for that
shape and can be far slower than the product (transformers issue #45750: ~62x, ~50,000x on
Blackwell in bf16; sglang-omni PR #539: 3.7 s a call on an H100 in bf16). transformers 5 offers
the same swap as an opt-in fusion (PR #45041); here it is done at load, on the same weights.

:func:`pad_mlp`: Qwen2.5-VL's tower has an MLP width of 3,420, not a multiple of 8: its matrices'
rows are not 16-byte aligned, and cuBLAS falls back from Hopper's kernels to an sm80 one (45.6 of
110.8 ms of a 7B clip's encode on an H200, bench/RESULTS.md). Zero rows and columns take it to
3,456: the activation of a zero pre-activation is zero, so the output is unchanged.

On CUDA with torch's ``varlen_attn`` (flash attention over packed segments), segments of every
length run in one kernel without gathers; the grouped SDPA is the path elsewhere (CPU, tests).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

ENABLE_VARLEN = True  # False: the grouped SDPA on CUDA too (bench_clip's ``ours_grouped``)
try:  # torch >= 2.9: flash attention over packed variable-length segments, CUDA only
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # older torch: the grouped SDPA path
    varlen_attn = None

GROUPED_ATTENTION = "rats_flash_grouped_segments"  # "flash": the tower passes cu_seqlens


class PatchProjection(torch.nn.Module):
    """A ``Conv3d`` with kernel == stride (no padding, dilation or groups) as ``F.linear``.

    Holds the convolution's own weight and bias under the same names (the state dict is
    unchanged); :attr:`conv` is the original module, for :func:`stock`.

    :param conv: the patch embedding's ``nn.Conv3d``.
    """

    def __init__(self, conv: torch.nn.Conv3d):
        super().__init__()
        self.weight = conv.weight  # (E, C, t, p, p)
        self.register_parameter("bias", conv.bias)
        self.__dict__["conv"] = conv  # not a submodule: its weights are ours already

    @staticmethod
    def applies(conv) -> bool:
        return (isinstance(conv, torch.nn.Conv3d) and conv.kernel_size == conv.stride
                and conv.padding == (0, 0, 0) and conv.dilation == (1, 1, 1) and conv.groups == 1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """:param patches: ``(n, C, t, p, p)``; :returns: ``(n, E, 1, 1, 1)`` as the conv."""
        n = patches.shape[0]
        weight = self.weight.reshape(self.weight.shape[0], -1)  # (E, C t p p)
        return F.linear(patches.reshape(n, -1), weight, self.bias).view(n, -1, 1, 1, 1)


class SegmentGroups:
    """Segments of equal length, as gather indices into the packed sequence.

    :param cu_seqlens: ``(segments + 1,)`` cumulative boundaries.
    """

    def __init__(self, cu_seqlens: torch.Tensor):
        bounds = cu_seqlens.tolist()  # one device sync per boundary tensor, then cached
        starts: dict[int, list[int]] = {}
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            if end > start:
                starts.setdefault(end - start, []).append(start)
        self.total = bounds[-1]
        self.longest = max((b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)),
                           default=0)
        self.cu_int32 = cu_seqlens.to(torch.int32)  # what the varlen kernel takes
        # one equal-length run in order: a view, no gather (frames, Qwen3-VL's every layer)
        self.uniform = len(starts) == 1 and bounds[0] == 0
        device = cu_seqlens.device
        self.groups = [(length, (torch.tensor(first, device=device)[:, None]
                                 + torch.arange(length, device=device)).flatten())
                       for length, first in starts.items()]  # (count * length,) indices


def segment_groups(cu_seqlens: torch.Tensor) -> SegmentGroups:
    """:returns: the grouping of ``cu_seqlens``, computed on first use and kept on the tensor."""
    groups = getattr(cu_seqlens, "_rats_segment_groups", None)
    if groups is None:
        groups = SegmentGroups(cu_seqlens)
        cu_seqlens._rats_segment_groups = groups
    return groups


def grouped_segment_attention(module, query, key, value, attention_mask, dropout=0.0,
                              scaling=None, cu_seq_lens_q=None, **kwargs):
    """Attention within segments, one batched SDPA per segment length.

    :param query: ``(1, H, n, d)`` (as key and value); :param cu_seq_lens_q: boundaries.
    :returns: ``(1, n, H, d)`` and None, as transformers' attention functions do.
    """
    _, heads, n, dim = query.shape
    plan = segment_groups(cu_seq_lens_q)
    if use_varlen(query) and (scaling is None or abs(scaling - dim ** -0.5) < 1e-12 * scaling):
        q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # (n, H, d)
        out = varlen_attn(q, k, v, plan.cu_int32, plan.cu_int32, plan.longest, plan.longest)
        return out[None], None  # (1, n, H, d)
    if plan.uniform:
        length = plan.groups[0][0]
        q, k, v = (t[0].transpose(0, 1).reshape(n // length, length, heads, dim).transpose(1, 2)
                   for t in (query, key, value))  # (count, H, length, d)
        out = F.scaled_dot_product_attention(q, k, v, scale=scaling)  # (count, H, length, d)
        return out.permute(0, 2, 1, 3).reshape(1, n, heads, dim), None
    out = query.new_empty(n, heads, dim)
    for length, index in plan.groups:
        q, k, v = (t[0][:, index].view(heads, -1, length, dim).transpose(0, 1)
                   for t in (query, key, value))  # (count, H, length, d)
        part = F.scaled_dot_product_attention(q, k, v, scale=scaling)
        out[index] = part.permute(0, 2, 1, 3).reshape(-1, heads, dim)  # (count * length, H, d)
    return out[None], None


def use_varlen(query: torch.Tensor) -> bool:
    """Whether the varlen flash kernel serves ``query``: CUDA, half precision, torch has it."""
    return (ENABLE_VARLEN and varlen_attn is not None and query.is_cuda
            and query.dtype in (torch.bfloat16, torch.float16))


def _widened(linear: torch.nn.Linear, rows: int = 0, cols: int = 0) -> None:
    """Append ``rows`` output rows / ``cols`` input columns of zeros to ``linear`` (in place);
    negative counts cut that many from the end (undo)."""
    weight = linear.weight.data
    if rows:
        weight = (F.pad(weight, (0, 0, 0, rows)) if rows > 0 else weight[:rows]).contiguous()
        if linear.bias is not None:
            bias = linear.bias.data
            linear.bias = torch.nn.Parameter(F.pad(bias, (0, rows)) if rows > 0 else
                                             bias[:rows].contiguous(),
                                             requires_grad=linear.bias.requires_grad)
    if cols:
        weight = (F.pad(weight, (0, cols)) if cols > 0 else weight[:, :cols]).contiguous()
    linear.weight = torch.nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    linear.out_features, linear.in_features = weight.shape


def pad_mlp(mlp, multiple: int = 64, force: bool = False) -> int:
    """Widen a vision MLP whose width is not a multiple of 8 (cuBLAS's alignment) to a multiple
    of ``multiple`` with zero weights: same outputs (``act(0) == 0`` for SiLU and GELU).

    :param mlp: Qwen2.5-VL's (gate, up, down) or Qwen3-VL's (fc1, fc2) vision MLP.
    :param force: pad even an aligned width (tests).
    :returns: the columns added (0: left alone).
    """
    ins, out = ((mlp.gate_proj, mlp.up_proj), mlp.down_proj) if hasattr(mlp, "gate_proj") else \
        ((mlp.linear_fc1,), mlp.linear_fc2)
    width = out.in_features
    extra = -width % multiple
    if not extra or (width % 8 == 0 and not force):
        return 0
    for linear in ins:
        _widened(linear, rows=extra)
    _widened(out, cols=extra)
    mlp._rats_padding = extra
    return extra


def unpad_mlp(mlp) -> None:
    """Undo :func:`pad_mlp`."""
    extra = getattr(mlp, "_rats_padding", 0)
    if not extra:
        return
    ins, out = ((mlp.gate_proj, mlp.up_proj), mlp.down_proj) if hasattr(mlp, "gate_proj") else \
        ((mlp.linear_fc1,), mlp.linear_fc2)
    for linear in ins:
        _widened(linear, rows=-extra)
    _widened(out, cols=-extra)
    mlp._rats_padding = 0


def install(model) -> bool:
    """Run ``model``'s vision tower through :func:`grouped_segment_attention` and its patch
    embedding through :class:`PatchProjection`.

    :returns: whether it was installed (a Qwen vision tower); the language model is unchanged.
    """
    if model.config.model_type not in ("qwen2_5_vl", "qwen3_vl"):
        return False
    AttentionInterface.register(GROUPED_ATTENTION, grouped_segment_attention)
    model.set_attn_implementation({"vision_config": GROUPED_ATTENTION})
    visual = model.model.visual
    if PatchProjection.applies(visual.patch_embed.proj):
        visual.patch_embed.proj = PatchProjection(visual.patch_embed.proj)
    for block in visual.blocks:
        pad_mlp(block.mlp)
    return True


def stock(model, attention: bool = True, projection: bool = True, mlp: bool = True) -> None:
    """Undo :func:`install` in part or whole: transformers' per-segment attention, the
    ``Conv3d`` patch embedding, the MLP width (benches and tests compare against them)."""
    if attention:
        model.set_attn_implementation({"vision_config": "sdpa"})
    visual = model.model.visual
    if projection and isinstance(visual.patch_embed.proj, PatchProjection):
        visual.patch_embed.proj = visual.patch_embed.proj.conv
    for block in visual.blocks if mlp else ():
        unpad_mlp(block.mlp)
