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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

GROUPED_ATTENTION = "rats_flash_grouped_segments"  # "flash": the tower passes cu_seqlens


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


def install(model) -> bool:
    """Run ``model``'s vision tower through :func:`grouped_segment_attention`.

    :returns: whether it was installed (a Qwen vision tower); the language model is unchanged.
    """
    if model.config.model_type not in ("qwen2_5_vl", "qwen3_vl"):
        return False
    AttentionInterface.register(GROUPED_ATTENTION, grouped_segment_attention)
    model.set_attn_implementation({"vision_config": GROUPED_ATTENTION})
    return True
