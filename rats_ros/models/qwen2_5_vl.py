"""Qwen2.5-VL backend: paired frames -> windowed ViT -> 2x2 patch merger, vision start/end."""
import math

import torch
from transformers import Qwen2_5_VLForConditionalGeneration

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
from rats_ros.testing.tiny import QWEN_VIDEO_MARKUP

# The reference video processor's per-frame pixel bounds.
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 128 * 28 * 28, 768 * 28 * 28


class Qwen2VLBackend(HFVideoBackend):
    """Qwen2.5-VL with its own video patch layout (frames paired in time).

    The LLM input uses plain contiguous positions for every token (all three M-RoPE sections get
    the same index): the method keeps only the temporal order of kept tokens, so the 3D
    (time, height, width) positions of the reference processor are not used, for memory tokens
    nor for the current clip.
    """

    model_class = Qwen2_5_VLForConditionalGeneration
    video_token = "<|video_pad|>"
    default_video_markup = QWEN_VIDEO_MARKUP

    def __init__(self, directory, config, name):
        super().__init__(directory, config, name)
        vision = self.model.config.vision_config
        pre = read_preprocessor_config(self.directory)
        self.patch = int(pre.get("patch_size", vision.patch_size))
        self.merge = int(pre.get("merge_size", vision.spatial_merge_size))
        self.temporal = int(pre.get("temporal_patch_size", vision.temporal_patch_size))
        self.frames_per_group = self.temporal
        size = pre.get("size") or {}
        self.min_pixels = int(size.get("shortest_edge", pre.get("min_pixels", VIDEO_MIN_PIXELS)))
        # an image preprocessor config allows far more pixels than video frames get
        longest = size.get("longest_edge", pre.get("max_pixels", VIDEO_MAX_PIXELS))
        self.max_pixels = min(VIDEO_MAX_PIXELS, int(longest))
        self.norm = pixel_norm(pre, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        side = math.isqrt(self.max_pixels)
        self.tokens_per_frame = self.num_visual_tokens(self.temporal, side, side) // self.temporal
        ids = self.tokenizer.convert_tokens_to_ids
        self.vision_start = ids("<|vision_start|>")
        self.vision_end = ids("<|vision_end|>")

    def _resized(self, height: int, width: int) -> tuple[int, int]:
        return smart_resize(height, width, self.patch * self.merge, self.min_pixels,
                            self.max_pixels)

    def token_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        h, w = self._resized(height, width)
        size = self.patch * self.merge
        return -(-num_frames // self.temporal), h // size, w // size

    def _video_features(self, pixels):
        """The vision tower's output for one clip (``pooler_output[0]``: its merged tokens)."""
        frames = upload(pixels, self.device)  # (T, 3, H, W)
        h, w = self._resized(*frames.shape[2:])
        frames = resize_normalize(frames, h, w, self.norm, self.dtype)
        flat, grid = qwen_patchify(frames, self.patch, self.merge, self.temporal)
        return self.model.model.get_video_features(flat, torch.tensor([grid], device=self.device))

    def encode_clip(self, pixels) -> torch.Tensor:
        with model_errors("encoding a clip"), torch.inference_mode():
            # (t * h/2 * w/2, D), temporal then raster order
            return self._video_features(pixels).pooler_output[0]
