"""Weight-only int8 / int4 matrices for the fast decode path, on torch's own kernels.

Decoding one token streams every weight once, so its time is bytes over memory bandwidth: int8
halves and int4 quarters the bf16 bytes. Both use kernels that ship in torch itself (no extra
package to match against the pinned torch, and capturable in a CUDA graph):

- ``int8``: symmetric, one scale per output row; ``torch._weight_int8pack_mm`` on the CPU, the
  int8 rows cast in the product on CUDA (:attr:`Int8.kernel` says which). On the H200 torch's
  CUDA ``_weight_int8pack_mm`` took 1.1 ms for one row of a 7B gate/up projection where bf16
  takes 0.1 ms and the cast 0.8 ms, and 990 ms for a prefill's 3,300 rows (bench/RESULTS.md):
  int8 saves memory on CUDA, not decode time; int4 is the fast format there.
- ``int4``: asymmetric, one scale and zero per group of :data:`GROUP` input columns, in the
  tinygemm layout (``w = (q - 8) * scale + zero``); ``torch._weight_int4pack_mm`` on CUDA (bf16
  activations) and ``torch._weight_int4pack_mm_for_cpu`` on the CPU.

Both kernels are written for a few rows (decoding). A prefill of thousands of rows through them
ran too slowly to finish the H200 benchmark within minutes (bench/RESULTS.md), so on CUDA a
product of more than :data:`KERNEL_ROWS` rows dequantizes the matrix to the activation dtype
and uses the dense product: the dequantization reads the stored bytes once and is cheap beside
a prefill's FLOPs. int4 keeps its nibbles (0.5 byte per weight) for that, beside tinygemm's
tiles, so on CUDA it stores ~1 byte per weight, as int8 does; decoding reads 0.5.

:class:`Dense` is the unquantized matrix behind the same interface.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

GROUP = 128  # int4 group size along the input dimension (smaller where it does not divide)
INNER_K_TILES = 8  # tinygemm's CUDA tiling (the CPU kernel takes 2)
KERNEL_ROWS = 16  # on CUDA, products of more rows run dense on the dequantized matrix


class Dense:
    """``y = x W^T (+ b)`` with ``W`` ``(out, in)`` in the model dtype; rows are views."""

    quantized = False

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x + y W^T (+ b)`` with the add inside the matrix product."""
        out = torch.addmm(x, y, self.weight.t())
        return out if self.bias is None else out + self.bias

    def rows(self, start: int, end: int) -> Dense:
        return Dense(self.weight[start:end],
                     None if self.bias is None else self.bias[start:end])

    @property
    def nbytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()


class _Quantized:
    """What the quantized formats share: the residual add is a plain add after the product,
    and many-row products on CUDA run dense on :meth:`dequantized` (module docstring)."""

    quantized = True
    bias: torch.Tensor | None
    dense_rows: bool  # whether products of more than KERNEL_ROWS rows run dense

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense_rows and x.shape[0] > KERNEL_ROWS:
            return F.linear(x, self.dequantized(x.dtype), self.bias)
        y = self.kernel_product(x)
        return y if self.bias is None else y + self.bias

    def residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x + y W^T (+ b)``."""
        return x + self(y)

    def kernel_product(self, x: torch.Tensor) -> torch.Tensor:
        """``x W^T`` through the format's kernel, ``x`` ``(rows, in)``."""
        raise NotImplementedError

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """:returns: ``(out, in)`` weights in ``dtype``, as the kernel computes with them."""
        raise NotImplementedError


class Int8(_Quantized):
    """Symmetric per-row int8 weights (see the module docstring)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        w = weight.float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8)  # (out,)
        self.q = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8)  # (out, in)
        self.scale, self.bias = scale.to(weight.dtype), bias
        cpu_kernel = not weight.is_cuda and _has_int8pack(weight)
        self.kernel = "int8pack_mm" if cpu_kernel else "cast"
        self.dense_rows = weight.is_cuda

    def kernel_product(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "int8pack_mm":
            return torch._weight_int8pack_mm(x, self.q, self.scale)
        return F.linear(x, self.q.to(x.dtype)) * self.scale

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.q.float() * self.scale.float()[:, None]).to(dtype)  # (out, in), 1 rounding

    @property
    def nbytes(self) -> int:
        return self.q.numel() + self.scale.numel() * self.scale.element_size()


class Int4(_Quantized):
    """Groupwise asymmetric int4 weights in tinygemm's layout (see the module docstring)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        out, inner = weight.shape
        group = next((g for g in (GROUP, 64, 32) if inner % g == 0), None)
        if group is None:
            raise ValueError(f"int4 needs the input size ({inner}) to be a multiple of 32")
        self.group = group
        w = weight.float().view(out, inner // group, group)
        low, high = w.amin(-1), w.amax(-1)  # (out, groups)
        scale = ((high - low) / 15.0).clamp(min=1e-8)
        q = ((w - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32)
        q = q.view(out, inner)
        zero = low + 8.0 * scale  # w = (q - 8) * scale + zero
        # (groups, out, 2): the kernels' scale-and-zero layout
        self.scale_zero = torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(
            weight.dtype)
        self.cuda = self.dense_rows = weight.is_cuda
        self.nibbles = None  # (out, in / 2) uint8, high nibble first: the dense rows' source
        if self.cuda:
            self.nibbles = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
            self.packed = torch._convert_weight_to_int4pack(self.nibbles, INNER_K_TILES)
        else:
            self.packed = torch._convert_weight_to_int4pack_for_cpu(q, 2)
        self.bias, self.out = bias, out

    def kernel_product(self, x: torch.Tensor) -> torch.Tensor:
        if self.cuda:
            return torch._weight_int4pack_mm(x, self.packed, self.group, self.scale_zero)
        return torch._weight_int4pack_mm_for_cpu(x, self.packed, self.group, self.scale_zero)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        if self.nibbles is None:
            raise ValueError("int4 keeps its nibbles on CUDA only")
        q = torch.stack([self.nibbles >> 4, self.nibbles & 15], -1).view(self.out, -1)
        scale, zero = self.scale_zero.float().transpose(0, 1).unbind(-1)  # (out, groups)
        q = q.view(self.out, scale.shape[1], self.group).float() - 8  # (out, groups, group)
        # float32 then one rounding to dtype, as the kernel's float32 accumulation sees them
        return (q * scale[..., None] + zero[..., None]).view(self.out, -1).to(dtype)

    @property
    def nbytes(self) -> int:
        extra = 0 if self.nibbles is None else self.nibbles.numel()
        return (self.packed.numel() * self.packed.element_size() + extra
                + self.scale_zero.numel() * self.scale_zero.element_size())


def _has_int8pack(weight: torch.Tensor) -> bool:
    """Whether ``torch._weight_int8pack_mm`` runs on ``weight``'s device and dtype (probed)."""
    try:
        torch._weight_int8pack_mm(torch.zeros(1, 32, device=weight.device, dtype=weight.dtype),
                                  torch.zeros(32, 32, device=weight.device, dtype=torch.int8),
                                  torch.ones(32, device=weight.device, dtype=weight.dtype))
    except (RuntimeError, NotImplementedError):
        return False
    return True


def matrix(weight: torch.Tensor, bias: torch.Tensor | None, weights: str):
    """:returns: ``weight`` (``(out, in)``) as a :class:`Dense`, :class:`Int8` or :class:`Int4`."""
    kind = {"native": Dense, "int8": Int8, "int4": Int4}[weights]
    return kind(weight.detach(), None if bias is None else bias.detach())
