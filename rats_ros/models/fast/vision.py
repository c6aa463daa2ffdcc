"""Qwen vision towers at speed: segment attention without per-segment loops, and the faster
modules of :mod:`rats_ros.models.fast.vision_parts`, installed on the model at load.

Qwen2.5-VL's tower attends within windows of 8x8 patches (28 of its 32 layers) and within
frames (4 layers); Qwen3-VL's within frames. transformers hands the segment boundaries
(``cu_seqlens``) only to attention implementations whose name contains "flash" (varlen kernels);
every other implementation splits the sequence and runs one attention per segment: for 16
frames of 640x480, 240 windows in each of 28 layers, ~6,700 small kernels per clip (measured
at ~280 ms on an H200 against a ~20 ms FLOP floor).

:func:`segment_attention` runs every segment at once: on CUDA in half precision through torch's
``varlen_attn`` (flash attention over packed segments: one kernel, no gathers); elsewhere (CPU,
float32, older torch) it gathers segments of equal length into one batch and runs one SDPA per
distinct length (a frame grid has at most four: whole windows and the cut ones at the right and
bottom edges), the per-segment loop's arithmetic. The grouping of a boundary tensor is computed
once per tensor by the tower's :class:`SegmentPlans` (the backend reuses its plan per clip
shape, so the same tensors come back). It is also registered as an
attention function (:data:`GROUPED_ATTENTION`, a "flash" name), for the stock attention modules.
"""
from __future__ import annotations

import threading
import weakref

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from rats_ros.models.fast.vision_parts import (
    FusedRMSNorm,
    PatchProjection,
    SegmentAttention,
    pad_mlp,
    unpad_mlp,
)

try:  # torch >= 2.9: flash attention over packed variable-length segments, CUDA only
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # older torch: the grouped SDPA path
    varlen_attn = None

GROUPED_ATTENTION = "rats_flash_grouped_segments"  # "flash": the tower passes cu_seqlens
PARTS = ("attention_module", "attention_function", "projection", "mlp", "norm")


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
        # what the varlen kernel takes; a copy, so the grouping never keeps its key tensor alive
        self.cu_int32 = cu_seqlens.to(torch.int32, copy=True)
        # one equal-length run in order: a view, no gather (frames, Qwen3-VL's every layer)
        self.uniform = len(starts) == 1 and bounds[0] == 0
        device = cu_seqlens.device
        self.groups = [(length, (torch.tensor(first, device=device)[:, None]
                                 + torch.arange(length, device=device)).flatten())
                       for length, first in starts.items()]  # (count * length,) indices


class SegmentPlans:
    """The :class:`SegmentGroups` of each boundary tensor a tower is given, computed on first
    use and dropped with the tensor (one per tower, shared by its attention blocks)."""

    def __init__(self):
        self._groups: dict[int, SegmentGroups] = {}
        self._lock = threading.Lock()

    def of(self, cu_seqlens: torch.Tensor) -> SegmentGroups:
        key = id(cu_seqlens)
        with self._lock:
            groups = self._groups.get(key)
        if groups is None:
            groups = SegmentGroups(cu_seqlens)
            with self._lock:
                self._groups[key] = groups
            weakref.finalize(cu_seqlens, self._forget, key)
        return groups

    def _forget(self, key: int) -> None:
        with self._lock:
            self._groups.pop(key, None)


def use_varlen(query: torch.Tensor) -> bool:
    """Whether the varlen flash kernel can serve ``query``: CUDA, half precision, torch has
    it."""
    return (varlen_attn is not None and query.is_cuda
            and query.dtype in (torch.bfloat16, torch.float16))


def segment_attention(query, key, value, cu_seqlens: torch.Tensor,
                      scaling: float | None = None, groups: SegmentGroups | None = None,
                      varlen: bool = True) -> torch.Tensor:
    """Attention within each segment of a packed sequence.

    :param query: ``(n, H, d)`` (as key and value; views are fine); :param cu_seqlens:
        ``(segments + 1,)`` boundaries; :param groups: their grouping (computed if None);
        :param varlen: the varlen flash kernel where it can serve (else the grouped SDPA).
    :returns: ``(n, H, d)``.
    """
    n, heads, dim = query.shape
    plan = groups if groups is not None else SegmentGroups(cu_seqlens)
    exact_scale = scaling is None or abs(scaling - dim ** -0.5) < 1e-12 * scaling
    if varlen and use_varlen(query) and exact_scale:
        q, k, v = (t.contiguous() for t in (query, key, value))
        return varlen_attn(q, k, v, plan.cu_int32, plan.cu_int32, plan.longest, plan.longest)
    if plan.uniform:
        length = plan.groups[0][0]
        q, k, v = (t.reshape(n // length, length, heads, dim).transpose(1, 2)
                   for t in (query, key, value))  # (count, H, length, d)
        out = F.scaled_dot_product_attention(q, k, v, scale=scaling)  # (count, H, length, d)
        return out.permute(0, 2, 1, 3).reshape(n, heads, dim)
    out = query.new_empty(n, heads, dim)
    for length, index in plan.groups:
        q, k, v = (t[index].view(-1, length, heads, dim).transpose(1, 2)
                   for t in (query, key, value))  # (count, H, length, d)
        part = F.scaled_dot_product_attention(q, k, v, scale=scaling)
        out[index] = part.permute(0, 2, 1, 3).reshape(-1, heads, dim)  # (count * length, H, d)
    return out


def grouped_segment_attention(module, query, key, value, attention_mask, dropout=0.0,
                              scaling=None, cu_seq_lens_q=None, varlen: bool = True, **kwargs):
    """:func:`segment_attention` as a transformers attention function.

    :param query: ``(1, H, n, d)`` (as key and value); :param cu_seq_lens_q: boundaries.
    :returns: ``(1, n, H, d)`` and None, as transformers' attention functions do.
    """
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (n, H, d)
    return segment_attention(q, k, v, cu_seq_lens_q, scaling, varlen=varlen)[None], None


def install(model, varlen: bool = True, fused_rope: bool = True) -> bool:
    """Swap ``model``'s vision tower onto the fast parts (each once; the language model is
    unchanged), or set their switches again where they are installed.

    :param varlen: segment attention as varlen flash on CUDA (``FastConfig.varlen_vision``).
    :param fused_rope: RoPE as one Triton kernel on CUDA (``FastConfig.vision_rope``).
    :returns: whether it has a Qwen vision tower."""
    if model.config.model_type not in ("qwen2_5_vl", "qwen3_vl"):
        return False
    AttentionInterface.register(GROUPED_ATTENTION, grouped_segment_attention)
    model.set_attn_implementation({"vision_config": GROUPED_ATTENTION})
    visual = model.model.visual
    if PatchProjection.applies(visual.patch_embed.proj):
        visual.patch_embed.proj = PatchProjection(visual.patch_embed.proj)
    plans = next((b.attn.plans for b in visual.blocks if isinstance(b.attn, SegmentAttention)),
                 None) or SegmentPlans()
    for block in visual.blocks:
        pad_mlp(block.mlp)
        if not isinstance(block.attn, SegmentAttention):
            block.attn = SegmentAttention(block.attn, segment_attention, plans)
        block.attn.varlen, block.attn.fused_rope = varlen, fused_rope
        for name in ("norm1", "norm2"):  # Qwen2.5-VL's RMSNorms; Qwen3-VL's are LayerNorms
            norm = getattr(block, name)
            if hasattr(norm, "variance_epsilon") and not isinstance(norm, FusedRMSNorm):
                setattr(block, name, FusedRMSNorm(norm))
    return True


def stock(model, parts=PARTS) -> None:
    """Undo :func:`install` for ``parts`` of :data:`PARTS` (benches and tests compare)."""
    visual = model.model.visual
    if "attention_function" in parts:
        model.set_attn_implementation({"vision_config": "sdpa"})  # one SDPA per segment
    if "projection" in parts and isinstance(visual.patch_embed.proj, PatchProjection):
        visual.patch_embed.proj = visual.patch_embed.proj.conv
    for block in visual.blocks:
        if "mlp" in parts:
            unpad_mlp(block.mlp)
        if "attention_module" in parts and isinstance(block.attn, SegmentAttention):
            block.attn = block.attn.original
        for name in ("norm1", "norm2") if "norm" in parts else ():
            if isinstance(getattr(block, name), FusedRMSNorm):
                setattr(block, name, getattr(block, name).original)
