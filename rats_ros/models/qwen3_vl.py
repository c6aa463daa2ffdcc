"""Qwen3-VL backend: Qwen2.5-VL's video layout with DeepStack features in the first LLM layers.

Qwen3-VL's vision tower also returns, for every merged visual token, features of some of its
intermediate layers ("DeepStack"); the LLM adds feature ``i`` to the hidden state of those
positions after its layer ``i``. Here the clip's tokens get their DeepStack features during the
prefill; memory tokens (kept tokens of past clips) carry only their merged embeddings, so the
memory costs no more than with the other families (docs/METHOD_NOTES.md). The clip is one block
between ``<|vision_start|>`` and ``<|vision_end|>``, without the per-frame-group timestamp text
Qwen3-VL's processor writes, and every token gets plain contiguous positions (method.md).
"""
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

    ``encode_clip`` returns the merged tokens ``(N, D)`` with their DeepStack features
    (``ClipTokens.deepstack``, ``(K, N, D)``); ``build_inputs`` places them at the clip's
    positions of the prompt (``PrefillInputs``) and the prefill adds them (:meth:`prefill_kwargs`).
    """

    model_class = Qwen3VLForConditionalGeneration
    clip_bounds = True  # its video processor bounds the whole clip's pixels (frames x H x W)

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

    def prefill_kwargs(self, inputs):
        """The clip's DeepStack features and their positions, as the language model takes
        them."""
        if inputs.deepstack is None:
            return {}
        mask = torch.zeros(inputs.embeds.shape[:2], dtype=torch.bool, device=self.device)
        mask[0, inputs.key_start:inputs.key_start + inputs.num_keys] = True  # (1, L)
        return {"visual_pos_masks": mask, "deepstack_visual_embeds": list(inputs.deepstack)}
