"""Qwen2.5-VL backend: paired frames -> windowed ViT -> 2x2 patch merger, vision start/end."""
import math

import torch
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.vision_utils import (
    get_vision_cu_seqlens,
    get_vision_position_ids,
    get_vision_window_index,
)

from rats_ros.models.base import ClipTokens
from rats_ros.models.fast import vision as fast_vision
from rats_ros.models.hf import HFVideoBackend, model_errors
from rats_ros.models.preprocess import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    pixel_norm,
    qwen_patchify,
    read_preprocessor_config,
    resize_normalize,
    smart_resize,
    upload,
)
from rats_ros.models.tiny import QWEN_VIDEO_MARKUP

# The reference video processor's per-frame pixel bounds.
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 128 * 28 * 28, 768 * 28 * 28
MAX_PLANS = 16  # (clip shape, clips together) whose vision plan is kept


class Qwen2VLBackend(HFVideoBackend):
    """Qwen2.5-VL with its own video patch layout (frames paired in time).

    The LLM input uses plain contiguous positions for every token (all three M-RoPE sections get
    the same index): the method keeps only the temporal order of kept tokens, so the 3D
    (time, height, width) positions of the reference processor are not used, for memory tokens
    nor for the current clip.
    """

    model_class = Qwen2_5_VLForConditionalGeneration
    video_token = "<|video_pad|>"
    clip_bounds = False  # True: the pixel bounds are a whole clip's (Qwen3-VL's video processor)
    default_video_markup = QWEN_VIDEO_MARKUP

    def __init__(self, directory, config, name):
        super().__init__(directory, config, name)
        vision = self.model.config.vision_config
        pre = read_preprocessor_config(self.directory)
        self.patch = int(pre.get("patch_size", vision.patch_size))
        self.merge = int(pre.get("merge_size", vision.spatial_merge_size))
        self.temporal = int(pre.get("temporal_patch_size", vision.temporal_patch_size))
        self.frames_per_group = self.temporal
        self.min_pixels, self.max_pixels = self._pixel_bounds(pre, pre.get("size") or {})
        self.norm = pixel_norm(pre, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        side = math.isqrt(self.max_pixels // (self.temporal if self.clip_bounds else 1))
        self.tokens_per_frame = self.num_visual_tokens(self.temporal, side, side) // self.temporal
        ids = self.tokenizer.convert_tokens_to_ids
        self.vision_start = ids("<|vision_start|>")
        self.vision_end = ids("<|vision_end|>")
        self.install_vision(config.fast)  # segment attention batched (fast/vision.py)
        self._plans: dict[tuple, dict] = {}  # vision_plan per (clip shape, clips encoded)

    def install_vision(self, fast) -> None:
        fast_vision.install(self.model, fast.varlen_vision, fast.vision_rope)

    def _pixel_bounds(self, pre: dict, size: dict) -> tuple[int, int]:
        """Qwen2-VL's video processor: each frame's least and most pixels."""
        least = int(size.get("shortest_edge", pre.get("min_pixels", VIDEO_MIN_PIXELS)))
        # an image preprocessor config allows far more pixels than video frames get
        most = size.get("longest_edge", pre.get("max_pixels", VIDEO_MAX_PIXELS))
        return least, min(VIDEO_MAX_PIXELS, int(most))

    def _resized(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        """The target size: the pixel bounds are each frame's, or the whole clip's
        (``clip_bounds``)."""
        return smart_resize(height, width, self.patch * self.merge, self.min_pixels,
                            self.max_pixels, frames=num_frames if self.clip_bounds else None,
                            temporal=self.temporal)

    def token_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        h, w = self._resized(num_frames, height, width)
        size = self.patch * self.merge
        return -(-num_frames // self.temporal), h // size, w // size

    def vision_inputs(self, pixels) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """``(T, H, W, 3)`` uint8 frames -> flat patches ``(n, C * t * p * p)`` and their grid."""
        frames = upload(pixels, self.device)  # (T, 3, H, W)
        h, w = self._resized(frames.shape[0], *frames.shape[2:])
        frames = resize_normalize(frames, h, w, self.norm, self.dtype)
        return qwen_patchify(frames, self.patch, self.merge, self.temporal)

    def encode_clips(self, clips: list) -> list[ClipTokens]:
        """Clips of one shape in one forward of the tower: their patches packed, one video per
        clip (the tower attends within frames and windows, so each clip's tokens, and
        DeepStack features, are :meth:`encode_clip`'s); others one by one."""
        if not self._one_forward(clips):
            return super().encode_clips(clips)
        with model_errors("encoding clips"), torch.inference_mode():
            self.fast.gate.wait_for_answers()  # an answer in flight goes first
            inputs = [self.vision_inputs(pixels) for pixels in clips]  # (n, C t p p), grid
            grid = inputs[0][1]
            tokens, deepstack = self.vision_tower(torch.cat([x for x, _ in inputs]), grid,
                                                  videos=len(clips))  # (B N, D), (K, B N, D)
            each = tokens.shape[0] // len(clips)
            if deepstack is None or not len(deepstack):
                return [ClipTokens(t) for t in tokens.split(each)]
            return [ClipTokens(t, d) for t, d in zip(tokens.split(each),
                                                     deepstack.split(each, dim=1), strict=True)]

    def vision_tower(self, patches: torch.Tensor, grid: tuple[int, int, int],
                     plan: dict | None = None, videos: int = 1):
        """:param plan: :meth:`vision_plan` of ``grid``, or None to derive it on the fly.
        :param videos: clips of this ``grid`` packed in ``patches`` (one after the other).
        :returns: ``(N, D)`` merged tokens, temporal then raster order, and no DeepStack."""
        return self._visual(patches, grid, plan, videos).pooler_output, None

    def _visual(self, patches: torch.Tensor, grid: tuple[int, int, int], plan: dict | None,
                videos: int = 1):
        """The vision tower on ``videos`` clips of one ``grid`` (its pooler output is their
        tokens, clip after clip).

        Without ``plan``, the plan of ``grid`` is made once and reused: a camera's clips share
        one shape, and the tower then needs no index work and no device sync per clip."""
        visual = self.model.model.visual
        thw = torch.tensor([grid] * videos, device=patches.device)
        if plan is None:
            if (grid, videos) not in self._plans:
                if len(self._plans) >= MAX_PLANS:
                    self._plans.clear()
                self._plans[grid, videos] = self.vision_plan(grid, videos)
            plan = self._plans[grid, videos]
        return visual(patches.type(visual.dtype), grid_thw=thw, **dict(plan))

    def vision_plan(self, grid: tuple[int, int, int], videos: int = 1) -> dict:
        """The index tensors the vision tower derives from the patch grid (of ``videos`` clips
        of that grid) with Python loops, precomputed, so one clip shape can be traced as a
        static graph (ONNX export)."""
        visual = self.model.model.visual
        thw = torch.tensor([grid] * videos, device=self.device)
        cu_seqlens = get_vision_cu_seqlens(thw)
        window_index, cu_window = get_vision_window_index(
            thw, visual.spatial_merge_size, visual.window_size, visual.patch_size)
        return {"position_ids": get_vision_position_ids(thw, visual.spatial_merge_size),
                "cu_seqlens": cu_seqlens, "max_seqlen": longest(cu_seqlens),
                "window_index": window_index, "cu_window_seqlens": cu_window,
                "max_window_seqlen": longest(cu_window)}


def longest(cu_seqlens: torch.Tensor) -> int:
    """:returns: the longest segment of cumulative sequence boundaries ``(segments + 1,)``."""
    return int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
