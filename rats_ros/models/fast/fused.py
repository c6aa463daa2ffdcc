"""Fused decode kernels (Triton): one token through a decoder layer in 7-10 kernels, not ~22.

Why: a decode step of a small model is bound by kernel count, not bytes. On the H200, Qwen3-VL-2B's
step was 628 kernels taking 2.5 ms of device time where streaming its weights takes ~1 ms
(bench/RESULTS.md): every small kernel costs a few microseconds however little it does. Per
layer these kernels replace the torch sequence with:

- :func:`norm_gemv`: RMSNorm of the one row fused into the product that follows it (q/k/v;
  gate/up with SiLU(gate) * up in the same kernel), and the residual add fused into the o/down
  products: 4 kernels where torch launches ~11 (norms, products, split-K reductions, SiLU, mul);
- :func:`rope_store`: Qwen3's per-head q/k RMSNorm, RoPE of this position, and the K/V writes
  into the static cache: 1 kernel where torch launches 6 (norms, cat, rotation, two copies).

Attention over the cache is :mod:`fused_attention` (torch ops in read-out layers: their softmax
rows are the method's scores); each product's tile is timed per GPU (:mod:`tiles`). The
arithmetic follows the torch path's roundings (RMSNorm in float32 with one rounding, the product
accumulated in float32, SiLU and the gate product each rounded to the model dtype), so the CUDA
tests compare the two paths token by token.

Triton is optional: without it :func:`available` is False and the decoder keeps the torch step.
With ``TRITON_INTERPRET=1`` set before Triton is imported (the CPU test session does), the kernels
run on CPU tensors in Triton's interpreter: that is how the CPU tests check them against the
torch step.
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import OutOfResources

    KERNEL_ERRORS: tuple = (CompilationError, OutOfResources)  # a kernel this GPU cannot run
except ImportError:  # no Triton (a Jetson without its wheel, a CPU-only install): torch step
    triton, KERNEL_ERRORS = None, ()

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # read by Triton when it is imported


def available(device: torch.device) -> bool:
    """Whether the fused kernels can run on ``device``: compiled on CUDA, interpreted on the
    CPU (:data:`INTERPRETED`)."""
    if triton is None:
        return False
    return device.type == "cpu" if INTERPRETED else device.type == "cuda"


def _gemv(x, w, bias, res, lnw, out, n_out, glu_offset, stride_w, eps, K_IN: tl.constexpr,
          HAS_NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
          GLU: tl.constexpr, EVEN: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """``out[n] = (norm(x) W^T)[n] (+ bias[n]) (+ res[n])``, or ``silu(g[n]) * u[n]`` with
    ``g``, ``u`` rows ``n`` and ``n + glu_offset`` when GLU; x ``(K,)``, W ``(N, K)``.

    Products accumulate in a ``(BLOCK_N, BLOCK_K)`` float32 tile, summed once at the end (no
    reduction inside the loop); EVEN: N and K are whole blocks (no masks)."""
    rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_ok = rows < n_out
    cols = tl.arange(0, BLOCK_K)
    dt = out.dtype.element_ty
    rstd = 1.0
    if HAS_NORM:  # the row is tiny (L2-resident): every program computes its RMS
        squares = tl.zeros([BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K_IN, BLOCK_K):
            xk = tl.load(x + k0 + cols, mask=k0 + cols < K_IN, other=0.0).to(tl.float32)
            squares += xk * xk
        rstd = tl.rsqrt(tl.sum(squares, axis=0) / K_IN + eps)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    gate_rows = w + rows[:, None] * stride_w + cols[None, :]  # (BLOCK_N, BLOCK_K) pointers
    for k0 in range(0, K_IN, BLOCK_K):
        kk = k0 + cols
        if EVEN:
            xk = tl.load(x + kk).to(tl.float32)
        else:
            xk = tl.load(x + kk, mask=kk < K_IN, other=0.0).to(tl.float32)
        if HAS_NORM:  # F.rms_norm: weight applied in float32, one rounding
            xk = (xk * rstd * tl.load(lnw + kk, mask=kk < K_IN, other=0.0).to(tl.float32))
            xk = xk.to(dt).to(tl.float32)
        tile_ok = row_ok[:, None] & (kk < K_IN)[None, :]
        if EVEN:
            acc += tl.load(gate_rows + k0).to(tl.float32) * xk[None, :]
        else:
            acc += tl.load(gate_rows + k0, mask=tile_ok, other=0.0).to(tl.float32) * xk[None, :]
        if GLU:
            up_rows = gate_rows + glu_offset * stride_w + k0
            if EVEN:
                acc_up += tl.load(up_rows).to(tl.float32) * xk[None, :]
            else:
                acc_up += tl.load(up_rows, mask=tile_ok, other=0.0).to(tl.float32) * xk[None, :]
    total = tl.sum(acc, axis=1)  # (BLOCK_N,)
    if HAS_BIAS:
        total += tl.load(bias + rows, mask=row_ok, other=0.0).to(tl.float32)
    if HAS_RES:  # addmm: the add in float32 before the one rounding
        total += tl.load(res + rows, mask=row_ok, other=0.0).to(tl.float32)
    if GLU:  # torch: the product rounded, SiLU rounded, the gate product rounded
        gate = total.to(dt).to(tl.float32)
        up = tl.sum(acc_up, axis=1).to(dt).to(tl.float32)
        total = (gate / (1.0 + tl.exp(-gate))).to(dt).to(tl.float32) * up
    tl.store(out + rows, total.to(dt), mask=row_ok)


def _rope_store(qkv, q_norm, k_norm, cos, sin, pos, kv, q_out, n_heads, n_kv, stride_pair,
                stride_head, stride_pos, stride_row, eps, D: tl.constexpr,
                HAS_NORM: tl.constexpr):
    """Head ``program_id(0)`` of row ``program_id(1)``'s ``(H + 2 Hkv, D)`` q/k/v: a query head
    is normed, rotated and stored in ``q_out``; a key head normed, rotated and written into the
    row's K cache at the row's ``pos``; a value head copied into its V cache there."""
    head, row = tl.program_id(0), tl.program_id(1)
    offs = tl.arange(0, D)
    p = tl.load(pos + row).to(tl.int64)
    dt = q_out.dtype.element_ty
    qkv += row * (n_heads + 2 * n_kv) * D
    q_out += row * n_heads * D
    kv += row * stride_row
    x = tl.load(qkv + head * D + offs).to(tl.float32)
    if head >= n_heads + n_kv:
        v_head = head - n_heads - n_kv
        tl.store(kv + stride_pair + v_head * stride_head + p * stride_pos + offs, x.to(dt))
    else:
        swapped = (offs + D // 2) % D
        x2 = tl.load(qkv + head * D + swapped).to(tl.float32)
        if HAS_NORM:  # Qwen3: per-head RMSNorm (q_norm or k_norm), rounded before RoPE
            rstd = tl.rsqrt(tl.sum(x * x, axis=0) / D + eps)
            if head < n_heads:
                w1 = tl.load(q_norm + offs).to(tl.float32)
                w2 = tl.load(q_norm + swapped).to(tl.float32)
            else:
                w1 = tl.load(k_norm + offs).to(tl.float32)
                w2 = tl.load(k_norm + swapped).to(tl.float32)
            x = (x * rstd * w1).to(dt).to(tl.float32)
            x2 = (x2 * rstd * w2).to(dt).to(tl.float32)
        c = tl.load(cos + p * D + offs).to(tl.float32)
        s = tl.load(sin + p * D + offs).to(tl.float32)
        y = (x * c + tl.where(offs < D // 2, -x2, x2) * s).to(dt)  # x cos + rotate_half(x) sin
        if head < n_heads:
            tl.store(q_out + head * D + offs, y)
        else:
            tl.store(kv + (head - n_heads) * stride_head + p * stride_pos + offs, y)


if triton is not None:
    _gemv_kernel, _rope_store_kernel = triton.jit(_gemv), triton.jit(_rope_store)


def gemv_config(n_out: int, k_in: int, glu: bool) -> tuple[int, int, int]:
    """``(BLOCK_N, BLOCK_K, num_warps)`` of a product when none is given: 4 rows x 1,024 columns
    (a middle tile of the H200 sweep; the decoder times its own, :mod:`tiles`). One
    program holds all rows when interpreted (each program is a Python loop there)."""
    if INTERPRETED:
        return triton.next_power_of_2(n_out), min(256, triton.next_power_of_2(k_in)), 4
    return 4, min(1024, triton.next_power_of_2(k_in)), 4


def norm_gemv(x: torch.Tensor, matrix, norm=None, residual: torch.Tensor | None = None,
              glu: int = 0, config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """One row through a projection, fused with what surrounds it.

    :param x: ``(1, K)`` the row (model dtype, contiguous).
    :param matrix: a :class:`~rats_ros.models.fast.quant.Dense` ``(N, K)`` (unquantized).
    :param norm: an RMSNorm module applied to ``x`` first (``weight``, ``variance_epsilon``).
    :param residual: ``(1, N)`` added to the product (the o/down projections), or None.
    :param glu: ``I`` > 0: the matrix is gate rows ``[0, I)`` then up rows ``[I, 2I)``; returns
        ``silu(gate) * up`` ``(1, I)``.
    :param config: ``(BLOCK_N, BLOCK_K, num_warps)``; default :func:`gemv_config`.
    :returns: ``(1, N)`` (``(1, I)`` with ``glu``).
    """
    w = matrix.weight
    n_out, k_in = (glu, w.shape[1]) if glu else tuple(w.shape)
    out = torch.empty(1, n_out, device=x.device, dtype=x.dtype)
    block_n, block_k, warps = config or gemv_config(n_out, k_in, glu > 0)
    _gemv_kernel[(triton.cdiv(n_out, block_n),)](
        x, w, matrix.bias if matrix.bias is not None else w,
        residual if residual is not None else x, norm.weight if norm is not None else x, out,
        n_out, glu, w.stride(0), float(norm.variance_epsilon) if norm is not None else 0.0,
        K_IN=k_in, HAS_NORM=norm is not None, HAS_BIAS=matrix.bias is not None,
        HAS_RES=residual is not None, GLU=glu > 0,
        EVEN=n_out % block_n == 0 and k_in % block_k == 0, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=warps)
    return out


def rope_store(qkv: torch.Tensor, layer, cos: torch.Tensor, sin: torch.Tensor,
               pos: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """Qwen3 q/k norms (when the layer has them), RoPE at ``pos``, K/V written into the cache;
    for one token, or one token per row of the batched decoder.

    :param qkv: ``(B, (H + 2 Hkv) d)`` the packed projection of each row's token (contiguous).
    :param layer: its :class:`~rats_ros.models.fast.layers.PackedLayer`.
    :param cos: ``(C, d)``; :param sin: ``(C, d)`` RoPE tables; :param pos: ``(B,)`` positions.
    :param kv: this layer's cache, ``(2, Hkv, C, d)`` (one row) or ``(2, B, Hkv, C, d)``
        (contiguous in its last dim).
    :returns: ``q`` ``(B H, d)`` after RoPE (``(H, d)`` for one row).
    """
    h, hkv, d = layer.h, layer.hkv, layer.d
    rows = qkv.shape[0]
    if kv.dim() == 4:
        kv = kv.unsqueeze(1)  # (2, 1, Hkv, C, d)
    q = torch.empty(rows * h, d, device=qkv.device, dtype=qkv.dtype)
    has_norm = layer.q_norm is not None
    qn = layer.q_norm.weight if has_norm else qkv
    kn = layer.k_norm.weight if has_norm else qkv
    eps = float(layer.q_norm.variance_epsilon) if has_norm else 0.0
    _rope_store_kernel[(h + 2 * hkv, rows)](
        qkv, qn, kn, cos, sin, pos, kv, q, h, hkv, kv.stride(0), kv.stride(2), kv.stride(3),
        kv.stride(1), eps, D=d, HAS_NORM=has_norm)
    return q


def supports(layers, head_dim: int) -> bool:
    """Whether the packed ``layers`` can take the fused step: unquantized weights and a power of
    two head dim (one Triton block per head)."""
    return (head_dim & (head_dim - 1) == 0
            and all(not layer.qkv.quantized for layer in layers))
