"""Several prompts prefilled together: one pass over the layers for all their tokens.

Why: cameras whose clips are ready together (:mod:`rats_ros.models.fast.batch`) were prefilled
one after the other, each a pass of ~15 kernels per layer over its own tokens; a small model's
prefill is launch-bound (0.5B: 23.7 ms for 6.3k tokens against a 7.7 ms FLOP floor, H200). Here
the prompts are packed into one sequence: every projection, norm and MLP runs once over all
their tokens, and attention stays within each prompt (causal, positions restarting at 0): for
several prompts on CUDA in half precision through torch's ``varlen_attn``, else one SDPA per
prompt (with the decoder's ``prefill_attention`` kernels). One prompt is the single decoder's
prefill (:meth:`FastDecoder._prefill` calls this). Per prompt: the read-out of its last row, its
K/V rows, Qwen3-VL's DeepStack additions at its positions; ``test/test_batch_decode.py`` checks
the decoded rows of several prompts against each prompt decoded alone.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

from rats_ros.errors import ModelError
from rats_ros.models.fast.layers import PackedLayer

try:  # torch >= 2.9: flash attention over packed variable-length sequences, CUDA only
    from torch.nn.attention.varlen import varlen_attn
    _PARAMS = inspect.signature(varlen_attn).parameters
    # causal: ``window_size=(-1, 0)`` in newer torch, ``is_causal=True`` in the first releases
    CAUSAL = ({"window_size": (-1, 0)} if "window_size" in _PARAMS else
              {"is_causal": True} if "is_causal" in _PARAMS else None)
except ImportError:
    varlen_attn, CAUSAL = None, None

MAX_PACKED_TOKENS = 32768  # tokens prefilled in one pass (bounds the MLP's activations)


def packs(lengths: list[int], limit: int | None = None) -> list[list[int]]:
    """Prompt indices in consecutive groups of at most ``limit`` tokens (default
    :data:`MAX_PACKED_TOKENS`; a longer prompt alone)."""
    limit = limit or MAX_PACKED_TOKENS
    groups, current, total = [], [], 0
    for index, length in enumerate(lengths):
        if current and total + length > limit:
            groups.append(current)
            current, total = [], 0
        current.append(index)
        total += length
    return groups + [current] if current else groups


def prefill_many(dec, rows, prompts, readouts, deepstacks, pace) -> torch.Tensor:
    """Prefill every prompt into its row; :returns: ``(B,)`` each prompt's first token.

    :param dec: the :class:`~rats_ros.models.fast.decode.FastDecoder` whose weights run.
    :param rows: per prompt, its state as ``FastDecoder._prefill`` takes it (``kv``, ``mask``,
        ``acc``, ``cos``, ``sin`` views of one row).
    :param prompts: ``(P_b, D)`` embeddings; :param readouts: per prompt, read out its last row.
    :param deepstacks: per prompt, ``(positions, [features])`` or None; :param pace: a Pacer.
    """
    first = []
    for group in packs([int(p.shape[0]) for p in prompts]):
        first.append(_prefill_pack(dec, [rows[b] for b in group], [prompts[b] for b in group],
                                   [readouts[b] for b in group], [deepstacks[b] for b in group],
                                   pace))
    return torch.cat(first)


def _prefill_pack(dec, rows, prompts, readouts, deepstacks, pace) -> torch.Tensor:
    lengths = [int(p.shape[0]) for p in prompts]
    starts = [sum(lengths[:b]) for b in range(len(lengths))]
    x = torch.cat([p.to(dec.device, dec.dtype) for p in prompts]) if len(prompts) > 1 else \
        prompts[0].to(dec.device, dec.dtype)  # (T, D)
    position = torch.cat([torch.arange(n, device=dec.device) for n in lengths])  # (T,)
    cos, sin = rows[0].cos[position], rows[0].sin[position]  # (T, d): one table for all rows
    extras = _deepstack_index(deepstacks, starts)
    group = dec.n_heads // dec.n_kv
    for idx, layer in enumerate(dec.packed):
        pace()
        q, k, v = layer.prefill_qkv(x, cos, sin)  # (T, H, d), (T, Hkv, d), (T, Hkv, d)
        for row, s, n in zip(rows, starts, lengths, strict=True):
            row.kv[idx, 0, :, :n].copy_(k[s:s + n].transpose(0, 1))
            row.kv[idx, 1, :, :n].copy_(v[s:s + n].transpose(0, 1))
        if idx in dec.readout_layers:
            for row, s, n, wanted in zip(rows, starts, lengths, readouts, strict=True):
                if wanted:  # the prompt's last query row over its own keys (Hkv, P, d)
                    keys = k[s:s + n].transpose(0, 1)
                    row.acc[:n] += _last_row_probs(dec, q[s + n - 1], keys).sum(dim=(0, 1))
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)  # (T, H, d)
        o = _causal(dec, q, k, v, starts, lengths)  # (T, H, d)
        x = layer.mlp(layer.attn_out(x, o.reshape(x.shape[0], -1)))
        if extras is not None and idx < len(extras[1]):
            x = x.index_add(0, extras[0], extras[1][idx].to(x.dtype))
    for row, n in zip(rows, lengths, strict=True):
        row.mask[:n] = 0.0
    last = torch.cat([x[s + n - 1:s + n] for s, n in zip(starts, lengths, strict=True)])  # (B, D)
    return dec.head(PackedLayer.norm(dec.decoder.norm, last)).argmax(dim=-1)  # (B,)


def _last_row_probs(dec, q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Softmax of the prompt's last query row per head (prefill read-out), in float32.

    :param q: ``(H, d)``; :param keys: ``(Hkv, P, d)``, all visible to the last row.
    :returns: ``(Hkv, G, P)`` probabilities (G = H / Hkv query heads per KV head).
    """
    qg = q.float().reshape(dec.n_kv, dec.n_heads // dec.n_kv, dec.head_dim)
    return torch.softmax(torch.matmul(qg, keys.float().transpose(1, 2)) * dec.scale, dim=-1)


def _causal(dec, q, k, v, starts, lengths) -> torch.Tensor:
    """Causal attention within each prompt of the packed sequence: ``(T, H, d)``."""
    if (len(lengths) > 1 and varlen_attn is not None and CAUSAL is not None and q.is_cuda
            and q.dtype in (torch.bfloat16, torch.float16)):
        bounds = torch.tensor([0, *(s + n for s, n in zip(starts, lengths, strict=True))],
                              device=q.device, dtype=torch.int32)
        longest = max(lengths)
        return varlen_attn(q, k.contiguous(), v.contiguous(), bounds, bounds, longest, longest,
                           **CAUSAL)
    out = torch.empty_like(q)
    for s, n in zip(starts, lengths, strict=True):
        qb, kb, vb = (t[s:s + n].transpose(0, 1)[None] for t in (q, k, v))  # (1, H, P, d)
        with sdpa_kernel(dec.sdpa_backends, set_priority=True):
            ob = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, scale=dec.scale)
        out[s:s + n] = ob[0].transpose(0, 1)
    return out


def _deepstack_index(deepstacks, starts):
    """Every prompt's DeepStack positions shifted into the packed sequence, and per layer the
    features of all prompts in that order; None when no prompt has any."""
    present = [(d, s) for d, s in zip(deepstacks, starts, strict=True) if d is not None]
    if not present:
        return None
    if len(present) != len(deepstacks):
        raise ModelError("either every prompt of a batch has DeepStack features or none")
    positions = torch.cat([d[0] + s for d, s in present])
    layers = min(len(d[1]) for d, _ in present)
    return positions, [torch.cat([d[1][i] for d, _ in present]) for i in range(layers)]
