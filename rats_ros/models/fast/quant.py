"""Weight-only int8 / int4 matrices for the fast decode path, on torch's own kernels.

Decoding one token streams every weight once, so its time is bytes over memory bandwidth: int8
halves and int4 quarters the bf16 bytes. Both use kernels that ship in torch itself (no extra
package to match against the pinned torch, and capturable in a CUDA graph):

- ``int8``: symmetric, one scale per output row; ``torch._weight_int8pack_mm`` where torch has
  it for the device, else the int8 rows cast in the product (:attr:`Int8.kernel` says which).
- ``int4``: asymmetric, one scale and zero per group of :data:`GROUP` input columns, in the
  tinygemm layout (``w = (q - 8) * scale + zero``); ``torch._weight_int4pack_mm`` on CUDA (bf16
  activations) and ``torch._weight_int4pack_mm_for_cpu`` on the CPU.

:class:`Dense` is the unquantized matrix behind the same interface.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

GROUP = 128  # int4 group size along the input dimension (smaller where it does not divide)
INNER_K_TILES = 8  # tinygemm's CUDA tiling (the CPU kernel takes 2)


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
    """What the quantized formats share: the residual add is a plain add after the product."""

    quantized = True

    def residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x + y W^T (+ b)``."""
        return x + self(y)


class Int8(_Quantized):
    """Symmetric per-row int8 weights (see the module docstring)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        w = weight.float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8)  # (out,)
        self.q = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8)  # (out, in)
        self.scale, self.bias = scale.to(weight.dtype), bias
        self.kernel = "int8pack_mm" if _has_int8pack(weight) else "cast"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "int8pack_mm":
            y = torch._weight_int8pack_mm(x, self.q, self.scale)
        else:
            y = F.linear(x, self.q.to(x.dtype)) * self.scale
        return y if self.bias is None else y + self.bias

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
        self.cuda = weight.is_cuda
        if self.cuda:
            packed = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)  # two nibbles per byte
            self.packed = torch._convert_weight_to_int4pack(packed, INNER_K_TILES)
        else:
            self.packed = torch._convert_weight_to_int4pack_for_cpu(q, 2)
        self.bias, self.out = bias, out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.cuda:
            y = torch._weight_int4pack_mm(x, self.packed, self.group, self.scale_zero)
        else:
            y = torch._weight_int4pack_mm_for_cpu(x, self.packed, self.group,
                                                   self.scale_zero)
        return y if self.bias is None else y + self.bias

    @property
    def nbytes(self) -> int:
        return (self.packed.numel() * self.packed.element_size()
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
