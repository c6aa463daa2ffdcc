"""The fused products of :mod:`fused` for several rows at once: the batched decode step of
:mod:`batch` (one row per camera).

Why a kernel of its own: :func:`fused.norm_gemv` streams the weights once per row, so B rows
would stream them B times; here each program loads a ``(BLOCK_K, BLOCK_N)`` weight tile once and
multiplies every row by it with ``tl.dot`` (tensor cores; rows padded to :data:`ROWS`), so a step
of 8 cameras streams the weights once, as the torch batched step's GEMMs do, in 4 kernels a layer
instead of ~11. Arithmetic and roundings as :func:`fused.norm_gemv` (RMSNorm in float32 with one
rounding, float32 accumulation, SiLU and the gate product rounded to the model dtype).
"""
from __future__ import annotations

import torch

from rats_ros.models.fast.fused import INTERPRETED, triton

if triton is not None:
    import triton.language as tl

ROWS = 16  # rows per program: tl.dot's smallest block, and the node's most cameras (16)


def _gemm_rows(x, w, bias, res, lnw, out, n_rows, n_out, glu_offset, stride_w, eps,
               K_IN: tl.constexpr, HAS_NORM: tl.constexpr, HAS_BIAS: tl.constexpr,
               HAS_RES: tl.constexpr, GLU: tl.constexpr, IEEE: tl.constexpr,
               ROWS_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """``out[b, n] = (norm(x[b]) W^T)[n] (+ bias[n]) (+ res[b, n])``, or ``silu(g) * u`` with
    GLU, for rows ``b < n_rows``; x ``(B, K)``, res and out ``(B, N)`` contiguous, W ``(N, K)``.
    IEEE: float32 products (a float32 model: no TF32)."""
    cols = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    col_ok = cols < n_out
    rows = tl.arange(0, ROWS_PAD)
    row_ok = rows < n_rows
    ks = tl.arange(0, BLOCK_K)
    dt = out.dtype.element_ty
    x_rows = x + rows[:, None] * K_IN
    rstd = tl.full([ROWS_PAD], 1.0, tl.float32)
    if HAS_NORM:  # the rows are tiny (L2-resident): every program computes their RMS
        squares = tl.zeros([ROWS_PAD, BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K_IN, BLOCK_K):
            ok = row_ok[:, None] & (k0 + ks < K_IN)[None, :]
            xk = tl.load(x_rows + k0 + ks[None, :], mask=ok, other=0.0).to(tl.float32)
            squares += xk * xk
        rstd = tl.rsqrt(tl.sum(squares, axis=1) / K_IN + eps)
    acc = tl.zeros([ROWS_PAD, BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([ROWS_PAD, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K_IN, BLOCK_K):
        kk = k0 + ks
        k_ok = kk < K_IN
        xk = tl.load(x_rows + kk[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        if HAS_NORM:  # F.rms_norm: weight applied in float32, one rounding
            lw = tl.load(lnw + kk, mask=k_ok, other=0.0).to(tl.float32)
            xk = (xk.to(tl.float32) * rstd[:, None] * lw[None, :]).to(dt)
        tile_ok = k_ok[:, None] & col_ok[None, :]
        gate = tl.load(w + cols[None, :] * stride_w + kk[:, None], mask=tile_ok, other=0.0)
        if IEEE:  # (ROWS, BLOCK_K) x (BLOCK_K, BLOCK_N)
            acc += tl.dot(xk, gate, input_precision="ieee")
        else:
            acc += tl.dot(xk, gate)
        if GLU:
            up = tl.load(w + (cols[None, :] + glu_offset) * stride_w + kk[:, None],
                         mask=tile_ok, other=0.0)
            if IEEE:
                acc_up += tl.dot(xk, up, input_precision="ieee")
            else:
                acc_up += tl.dot(xk, up)
    total = acc
    if HAS_BIAS:
        total += tl.load(bias + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    out_ok = row_ok[:, None] & col_ok[None, :]
    if HAS_RES:  # addmm: the add in float32 before the one rounding
        total += tl.load(res + rows[:, None] * n_out + cols[None, :], mask=out_ok,
                         other=0.0).to(tl.float32)
    if GLU:  # torch: the product rounded, SiLU rounded, the gate product rounded
        gate_out = total.to(dt).to(tl.float32)
        total = (gate_out / (1.0 + tl.exp(-gate_out))).to(dt).to(tl.float32) * \
            acc_up.to(dt).to(tl.float32)
    tl.store(out + rows[:, None] * n_out + cols[None, :], total.to(dt), mask=out_ok)


if triton is not None:
    _gemm_rows_kernel = triton.jit(_gemm_rows)


def gemm_config(n_out: int, k_in: int) -> tuple[int, int, int]:
    """``(BLOCK_N, BLOCK_K, num_warps)`` when none is given: 32 x 128 (the decoder times its
    own, :mod:`tiles`); interpreted, one program holds every output column."""
    if INTERPRETED:
        return max(16, triton.next_power_of_2(n_out)), max(16, min(
            256, triton.next_power_of_2(k_in))), 4
    return 32, 128, 4


def norm_gemm(x: torch.Tensor, matrix, norm=None, residual: torch.Tensor | None = None,
              glu: int = 0, config: tuple[int, ...] | None = None) -> torch.Tensor:
    """Rows through a projection, fused with what surrounds them (:func:`fused.norm_gemv`'s
    arguments, with ``B <= ROWS`` rows).

    :param x: ``(B, K)`` contiguous rows (model dtype).
    :param residual: ``(B, N)`` added to the products, or None.
    :param config: ``(BLOCK_N, BLOCK_K, num_warps[, num_stages])``; default :func:`gemm_config`.
    :returns: ``(B, N)`` (``(B, I)`` with ``glu``).
    """
    w = matrix.weight
    rows = x.shape[0]
    assert rows <= ROWS and x.is_contiguous(), "at most ROWS contiguous rows"
    n_out, k_in = (glu, w.shape[1]) if glu else tuple(w.shape)
    out = torch.empty(rows, n_out, device=x.device, dtype=x.dtype)
    block_n, block_k, warps, *stages = config or gemm_config(n_out, k_in)
    _gemm_rows_kernel[(triton.cdiv(n_out, block_n),)](
        x, w, matrix.bias if matrix.bias is not None else w,
        residual if residual is not None else x, norm.weight if norm is not None else x, out,
        rows, n_out, glu, w.stride(0), float(norm.variance_epsilon) if norm is not None else 0.0,
        K_IN=k_in, HAS_NORM=norm is not None, HAS_BIAS=matrix.bias is not None,
        HAS_RES=residual is not None, GLU=glu > 0, IEEE=x.dtype == torch.float32,
        ROWS_PAD=ROWS, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps,
        num_stages=stages[0] if stages else 3)
    return out
