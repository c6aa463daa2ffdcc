"""What the fast path runs and returns: the supported language models, their weights packed
once per model, and a decode's result."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rats_ros.errors import ModelError
from rats_ros.models.fast.layers import PackedLayer

# Qwen2.5-VL's LLM is Qwen2's with M-RoPE; with the method's contiguous positions every M-RoPE
# section gets the same index, which is plain RoPE (test/test_fast_decode.py checks it against the
# model's own forward). Qwen3-VL's adds per-head q/k norms (PackedLayer.head_norm), interleaved
# M-RoPE (plain RoPE with equal indices, likewise) and DeepStack features added after its first
# layers in the prefill (FastDecoder.run's ``deepstack``).
SUPPORTED_LM_CLASSES = ("Qwen2Model", "Qwen2_5_VLTextModel", "Qwen3VLTextModel")
@dataclass
class FastResult:
    """Output of :meth:`FastDecoder.run`.

    :param token_ids: generated ids; stops after the first EOS (EOS included) unless ignored.
    :param sums: ``(end - start,)`` float32 read-out sums over heads, layers and query rows (on
        the model's device), or ``None`` without a read-out range.
    :param count: number of (layer, head, query row) triples summed into ``sums``.
    :param prefill_ns: prefill wall time (device synchronised).
    :param decode_ns: decode wall time (device synchronised).
    """

    token_ids: list[int]
    sums: torch.Tensor | None
    count: int
    prefill_ns: int
    decode_ns: int

    @property
    def scores(self) -> torch.Tensor | None:
        """:returns: ``(end - start,)`` mean attention (``sums / count``), or ``None``."""
        return None if self.sums is None else self.sums / self.count


def language_parts(model):
    """Return ``(decoder, lm_head)`` of a causal LM or LLaVA-style model, or ``(None, None)``."""
    decoder = getattr(model, "language_model", None)
    if decoder is None:
        inner = getattr(model, "model", None)
        decoder = getattr(inner, "language_model", inner)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return decoder, head


def supports(model) -> bool:
    """Whether :class:`FastDecoder` runs ``model``: Qwen2 decoder, full attention, plain RoPE."""
    decoder, head = language_parts(model)
    if decoder is None or head is None or type(decoder).__name__ not in SUPPORTED_LM_CLASSES:
        return False
    cfg = decoder.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    full = all(t == "full_attention" for t in getattr(cfg, "layer_types", ["full_attention"]))
    return full and rope.get("rope_type", "default") == "default"


def packed_layers(model, layers, heads: int, kv_heads: int, head_dim: int,
                   weights: str) -> list:
    """Pack (and quantize) the decoder's weights once per model (cached on it; later decoders
    reuse them).

    :raises ModelError: when quantized layers would have to be packed again (their own weights
        were released), e.g. for another weight format.
    """
    norm = layers[0].input_layernorm.weight
    key = (norm.device, norm.dtype, weights)
    cached_key, packed = getattr(model, "_rats_packed", (None, None))
    if packed is not None and cached_key == key and len(packed) == len(layers):
        return packed
    if cached_key is not None and cached_key[2] != "native":
        raise ModelError(f"the model's weights were quantized to {cached_key[2]} and cannot be "
                         f"packed again as {weights}; load the checkpoint again")
    packed = [PackedLayer(layer, heads, kv_heads, head_dim, weights) for layer in layers]
    model._rats_packed = (key, packed)
    return packed


def fast_result(dec, out, rows, acc, done: int, eos: list[int], readout_range,
                prefill_ns: int, decode_ns: int) -> FastResult:
    """Decoder ``dec``'s result of one caption from its buffers: ``out`` ``(C,)`` tokens,
    ``rows`` (one element) read-out rows summed, ``acc`` ``(C,)`` read-out sums."""
    tokens = out[:done].tolist()
    if eos:
        hit = [i for i, t in enumerate(tokens) if t in eos]
        tokens = tokens[: hit[0] + 1] if hit else tokens
    sums, count = None, 0
    if readout_range is not None and dec.readout_layers:
        count = round(float(rows)) * dec.n_heads * len(dec.readout_layers)
        sums = acc[readout_range[0]:readout_range[1]].clone()
    return FastResult(tokens, sums, count, prefill_ns, decode_ns)
