"""The Qwen vision towers' RoPE in one Triton kernel: q and k rotated, v copied, all three
written contiguous for the segment attention.

Why: on the H200 the torch version (:func:`~rats_ros.models.fast.vision_parts.rotary_qk`) still
ran ~5 elementwise kernels and a concatenation per layer over strided slices of the packed
q/k/v (non-vectorised kernels), ~9 ms of Qwen3-VL-2B's 29 ms encode and ~19 ms of Qwen2.5-VL's 58
(bench/RESULTS.md). Here one program reads one token's q/k/v row once. The arithmetic is
transformers': float32 ``x cos + rotate_half(x) sin``, rounded once to the model dtype.
"""
from __future__ import annotations

import torch

from rats_ros.models.fast.fused import triton

if triton is not None:
    import triton.language as tl



def _rope_kernel(qkv, cos, sin, q_out, k_out, v_out, row_stride, HEADS: tl.constexpr,
                 D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    """Token ``program_id(0)``: ``qkv`` row ``(3, H, D)`` -> rotated q, k and v ``(H, D)``."""
    t = tl.program_id(0).to(tl.int64)
    heads, dims = tl.arange(0, BLOCK_H), tl.arange(0, BLOCK_D)
    ok = (heads[:, None] < HEADS) & (dims[None, :] < D)
    half = D // 2
    partner = tl.where(dims < half, dims + half, dims - half)  # rotate_half's source column
    sign = tl.where(dims < half, -1.0, 1.0)
    c = tl.load(cos + t * D + dims, mask=dims < D, other=0.0).to(tl.float32)[None, :]
    s = tl.load(sin + t * D + dims, mask=dims < D, other=0.0).to(tl.float32)[None, :]
    row = qkv + t * row_stride
    at = heads[:, None] * D + dims[None, :]
    swapped = heads[:, None] * D + partner[None, :]
    out = t * HEADS * D + at
    dt = q_out.dtype.element_ty
    for part in tl.static_range(2):  # q, then k
        x = tl.load(row + part * HEADS * D + at, mask=ok, other=0.0).to(tl.float32)
        turned = tl.load(row + part * HEADS * D + swapped, mask=ok, other=0.0).to(tl.float32)
        y = (x * c + turned * sign[None, :] * s).to(dt)
        if part == 0:
            tl.store(q_out + out, y, mask=ok)
        else:
            tl.store(k_out + out, y, mask=ok)
    tl.store(v_out + out, tl.load(row + 2 * HEADS * D + at, mask=ok), mask=ok)


if triton is not None:
    _rope = triton.jit(_rope_kernel)


def usable(x: torch.Tensor) -> bool:
    """Whether :func:`rope_qkv` can run for ``x``: compiled Triton on CUDA."""
    from rats_ros.models.fast import fused

    return x.device.type == "cuda" and fused.available(x.device)


def rope_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """:param qkv: ``(n, 3, H, d)`` (rows may be strided, each row contiguous).
    :param cos: ``(n, d)``; :param sin: ``(n, d)``.
    :returns: ``q``, ``k`` (rotated) and ``v``, each ``(n, H, d)`` contiguous."""
    n, _, heads, d = qkv.shape
    assert qkv.stride(3) == 1 and qkv.stride(2) == d and qkv.stride(1) == heads * d
    q, k, v = (torch.empty(n, heads, d, device=qkv.device, dtype=qkv.dtype) for _ in range(3))
    _rope[(n,)](qkv, cos.contiguous(), sin.contiguous(), q, k, v, qkv.stride(0), HEADS=heads,
                D=d, BLOCK_H=triton.next_power_of_2(heads), BLOCK_D=triton.next_power_of_2(d))
    return q, k, v
