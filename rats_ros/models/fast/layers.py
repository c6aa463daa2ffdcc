"""One Qwen2 decoder layer as few GPU kernels: packed weights, prefill and single-token step.

Used by :mod:`fast_decode`. Decoding one token is launch-bound on a GPU (a 0.5B-size layer
streams ~15 MB of weights, a few microseconds), so the step is written for few kernels:

- q/k/v and gate/up projections packed into one matrix each (the model's modules are re-pointed
  at views of the packed tensors, so memory does not grow and the stock path still works);
- RoPE of one position is a ``(d, d)`` rotation: ``x * cos + rotate_half(x) * sin = x @ R``,
  built once per step and applied to all q and k heads with one matrix product;
- scale, key mask and ``q K^T`` in one ``baddbmm``; residual adds folded into ``addmm``;
- RMSNorm through ``torch.nn.functional.rms_norm`` (fused on CUDA; same formula).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rats_ros.models.fast import quant

SPLIT_ELEMENTS = 2**25  # tokens x intermediate size above which prefill projections are split


def _packed(modules) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the weights (and biases) of Linear ``modules`` along the output dim, then
    re-point each module at its slice (views), so the model keeps working at no extra memory."""
    weight = torch.cat([m.weight.detach() for m in modules])  # (sum out, in)
    has_bias = [m.bias is not None for m in modules]
    bias = torch.cat([m.bias.detach() for m in modules]) if all(has_bias) else None
    if any(has_bias) and bias is None:
        raise ValueError("mixed biased and unbiased projections cannot be packed")
    start = 0
    for m in modules:
        rows = m.weight.shape[0]
        m.weight = torch.nn.Parameter(weight[start:start + rows], requires_grad=False)
        if bias is not None:
            m.bias = torch.nn.Parameter(bias[start:start + rows], requires_grad=False)
        start += rows
    return weight, bias


def rotate_half_matrix(dim: int, device, dtype) -> torch.Tensor:
    """``P`` with ``x @ P == rotate_half(x) == cat(-x[d/2:], x[:d/2])`` for row vectors."""
    half = dim // 2
    p = torch.zeros(dim, dim, device=device, dtype=dtype)
    idx = torch.arange(half, device=device)
    p[idx + half, idx] = -1.0
    p[idx, idx + half] = 1.0
    return p


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class PackedLayer:
    """Packed weights of one Qwen2 decoder layer and its prefill / decode arithmetic.

    :param layer: a transformers ``Qwen2DecoderLayer`` (its projections get re-pointed).
    :param heads: query heads H; :param kv_heads: key/value heads Hkv; :param head_dim: d.
    :param weights: ``native`` (the model dtype), or weight-only ``int8`` / ``int4``
        (:mod:`quant`); quantized layers release the layer's own projection weights, so only
        the fast path can run that layer afterwards.
    """

    def __init__(self, layer, heads: int, kv_heads: int, head_dim: int,
                 weights: str = "native"):
        attn, mlp = layer.self_attn, layer.mlp
        self.h, self.hkv, self.d = heads, kv_heads, head_dim
        self.qkv = quant.matrix(*_packed([attn.q_proj, attn.k_proj, attn.v_proj]), weights)
        self.gu = quant.matrix(*_packed([mlp.gate_proj, mlp.up_proj]), weights)
        self.inter = mlp.gate_proj.weight.shape[0]
        self.o = quant.matrix(attn.o_proj.weight, attn.o_proj.bias, weights)  # (D, H d)
        self.down = quant.matrix(mlp.down_proj.weight, mlp.down_proj.bias, weights)  # (D, I)
        if weights != "native":
            _release([attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj,
                      mlp.up_proj, mlp.down_proj])
        else:
            spans = [(0, heads), (heads, heads + kv_heads),
                     (heads + kv_heads, heads + 2 * kv_heads)]
            self.qkv_rows = [self.qkv.rows(a * head_dim, b * head_dim) for a, b in spans]
        self.ln1, self.ln2 = layer.input_layernorm, layer.post_attention_layernorm
        # Qwen3-VL: RMSNorm of every query and key head before RoPE (None elsewhere)
        self.q_norm, self.k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
        self.act = mlp.act_fn

    @property
    def nbytes(self) -> int:
        """Bytes of the layer's projection weights as stored."""
        return sum(m.nbytes for m in (self.qkv, self.gu, self.o, self.down))

    def _split(self, tokens: int) -> bool:
        """Use one product per projection (contiguous outputs) for large token counts, packed
        products otherwise. Measured on an H100 (bench/RESULTS.md): splitting saves ~6 ms of a
        7B prefill of 6.3k tokens (non-vectorised strided elementwise kernels) and costs ~8 ms
        of a 0.5B one (more launches on a launch-bound prefill). Quantized: always packed."""
        return not self.qkv.quantized and tokens * self.inter >= SPLIT_ELEMENTS

    @staticmethod
    def norm(module, x: torch.Tensor) -> torch.Tensor:
        """The model's RMSNorm as one fused op (weight applied in float32, one rounding)."""
        return F.rms_norm(x, (x.shape[-1],), module.weight, module.variance_epsilon)

    def head_norm(self, qk: torch.Tensor) -> torch.Tensor:
        """Qwen3's per-head q/k RMSNorm on ``(..., H + Hkv, d)``; unchanged without one."""
        if self.q_norm is None:
            return qk
        return torch.cat([self.norm(self.q_norm, qk[..., :self.h, :]),
                          self.norm(self.k_norm, qk[..., self.h:, :])], dim=-2)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """``x + down(act(gate(h)) * up(h))`` with ``h = norm2(x)``; x ``(T, D)``.

        One token: one packed gate/up product. Many tokens: two products, so that the
        elementwise kernels read contiguous rows (strided halves of a packed output run
        non-vectorised, ~25 ms of a 7B prefill of 6.3k tokens, measured).
        """
        h = self.norm(self.ln2, x)
        if not self._split(x.shape[0]):
            gu = self.gu(h)  # (T, 2I)
            hidden = self.act(gu[:, :self.inter]) * gu[:, self.inter:]  # (T, I)
        else:
            hidden = self.act(self.gu.rows(0, self.inter)(h))  # (T, I)
            hidden.mul_(self.gu.rows(self.inter, 2 * self.inter)(h))
        return self.down.residual(x, hidden)

    # ------------------------------------------------------------------ prefill (T tokens)
    def prefill_qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """:returns: post-RoPE ``q (T, H, d)``, ``k (T, Hkv, d)`` and ``v (T, Hkv, d)``."""
        t, h = x.shape[0], self.norm(self.ln1, x)
        if not self._split(t):
            qkv = self.qkv(h)  # (T, (H + 2 Hkv) d)
            qk = qkv[:, :(self.h + self.hkv) * self.d].view(t, self.h + self.hkv, self.d)
            qk = self.head_norm(qk)
            qk = qk * cos[:, None] + rotate_half(qk) * sin[:, None]
            v = qkv[:, (self.h + self.hkv) * self.d:].view(t, self.hkv, self.d)
            return qk[:, :self.h], qk[:, self.h:], v
        q, k, v = (rows(h).view(t, -1, self.d) for rows in self.qkv_rows)  # contiguous: mlp()
        if self.q_norm is not None:
            q, k = self.norm(self.q_norm, q), self.norm(self.k_norm, k)
        cos, sin = cos[:, None], sin[:, None]  # (T, 1, d)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v

    def attn_out(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """``x + o_proj(o)``: x ``(T, D)``, o ``(T, H d)``."""
        return self.o.residual(x, o)

    # ------------------------------------------------------------------ decode (1 token)
    def step_qkv(self, x: torch.Tensor, rot: torch.Tensor):
        """:param rot: ``(d, d)`` RoPE rotation of this position.
        :returns: ``q (H, d)``, ``k (Hkv, d)`` post-RoPE and ``v (Hkv, d)``."""
        qkv = self.qkv(self.norm(self.ln1, x))  # (1, (H + 2 Hkv) d)
        qkv = qkv.view(self.h + 2 * self.hkv, self.d)
        qk = torch.mm(self.head_norm(qkv[:self.h + self.hkv]), rot)  # (H + Hkv, d)
        return qk[:self.h], qk[self.h:], qkv[self.h + self.hkv:]


def _release(modules) -> None:
    """Drop the projections' own weights (the quantized copies replace them)."""
    for m in modules:
        m.weight = torch.nn.Parameter(torch.empty(0, device=m.weight.device,
                                                  dtype=m.weight.dtype), requires_grad=False)
        if m.bias is not None:
            m.bias = torch.nn.Parameter(torch.empty(0, device=m.bias.device,
                                                    dtype=m.bias.dtype), requires_grad=False)


# ---------------------------------------------------------------------- LLaVA-OneVision pooling
def pooling_matrix(src: int, dst: int, device) -> torch.Tensor:
    """``(dst, src)`` float32 matrix of 1-D linear resizing exactly as ``F.interpolate(mode=
    "linear", align_corners=False)``; bilinear resizing is this matrix on both axes."""
    eye = torch.eye(src, device=device, dtype=torch.float32)[None]  # (1, src, src)
    return F.interpolate(eye, size=dst, mode="linear")[0].T.contiguous()


def install_fast_pooling(model) -> bool:
    """Replace LLaVA-OneVision's 2x2 bilinear pooling of the projected patches (per instance).

    The stock ``F.interpolate`` on ``(frames, D, 27, 27)`` is slow for large D (22 ms per 16-frame
    clip at D = 3584 on an H100, measured); the same resize is two small matrix products in
    float32. Same function up to float rounding. :returns: whether the model was patched.
    """
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "apply_pooling"):
        return False
    vision = inner.config.vision_config
    side = vision.image_size // vision.patch_size
    pooled = -(-side // 2)
    cache: dict = {}

    def apply_pooling(features: torch.Tensor) -> torch.Tensor:  # (F, side * side, D)
        frames, _, dim = features.shape
        a = cache.get(features.device)
        if a is None:
            a = cache[features.device] = pooling_matrix(side, pooled, features.device)
        x = features.float().view(frames, side, side * dim)
        x = torch.matmul(a, x).view(frames * pooled, side, dim)  # rows resized: (F o, side, D)
        x = torch.matmul(a, x)  # columns resized: (F o, o, D)
        return x.view(frames, pooled * pooled, dim).to(features.dtype)

    inner.apply_pooling = apply_pooling
    return True
