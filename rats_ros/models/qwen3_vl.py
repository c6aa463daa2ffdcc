"""Qwen3-VL backend: Qwen2.5-VL's video layout with DeepStack features in the first LLM layers.

Qwen3-VL's vision tower also returns, for every merged visual token, features of some of its
intermediate layers ("DeepStack"); the LLM adds feature ``i`` to the hidden state of those
positions after its layer ``i``. Here the clip's tokens get their DeepStack features during the
prefill; memory tokens (kept tokens of past clips) carry only their merged embeddings, so the
memory costs no more than with the other families (docs/METHOD_NOTES.md). The clip is one block
between ``<|vision_start|>`` and ``<|vision_end|>``, without the per-frame-group timestamp text
Qwen3-VL's processor writes, and every token gets plain contiguous positions (method.md).
"""
import threading

import torch
from transformers import Qwen3VLForConditionalGeneration
from transformers.vision_utils import (
    get_vision_cu_seqlens,
    get_vision_interpolation_indices_and_weights,
    get_vision_position_ids,
)

from rats_ros.models.qwen2_5_vl import Qwen2VLBackend, longest

# Qwen3VLVideoProcessor's own bounds when a checkpoint names none (the published
# video_preprocessor_config.json says 4,096 .. 25,165,824)
VIDEO_PIXELS = (128 * 32 * 32, 32 * 32 * 768)


class Qwen3VLBackend(Qwen2VLBackend):
    """Qwen3-VL (2B/4B/8B): see the module docstring.

    ``encode_clip`` returns the merged tokens ``(N, D)`` with their DeepStack features attached
    as ``tokens.deepstack`` (a list of ``(N, D)``, one per DeepStack layer); ``build_inputs``
    hands them to this thread's next prefill (:meth:`take_prefill_extras`).
    """

    model_class = Qwen3VLForConditionalGeneration
    clip_bounds = True  # its video processor bounds the whole clip's pixels (frames x H x W)

    def __init__(self, directory, config, name):
        super().__init__(directory, config, name)
        self._call = threading.local()  # DeepStack inputs of this thread's caption in flight

    def _pixel_bounds(self, pre: dict, size: dict) -> tuple[int, int]:
        """Qwen3-VL's video processor: the whole clip's least and most pixels."""
        return (int(size.get("shortest_edge", VIDEO_PIXELS[0])),
                int(size.get("longest_edge", VIDEO_PIXELS[1])))

    def vision_tower(self, patches: torch.Tensor, grid: tuple[int, int, int],
                     plan: dict | None = None, videos: int = 1):
        """:returns: ``(N, D)`` merged tokens and ``(K, N, D)`` DeepStack features (``videos``
        clips: ``N`` covers them all, clip after clip)."""
        out = self._visual(patches, grid, plan, videos)
        return out.pooler_output, torch.stack(list(out.deepstack_features))

    def vision_plan(self, grid: tuple[int, int, int], videos: int = 1) -> dict:
        """As Qwen2.5-VL's, without windows and with the position-embedding interpolation."""
        visual = self.model.model.visual
        thw = torch.tensor([grid] * videos, device=self.device)
        cu_seqlens = get_vision_cu_seqlens(thw)
        indices, weights = get_vision_interpolation_indices_and_weights(
            thw, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners,
            spatial_merge_size=visual.config.spatial_merge_size)
        return {"interp_indices": indices, "interp_weights": weights,
                "position_ids": get_vision_position_ids(thw, visual.spatial_merge_size),
                "cu_seqlens": cu_seqlens, "max_seqlen": longest(cu_seqlens)}

    def build_inputs(self, memory, visual, prompt):
        embeds, key_start = super().build_inputs(memory, visual, prompt)
        deepstack = getattr(visual, "deepstack", None)
        if deepstack:
            mask = torch.zeros(embeds.shape[:2], dtype=torch.bool, device=self.device)
            mask[0, key_start:key_start + visual.shape[0]] = True  # the clip's positions
            self._call.prefill = {"visual_pos_masks": mask, "deepstack_visual_embeds": [
                feature.to(self.device, self.dtype) for feature in deepstack]}
        return embeds, key_start

    def take_prefill_extras(self) -> dict:
        extra = getattr(self._call, "prefill", None) or {}
        self._call.prefill = None  # one prefill per build_inputs
        return extra
