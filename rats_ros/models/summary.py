"""What a loaded checkpoint will do with a stream: tokens per frame and clip, the exact prompt,
the read-out layers and a GPU memory estimate (``rats-ros check-model``, the node's configure).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class ModelSummary:
    """A checkpoint's figures for one frame size (memory figures in MiB).

    :param visual_tokens: a clip's visual tokens N (the ``visual_tokens`` of each
        ``rats_ros/Caption``), of which ``kept_tokens`` stay in memory.
    :param clip_trailer_tokens: tokens the family puts after a clip (LLaVA-OV's image_newline).
    :param prompt: the captioning prompt as the LLM reads it, the clip shown as
        ``<video x N>`` (and the memory as ``<memory x M>``).
    """

    family: str
    device: str
    dtype: str
    engine: str
    weights: str
    tokens_per_frame: float
    visual_tokens: int
    kept_tokens: int
    clip_trailer_tokens: int
    memory_tokens: int
    readout_layers: list[int]
    prompt: str
    weights_mib: float
    kv_caption_mib: float
    kv_answer_mib: float
    estimate_mib: float

    def lines(self) -> list[str]:
        """Human-readable ``name: value`` lines."""
        return [f"{key}: {value}" for key, value in asdict(self).items()]


def summarize(backend, frames: int = 16, height: int = 480, width: int = 640,
              memory_clips: int = 16, keep_ratio: float = 1 / 16, context_tokens: int = 10000,
              answer_tokens: int = 128, *, prompt: str) -> ModelSummary:
    """Figures of ``backend`` (an ``HFVideoBackend``) for clips of ``frames`` frames of
    ``height x width`` pixels, a full memory and one answer of ``context_tokens``.

    The estimate is weights + the KV cache of a caption with a full memory + the KV cache of
    an answer (both may exist at once: answers run while captioning); activations and the
    runtime's own memory come on top.
    """
    groups, rows, cols = backend.token_grid(frames, height, width)
    visual = groups * rows * cols
    trailer = backend._clip_trailer().shape[0]
    clip_tokens = visual + trailer
    kept = max(1, round(visual * keep_ratio))
    memory = memory_clips * kept
    prefix, suffix = backend.prompt_layout(prompt)
    def decode(ids):
        with backend._tokenizer_lock:
            return backend.tokenizer.decode(ids, skip_special_tokens=False)

    shown = (decode(prefix.tolist()) + f"<memory x {memory}><video x {visual}>"
             + ("<clip trailer>" * trailer)
             + decode(suffix.tolist()))
    text = backend.model.config.text_config
    element = backend.embed_tokens.weight.element_size()
    per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * backend.head_dim * element
    caption_tokens = prefix.numel() + memory + clip_tokens + suffix.numel() + 64
    weights = sum(p.numel() * p.element_size() for p in backend.model.parameters())
    if backend.weights != "native":  # the quantized projections live in the fast decoder
        weights += sum(layer.nbytes for layer in backend.fast.caption.packed)
    mib = 2 ** 20
    figures = (weights / mib, per_token * caption_tokens / mib,
               per_token * (context_tokens + answer_tokens + 64) / mib)
    return ModelSummary(
        family=backend.model.config.model_type, device=str(backend.device),
        dtype=str(backend.dtype).removeprefix("torch."),
        engine="torch" if backend.engine is None else f"onnx ({backend.engine.directory})",
        weights=backend.weights,
        tokens_per_frame=visual / frames, visual_tokens=visual, kept_tokens=kept,
        clip_trailer_tokens=trailer,
        memory_tokens=memory, readout_layers=list(backend.readout_layers), prompt=shown,
        weights_mib=round(figures[0], 1), kv_caption_mib=round(figures[1], 1),
        kv_answer_mib=round(figures[2], 1), estimate_mib=math.ceil(sum(figures)))
