"""Selective attention read-out: the attention caption queries pay to the current clip's tokens.

A registered attention function (:data:`READOUT_ATTENTION`) replaces the language model's stock
SDPA function. At the read-out layers of a forward given a :class:`Readout` (the language model's
``readout=`` keyword, which transformers hands to every attention call), it computes softmax
probabilities for the LAST query row only (the last prompt position in prefill, the single new row
in decoding) -- never a full attention matrix -- sums them over heads at the visual key positions
and accumulates them; then it delegates to stock SDPA for the layer's output, so the model's
outputs are exactly those of the stock model. Every other layer and every forward without a
read-out (question answering) is plain SDPA.

The accumulator is a preallocated device tensor updated in place, so a later static-cache /
CUDA-graph decode step can keep the same arithmetic inside a captured graph.
"""
from collections.abc import Sequence

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

READOUT_ATTENTION = "rats_readout"
# The paper's read-out layers for a 28-layer LLM: 1-indexed 5, 9, 14, 20 (0-indexed 4, 8, 13, 19),
# kept as fractions of depth so other depths get the same relative positions.
_PAPER_LAYERS_1_INDEXED = (5, 9, 14, 20)
_PAPER_DEPTH = 28

class Readout:
    """Per-call read-out state: which layers, which key positions, and the running sums.

    :param layers: 0-indexed decoder layers to read.
    :param key_start: key position of the current clip's first visual token.
    :param num_keys: number of visual tokens of the current clip (N).
    :param device: device of the accumulator (the model's).
    """

    def __init__(self, layers: Sequence[int], key_start: int, num_keys: int,
                 device: torch.device | str = "cpu"):
        self.layers = frozenset(int(i) for i in layers)
        self.key_start = int(key_start)
        self.num_keys = int(num_keys)
        self.sums = torch.zeros(num_keys, dtype=torch.float32, device=device)  # (N,)
        self.count = 0  # (layer, head, query row) triples summed into `sums`

    def accumulate(self, module, query: torch.Tensor, key: torch.Tensor,
                   attention_mask: torch.Tensor | None, scaling: float | None) -> None:
        """Add the last query row's head-summed probabilities over the visual keys.

        :param query: ``(1, H, q, d)`` post-RoPE queries.
        :param key: ``(1, H_kv, kv, d)`` keys of the whole cache.
        :param attention_mask: the mask stock SDPA gets (bool keep-mask, additive float, or None).
        """
        probs = last_row_probabilities(query, key, attention_mask, scaling)  # (H, kv)
        end = self.key_start + self.num_keys
        if end > probs.shape[-1]:
            raise RuntimeError(f"read-out keys {self.key_start}:{end} beyond the {probs.shape[-1]} "
                               "cached keys; the prompt layout and the read-out disagree")
        self.add(probs[:, self.key_start:end].sum(dim=0), probs.shape[0])

    def add(self, head_sums: torch.Tensor, rows: int) -> None:
        """Add ``(N,)`` probabilities already summed over ``rows`` (layer, head, query row)
        triples: how an engine that reads out inside its own graph reports (the ONNX engine)."""
        self.sums.add_(head_sums.to(self.sums.device, torch.float32))
        self.count += rows

    def scores(self) -> torch.Tensor:
        """:returns: ``(N,)`` float32 mean over heads, layers and query rows."""
        if self.count == 0:
            raise RuntimeError("no read-out row was recorded; is the read-out attention installed?")
        return self.sums / self.count


def last_row_probabilities(query: torch.Tensor, key: torch.Tensor,
                           attention_mask: torch.Tensor | None,
                           scaling: float | None) -> torch.Tensor:
    """Softmax attention probabilities of the last query row, in float32, with GQA.

    Mirrors stock SDPA's masking: a given mask is applied as is; without one, a multi-row
    (prefill) call is causal with upper-left alignment and a single-row call sees every key.

    :returns: ``(H, kv)`` probabilities (batch 1).
    """
    _, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    scale = scaling if scaling is not None else dim ** -0.5
    q = query[0, :, -1, :].float().view(kv_heads, heads // kv_heads, dim)  # (H_kv, G, d)
    logits = torch.matmul(q, key[0].float().transpose(-1, -2)) * scale  # (H_kv, G, kv)
    if attention_mask is not None:
        row = attention_mask[0, :, -1, :kv_len]  # (1 or H, kv)
        row = row.reshape(-1, 1, kv_len) if row.shape[0] == 1 else row.view(kv_heads, -1, kv_len)
        if row.dtype == torch.bool:
            logits = logits.masked_fill(~row, float("-inf"))
        else:
            logits = logits + row.float()
    elif q_len > 1 and kv_len > q_len:
        logits[..., q_len:] = float("-inf")
    return torch.softmax(logits, dim=-1).reshape(heads, kv_len)


def readout_attention_forward(module, query, key, value, attention_mask, dropout=0.0,
                              scaling=None, readout: Readout | None = None, **kwargs):
    """The registered attention function: read out into ``readout`` if given, then stock
    SDPA."""
    if readout is not None and module.layer_idx in readout.layers:
        readout.accumulate(module, query, key, attention_mask, scaling)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, **kwargs)


def install(model) -> None:
    """Register the read-out attention (once per process) and make ``model``'s LLM use it.

    The vision tower keeps its own implementation; masks are built exactly as for SDPA.
    """
    AttentionInterface.register(READOUT_ATTENTION, readout_attention_forward)
    AttentionMaskInterface.register(READOUT_ATTENTION, sdpa_mask)
    model.set_attn_implementation({"text_config": READOUT_ATTENTION})


def default_readout_layers(num_layers: int, count: int = 4) -> list[int]:
    """Read-out layers spread over depth at the paper's relative positions.

    The paper reads 1-indexed layers 5, 9, 14, 20 of 28. Each is kept as a fraction of depth
    ``f = l / 28`` and mapped to ``round(f * num_layers) - 1`` (0-indexed), which gives exactly
    4, 8, 13, 19 for 28 layers and 3, 7, 11, 16 for 24. Other counts interpolate between those
    fractions (first and last kept). Duplicates on shallow models are dropped.

    :returns: sorted, distinct 0-indexed layers (at most ``min(count, num_layers)``).
    :raises ValueError: when ``num_layers`` or ``count`` is below 1.
    """
    if num_layers < 1 or count < 1:
        raise ValueError(f"need num_layers >= 1 and count >= 1, got {num_layers}, {count}")
    anchors = torch.tensor(_PAPER_LAYERS_1_INDEXED, dtype=torch.float64) / _PAPER_DEPTH
    if count == len(anchors):
        fractions = anchors
    else:
        where = torch.linspace(0, len(anchors) - 1, count, dtype=torch.float64)
        low = where.floor().long().clamp(max=len(anchors) - 2)
        fractions = anchors[low] + (where - low) * (anchors[low + 1] - anchors[low])
    layers = {min(num_layers - 1, max(0, round(float(f) * num_layers) - 1)) for f in fractions}
    return sorted(layers)
