"""One query token's attention over the static KV cache in two Triton kernels (split-K flash
decoding), for the decode step's layers whose attention is not read out.

Why: the torch step spends four kernels a layer on it (the mask copy and ``q K^T`` of
``baddbmm``, the softmax, ``P V``), and its ``P V`` product streamed V at ~1.2 TB/s on the H200
(bench/RESULTS.md). Here each program streams one slice of the keys of one KV head for all of its
query heads (one ``tl.dot``), keeping a running max and sum (online softmax, float32); a second
kernel merges the slices. The read-out layers keep the torch ops: their softmax rows are the
method's scores, rounded as the plain path rounds them.

Valid keys are positions ``0..pos`` (the prompt, then one per decoded token): the static mask of
the torch step holds exactly these, so the kernels read ``pos`` instead of the mask.
"""
from __future__ import annotations

import torch

from rats_ros.models.fast.fused import triton

if triton is not None:
    import triton.language as tl

SPLIT = 256  # keys per program (the grid is KV heads x capacity / SPLIT: static per graph)
BLOCK_C = 64  # keys per loop step


def _split_kernel(q, kv, pos, part_o, part_ml, scale, n_splits, n_kv, stride_pair, stride_row,
                  stride_head, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, D: tl.constexpr,
                  SPLIT_KEYS: tl.constexpr, BLOCK: tl.constexpr, IEEE: tl.constexpr):
    """Partial attention of KV head ``program_id(0)``'s query heads (head ``program_id(0) %
    n_kv`` of row ``program_id(0) // n_kv``) over that row's keys ``[split * SPLIT_KEYS, (split
    + 1) * SPLIT_KEYS)``: ``(GROUP_PAD, D)`` unnormalised output, running max and sum (float32).
    IEEE: float32 products (no TF32) for a float32 cache."""
    head, split = tl.program_id(0), tl.program_id(1)
    row = head // n_kv
    valid = tl.load(pos + row).to(tl.int32) + 1
    rows, dims = tl.arange(0, GROUP_PAD), tl.arange(0, D)
    qs = tl.load(q + (head * GROUP + rows[:, None]) * D + dims[None, :],
                 mask=rows[:, None] < GROUP, other=0.0)  # (G, D)
    m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    total = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, D], dtype=tl.float32)
    start = split * SPLIT_KEYS
    if start < valid:  # a slice past the last key leaves m = -inf (weight 0 in the merge)
        keys = kv + row * stride_row + (head % n_kv) * stride_head
        for c0 in range(0, SPLIT_KEYS, BLOCK):
            cols = start + c0 + tl.arange(0, BLOCK)
            ok = cols < valid
            offs = cols[:, None] * D + dims[None, :]
            kt = tl.load(keys + offs, mask=ok[:, None], other=0.0)  # (BLOCK, D)
            if IEEE:  # a float32 cache: no TF32 rounding
                s = tl.dot(qs, tl.trans(kt), input_precision="ieee") * scale  # (G, BLOCK)
            else:
                s = tl.dot(qs, tl.trans(kt)) * scale  # (G, BLOCK) float32
            s = tl.where(ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=1))
            alpha = tl.exp(m - m_new)
            p = tl.exp(s - m_new[:, None])
            total = total * alpha + tl.sum(p, axis=1)
            vt = tl.load(keys + stride_pair + offs, mask=ok[:, None], other=0.0)  # (BLOCK, D)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p, vt, input_precision="ieee")
            else:  # probabilities rounded to the cache dtype, as the torch step's
                acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
            m = m_new
    base = (head * n_splits + split) * GROUP_PAD + rows
    tl.store(part_o + base[:, None] * D + dims[None, :], acc)
    tl.store(part_ml + base * 2, m)
    tl.store(part_ml + base * 2 + 1, total)


def _merge_kernel(part_o, part_ml, out, n_splits, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,
                  D: tl.constexpr, SPLITS_PAD: tl.constexpr):
    """Query head ``program_id(0)``: the slices' partial outputs weighted by their maxima."""
    h = tl.program_id(0)
    head, row = h // GROUP, h % GROUP
    splits, dims = tl.arange(0, SPLITS_PAD), tl.arange(0, D)
    ok = splits < n_splits
    base = (head * n_splits + splits) * GROUP_PAD + row  # (S,)
    m = tl.load(part_ml + base * 2, mask=ok, other=float("-inf"))
    total = tl.load(part_ml + base * 2 + 1, mask=ok, other=0.0)
    top = tl.max(m, axis=0)
    weight = tl.where(m > float("-inf"), tl.exp(m - top), 0.0)  # (S,)
    acc = tl.load(part_o + base[:, None] * D + dims[None, :], mask=ok[:, None], other=0.0)
    o = tl.sum(acc * weight[:, None], axis=0) / tl.sum(total * weight, axis=0)
    tl.store(out + h * D + dims, o.to(out.dtype.element_ty))


if triton is not None:
    _split, _merge = triton.jit(_split_kernel), triton.jit(_merge_kernel)


def decode_attention(q: torch.Tensor, kv: torch.Tensor, pos: torch.Tensor, capacity: int,
                     scale: float) -> torch.Tensor:
    """Softmax attention of one token (per row of the batched decoder) over the keys
    ``0..pos`` of its row of one layer's cache.

    :param q: ``(B H, d)`` after RoPE (``(H, d)`` for one row).
    :param kv: the layer's cache (K, V), ``(2, Hkv, C, d)`` or ``(2, B, Hkv, C, d)``.
    :param pos: ``(B,)`` each row's position (its K/V already written).
    :param capacity: keys to cover (the graph's capacity bucket, ``<= C``).
    :returns: ``(B, H d)``.
    """
    if kv.dim() == 4:
        kv = kv.unsqueeze(1)  # (2, 1, Hkv, C, d)
    rows, kv_heads, d = kv.shape[1], kv.shape[2], q.shape[1]
    heads = q.shape[0] // rows
    assert kv.stride(3) == d and kv.stride(4) == 1, "the cache rows must be contiguous"
    group = heads // kv_heads
    group_pad = max(16, triton.next_power_of_2(group))  # tl.dot needs 16 rows
    n_splits = triton.cdiv(capacity, SPLIT)
    parts = rows * kv_heads * n_splits * group_pad
    part_o = torch.empty(parts, d, device=q.device, dtype=torch.float32)
    part_ml = torch.empty(parts, 2, device=q.device, dtype=torch.float32)
    _split[(rows * kv_heads, n_splits)](
        q, kv, pos, part_o, part_ml, scale, n_splits, kv_heads, kv.stride(0), kv.stride(1),
        kv.stride(2), GROUP=group, GROUP_PAD=group_pad, D=d, SPLIT_KEYS=SPLIT, BLOCK=BLOCK_C,
        IEEE=q.dtype == torch.float32)
    out = torch.empty(rows, heads * d, device=q.device, dtype=q.dtype)
    _merge[(rows * heads,)](part_o, part_ml, out, n_splits, GROUP=group, GROUP_PAD=group_pad,
                            D=d, SPLITS_PAD=triton.next_power_of_2(n_splits))
    return out
