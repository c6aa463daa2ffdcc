"""The Qwen vision towers' modules, swapped at load for faster ones on the same weights (same
state-dict names, same outputs up to float rounding); :mod:`rats_ros.models.fast.vision` installs
them. Each answers a measured cost (H200, bench/RESULTS.md):

- :class:`PatchProjection`: both towers embed patches with a ``Conv3d`` whose kernel equals its
  stride, which is one matrix product over flattened patches; cuDNN has no good algorithm for
  that shape and can be far slower than the product (transformers issue #45750: ~62x, ~50,000x on
  Blackwell in bf16; sglang-omni PR #539: 3.7 s a call on an H100 in bf16). transformers 5 offers
  the same swap as an opt-in fusion (PR #45041). On the H200 it bought 1-4 ms of encode.
- :func:`pad_mlp`: Qwen2.5-VL's MLP width of 3,420 is not a multiple of 8: its rows are not
  16-byte aligned, and cuBLAS falls back from Hopper's kernels to an sm80 one (45.6 of 110.8 ms of
  a 7B clip's encode). Zero rows and columns take it to 3,456; ``act(0) == 0``, so the output is
  unchanged.
- :class:`FusedRMSNorm` (Qwen2.5-VL) and :class:`SegmentAttention` (both): transformers' RMSNorm
  and vision RoPE run in float32 as ~5 and ~14 elementwise kernels over the whole clip per
  layer; here one fused ``rms_norm`` and a RoPE of q and k together in 5 kernels, or in one
  Triton kernel on CUDA (:mod:`vision_rope`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rats_ros.models.fast import vision_rope


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


class FusedRMSNorm(torch.nn.Module):
    """A transformers RMSNorm as ``F.rms_norm`` (one kernel on CUDA; the weight applied in
    float32 and rounded once, where transformers rounds before applying it).

    :param norm: the module replaced (its ``weight`` and ``variance_epsilon``).
    """

    def __init__(self, norm):
        super().__init__()
        self.weight = norm.weight
        self.eps = norm.variance_epsilon
        self.__dict__["original"] = norm

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(hidden, (hidden.shape[-1],), self.weight, self.eps)


def rotary_qk(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' vision RoPE (float32 arithmetic, rounded back) of q and k at once.

    :param qk: ``(n, 2, H, d)`` in the model dtype; :param cos: ``(n, d)`` (as ``sin``).
    :returns: ``(n, 2, H, d)`` in the model dtype.
    """
    half = qk.shape[-1] // 2
    turned = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)  # rotate_half: exact
    cos, sin = cos[:, None, None].float(), sin[:, None, None].float()
    return torch.addcmul(qk * cos, turned, sin).to(qk.dtype)  # (q cos) + (turned sin)


class SegmentAttention(torch.nn.Module):
    """A Qwen vision attention block's forward with :func:`rotary_qk` and a direct call of the
    segment attention (``attend(q, k, v, cu_seqlens, scale, groups, varlen) -> (n, H, d)``).

    :param attention: the module replaced (its ``qkv`` and ``proj`` become ours: same names).
    :param plans: the tower's ``SegmentPlans`` (each boundary tensor grouped once).
    """

    #: segment attention as varlen flash on CUDA where it serves
    varlen: bool = True
    #: q and k RoPE as one Triton kernel on CUDA where it compiles
    fused_rope: bool = True

    def __init__(self, attention, attend, plans):
        super().__init__()
        self.qkv, self.proj = attention.qkv, attention.proj
        self.heads, self.scaling = attention.num_heads, attention.scaling
        self.__dict__["original"] = attention
        self.__dict__["attend"] = attend
        self.__dict__["plans"] = plans

    def forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor,
                position_embeddings=None, **kwargs) -> torch.Tensor:
        n = hidden_states.shape[0]
        qkv = self.qkv(hidden_states).view(n, 3, self.heads, -1)  # (n, 3, H, d)
        if self.fused_rope and vision_rope.usable(qkv):  # one Triton kernel; q, k, v contiguous
            q, k, v = vision_rope.rope_qkv(qkv, *position_embeddings)
        else:
            qk = rotary_qk(qkv[:, :2], *position_embeddings)  # (n, 2, H, d)
            q, k, v = qk[:, 0], qk[:, 1], qkv[:, 2]
        out = self.attend(q, k, v, cu_seqlens, self.scaling, self.plans.of(cu_seqlens),
                          self.varlen)  # (n, H, d)
        return self.proj(out.reshape(n, -1))


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


def _linears(mlp) -> tuple[tuple, torch.nn.Linear]:
    """The MLP's input projections and its output projection."""
    if hasattr(mlp, "gate_proj"):  # Qwen2.5-VL: gated SiLU
        return (mlp.gate_proj, mlp.up_proj), mlp.down_proj
    return (mlp.linear_fc1,), mlp.linear_fc2  # Qwen3-VL: GELU


def pad_mlp(mlp, multiple: int = 64, force: bool = False) -> int:
    """Widen a vision MLP whose width is not a multiple of 8 (cuBLAS's alignment) to a multiple
    of ``multiple`` with zero weights: same outputs (``act(0) == 0`` for SiLU and GELU).

    :param mlp: Qwen2.5-VL's (gate, up, down) or Qwen3-VL's (fc1, fc2) vision MLP.
    :param force: pad even an aligned width (tests).
    :returns: the columns added (0: left alone).
    """
    ins, out = _linears(mlp)
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
    ins, out = _linears(mlp)
    for linear in ins:
        _widened(linear, rows=-extra)
    _widened(out, cols=-extra)
    mlp._rats_padding = 0
