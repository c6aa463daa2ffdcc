"""A backend's computations as export-ready torch modules.

:class:`LanguageStep` runs ``T`` new tokens (the whole prompt in prefill, one token in a decode
step) through the language model over a static KV cache of ``S`` positions and returns, besides
the next-token logits and the updated cache, the read-out rows: the attention probabilities of
the step's last query row, summed over heads, at every read-out layer -- the quantity
:class:`rats_ros.models.readout.Readout` accumulates in the torch path (and computed by the same
function, :func:`~rats_ros.models.readout.last_row_probabilities`). The decoder layers are the
model's own modules; only the KV cache and the attention function are swapped for export-ready
ones while the step is traced.

:class:`VisionGraph` is the family's vision tower and projector for one clip of a fixed
preprocessed shape (Qwen's windowed attention plans its windows from the patch grid in Python,
so the grid is a constant of the graph).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from rats_ros.models.readout import READOUT_ATTENTION, last_row_probabilities

EXPORT_ATTENTION = "rats_export"
# transformers' Qwen vision attention hands the segment boundaries (cu_seqlens) only to
# implementations whose name contains "flash"; others split the sequence with data-dependent
# sizes, which a static graph cannot hold.
EXPORT_VISION_ATTENTION = "rats_export_flash_varlen"
_trace = threading.local()  # the read-out rows of the step being traced


class StaticCache:
    """Stands in for a transformers ``Cache`` inside a traced step: the new keys and values go
    to their positions of preallocated buffers (functionally, so the graph returns the updated
    buffers), and attention sees all ``S`` positions (the mask hides the unwritten ones).

    :param keys: ``(layers, Hkv, S, d)``; :param values: the same.
    :param positions: ``(T,)`` int64 positions of the step's tokens.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor):
        self.keys, self.values = list(keys.unbind(0)), list(values.unbind(0))
        self.positions = positions

    def update(self, key, value, layer_idx: int, cache_kwargs=None):
        """:param key: ``(1, Hkv, T, d)`` post-RoPE keys. :returns: ``(1, Hkv, S, d)`` twice."""
        self.keys[layer_idx] = self.keys[layer_idx].index_copy(1, self.positions, key[0])
        self.values[layer_idx] = self.values[layer_idx].index_copy(1, self.positions, value[0])
        return self.keys[layer_idx][None], self.values[layer_idx][None]


def export_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                     **kwargs):
    """SDPA with the key/value heads repeated (GQA) and, at read-out layers, the last query
    row's probabilities summed over heads recorded for the step's outputs.

    :param query: ``(1, H, T, d)``; :param key: ``(1, Hkv, S, d)``;
    :param attention_mask: ``(1, 1, T, S)`` additive float mask.
    :returns: ``(1, T, H, d)`` and None, as transformers' attention functions do.
    """
    rows = getattr(_trace, "rows", None)
    if rows is not None and module.layer_idx in _trace.layers:
        probs = last_row_probabilities(query, key, attention_mask, scaling)  # (H, S)
        rows[module.layer_idx] = probs.sum(0)  # (S,)
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                         scale=scaling)  # (1, H, T, d)
    return out.transpose(1, 2).contiguous(), None


def segment_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                      cu_seq_lens_q=None, **kwargs):
    """Vision attention within segments (frames or windows) as one masked SDPA.

    :param query: ``(1, H, n, d)``; :param cu_seq_lens_q: ``(segments + 1,)`` boundaries.
    :returns: ``(1, n, H, d)`` and None.
    """
    index = torch.arange(query.shape[2], device=query.device)
    inner = cu_seq_lens_q[1:-1].to(index.dtype)
    segment = (index[:, None] >= inner[None]).sum(-1)  # (n,) segment of each position
    mask = segment[:, None] == segment[None]  # (n, n)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask[None, None],
                                         scale=scaling)
    return out.transpose(1, 2).contiguous(), None


@contextmanager
def export_attention_installed(model):
    """Make ``model`` use :func:`export_attention` (language model) and, for the Qwen
    families, :func:`segment_attention` (vision tower) for the block; then restore them."""
    AttentionInterface.register(EXPORT_ATTENTION, export_attention)
    AttentionMaskInterface.register(EXPORT_ATTENTION, sdpa_mask)
    AttentionInterface.register(EXPORT_VISION_ATTENTION, segment_attention)
    vision = model.config.vision_config
    stock_vision = vision._attn_implementation
    segmented = model.config.model_type != "llava_onevision"
    model.set_attn_implementation({"text_config": EXPORT_ATTENTION, **(
        {"vision_config": EXPORT_VISION_ATTENTION} if segmented else {})})
    try:
        yield
    finally:
        model.set_attn_implementation({"text_config": READOUT_ATTENTION, **(
            {"vision_config": stock_vision} if segmented else {})})


class LanguageStep(torch.nn.Module):
    """One step of the language model over a static cache; see the module docstring.

    :param backend: a loaded :class:`~rats_ros.models.hf.HFVideoBackend`.
    :param rope_rows: position rows the rotary embedding takes (1; M-RoPE families: 3, each
        with the same contiguous positions, as the torch path feeds them).
    :param deepstack_layers: layers after which DeepStack features are added (Qwen3-VL).
    """

    def __init__(self, backend, rope_rows: int, deepstack_layers: int):
        super().__init__()
        lm = backend.language_model
        self.layers, self.norm, self.rotary = lm.layers, lm.norm, lm.rotary_emb
        self.lm_head = backend.model.lm_head
        self.readout_layers = list(backend.readout_layers)
        self.rope_rows, self.deepstack_layers = rope_rows, deepstack_layers

    def forward(self, embeds, start, keys, values, deepstack):
        """:param embeds: ``(1, T, D)`` input embeddings; :param start: ``(1,)`` int64
        position of the first; :param keys: ``(layers, Hkv, S, d)``; :param values: same;
        :param deepstack: ``(K, T, D)`` features added after layers ``0..K-1`` (zeros where none).
        :returns: logits ``(V,)``, keys, values, read-out rows ``(R, S)``.
        """
        t, s = embeds.shape[1], keys.shape[2]
        positions = start + torch.arange(t, device=embeds.device)  # (T,)
        position_ids = positions[None] if self.rope_rows == 1 else \
            positions[None, None].expand(self.rope_rows, 1, t)
        cos_sin = self.rotary(embeds, position_ids)
        visible = torch.arange(s, device=embeds.device)[None] <= positions[:, None]  # (T, S)
        mask = torch.where(visible, 0.0, torch.finfo(torch.float32).min)[None, None]
        mask = mask.to(embeds.dtype)  # (1, 1, T, S)
        cache = StaticCache(keys, values, positions)
        _trace.rows, _trace.layers = {}, set(self.readout_layers)
        try:
            hidden = embeds
            for index, layer in enumerate(self.layers):
                hidden = layer(hidden, attention_mask=mask, position_ids=positions[None],
                               past_key_values=cache, position_embeddings=cos_sin)
                if index < self.deepstack_layers:
                    hidden = hidden + deepstack[index][None]
            rows = torch.stack([_trace.rows[i] for i in self.readout_layers])  # (R, S)
        finally:
            _trace.rows = None
        logits = self.lm_head(self.norm(hidden[:, -1]))[0]  # (V,)
        return logits.float(), torch.stack(cache.keys), torch.stack(cache.values), rows.float()


class VisionGraph(torch.nn.Module):
    """The vision tower and projector of one clip: preprocessed pixels in, visual tokens out.

    :param backend: the loaded backend; its :meth:`vision_tower` does the work.
    :param grid: the family's patch grid for this preprocessed shape, or None (LLaVA-OV).
    """

    def __init__(self, backend, grid: tuple[int, int, int] | None):
        super().__init__()
        self.backend, self.grid = backend, grid
        self.model = backend.model  # registered, so the export sees the weights as parameters
        self.plan = backend.vision_plan(grid)  # constants of the graph

    def forward(self, pixels):
        """:returns: tokens ``(N, D)`` and DeepStack features ``(K, N, D)`` (K may be 0)."""
        tokens, deepstack = self.backend.vision_tower(pixels, self.grid, self.plan)
        if deepstack is None:
            deepstack = tokens.new_zeros(0, *tokens.shape)
        return tokens, deepstack
