"""LLaVA-OneVision backend: SigLIP -> projector -> 2x2 bilinear pooling, newline after the clip."""
import math

import torch
from transformers import LlavaOnevisionForConditionalGeneration

from rats_ros.models.base import ClipTokens
from rats_ros.models.fast import siglip as fast_siglip
from rats_ros.models.fast.layers import install_fast_pooling
from rats_ros.models.hf import HFVideoBackend, model_errors
from rats_ros.models.preprocess import (
    pixel_norm,
    read_preprocessor_config,
    resize_normalize,
    upload,
)
from rats_ros.models.tiny import LLAVA_VIDEO_MARKUP

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)


class LlavaOnevisionBackend(HFVideoBackend):
    """LLaVA-OneVision video layout: ``[frames x pooled patches][image_newline]``.

    Every frame is resized to the vision tower's square input (no aspect preserved, as the
    reference video processor does); the 2x2-pooled patch grid gives :attr:`tokens_per_frame`.
    """

    model_class = LlavaOnevisionForConditionalGeneration
    video_token = "<video>"
    default_video_markup = LLAVA_VIDEO_MARKUP

    def __init__(self, directory, config, name):
        super().__init__(directory, config, name)
        vision = self.model.config.vision_config
        self.image_size = vision.image_size
        self.pooled_side = math.ceil(vision.image_size // vision.patch_size / 2)  # 2x2 pooling
        self.tokens_per_frame = self.pooled_side ** 2
        self.norm = pixel_norm(read_preprocessor_config(self.directory), SIGLIP_MEAN, SIGLIP_STD)
        install_fast_pooling(self.model)  # same 2x2 bilinear pooling as two matrix products
        self.install_vision(config.fast)  # GELU in the fc1 product on CUDA (fast/siglip.py)

    def install_vision(self, fast) -> None:
        fast_siglip.install(self.model, fast.siglip)

    def vision_plan(self, grid) -> None:
        """SigLIP needs no precomputed indices."""
        return None

    def token_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        return num_frames, self.pooled_side, self.pooled_side

    def vision_inputs(self, pixels) -> tuple[torch.Tensor, None]:
        """``(T, H, W, 3)`` uint8 frames -> ``(T, 3, S, S)`` normalised (no patch grid)."""
        return self._normalized(upload(pixels, self.device)), None

    def encode_clips(self, clips: list) -> list[ClipTokens]:
        """Clips of one shape in one forward of the tower (frames are encoded independently, so
        each clip's tokens are :meth:`encode_clip`'s); others one by one."""
        if not self._one_forward(clips):
            return super().encode_clips(clips)
        with model_errors("encoding clips"), torch.inference_mode():
            self.fast.gate.wait_for_answers()  # an answer in flight goes first
            frames = torch.stack([self._normalized(upload(p, self.device)) for p in clips])
            return [ClipTokens(t) for t in self._features(frames)]  # B x (N, D)

    def vision_tower(self, frames: torch.Tensor, grid=None,
                     plan=None) -> tuple[torch.Tensor, None]:
        """``(T, 3, S, S)`` -> ``(N, D)`` visual tokens (LLaVA-OV has no DeepStack)."""
        return self._features(frames[None])[0], None

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` float frames in 0..255 -> ``(B, N, D)`` visual tokens (no
        inference mode of its own, so training can take gradients through it)."""
        b, t = frames.shape[:2]
        normalized = self._normalized(frames.flatten(0, 1))  # (B*T, 3, S, S)
        return self._features(normalized.view(b, t, *normalized.shape[1:]))

    def _normalized(self, frames: torch.Tensor) -> torch.Tensor:
        return resize_normalize(frames, self.image_size, self.image_size, self.norm, self.dtype)

    def _features(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, S, S)`` -> ``(B, N, D)``."""
        # cuDNN attention first on CUDA (fast/siglip.py)
        with fast_siglip.attention(frames.device, self.fast.config.siglip):
            out = self.model.model.get_video_features(pixel_values_videos=frames)
        # pooler_output: (B, T * tokens_per_frame + 1, D); the last row is image_newline,
        # which the prompt layout appends after the clip itself
        return out.pooler_output[:, :-1]

    def _clip_trailer(self) -> torch.Tensor:
        return self.model.model.image_newline.to(self.dtype)[None]  # (1, D)
