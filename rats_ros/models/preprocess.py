"""Frame preprocessing in torch, on the model's device (no torchvision, no HF processors).

uint8 frames are uploaded once, then resized, rescaled and normalised where the model runs.
Mean, std and sizes come from the checkpoint's ``preprocessor_config.json`` (or
``video_preprocessor_config.json``) when present, else the architecture's defaults.
"""
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rats_ros.errors import FrameError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PixelNorm:
    """Rescale and normalisation constants of a vision tower."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float = 1 / 255


def read_preprocessor_config(directory: Path) -> dict:
    """:returns: the checkpoint's video (preferred) or image preprocessor config, or ``{}``."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = Path(directory) / name
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def pixel_norm(cfg: dict, default_mean, default_std) -> PixelNorm:
    """:returns: normalisation constants from a preprocessor config, with defaults."""
    return PixelNorm(tuple(cfg.get("image_mean", default_mean)),
                     tuple(cfg.get("image_std", default_std)),
                     float(cfg.get("rescale_factor", 1 / 255)))


def upload(pixels, device: torch.device) -> torch.Tensor:
    """Move ``(T, H, W, 3)`` uint8 frames to ``device`` as ``(T, 3, H, W)`` float32 in 0..255.

    :raises FrameError: when the array is not ``(T, H, W, 3)`` uint8.
    """
    if isinstance(pixels, np.ndarray):
        pixels = torch.from_numpy(np.ascontiguousarray(pixels))
    if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8 or pixels.ndim != 4 \
            or pixels.shape[-1] != 3 or pixels.shape[0] == 0:
        shape = tuple(getattr(pixels, "shape", ()))
        raise FrameError(f"expected frames as a (T, H, W, 3) uint8 array with T >= 1, got "
                         f"{type(pixels).__name__} {shape}; pass Clip.pixels()")
    return pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float()  # (T, 3, H, W)


def resize_normalize(frames: torch.Tensor, height: int, width: int, norm: PixelNorm,
                     dtype: torch.dtype) -> torch.Tensor:
    """Bicubic (antialiased) resize of ``(T, 3, H, W)`` 0..255 frames, then rescale and normalise.

    :returns: ``(T, 3, height, width)`` in ``dtype``.
    """
    if frames.shape[-2:] != (height, width):
        frames = F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False,
                               antialias=True).clamp_(0, 255)
    mean = torch.tensor(norm.mean, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, device=frames.device).view(1, 3, 1, 1)
    return ((frames * norm.rescale - mean) / std).to(dtype)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int,
                 frames: int | None = None, temporal: int = 2) -> tuple[int, int]:
    """Qwen-VL's target size: multiples of ``factor``, pixel count within bounds, aspect kept.

    :param frames: None: the bounds are one frame's (Qwen2-VL's ``smart_resize``); the clip's
        frame count: they are the whole clip's, frames counted in groups of ``temporal``, and
        frames under ``factor`` are scaled up first (Qwen3-VL's video ``smart_resize``).
    :raises FrameError: for aspect ratios beyond 200 (as the reference processor).
    """
    if max(height, width) / min(height, width) > 200:
        raise FrameError(f"frame aspect ratio {width}x{height} is beyond 200:1; crop the frames")
    counted = 1 if frames is None else round(frames / temporal) * temporal
    if frames is not None and min(height, width) < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    frames = frames or 1
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if counted * h_bar * w_bar > max_pixels:
        beta = math.sqrt(frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif counted * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen_patchify(frames: torch.Tensor, patch: int, merge: int,
                  temporal: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Qwen2-VL video patch layout: pair frames in time, group patches by merge window.

    A clip with an odd frame count repeats its last frame, as the reference processor does.

    :param frames: ``(T, C, H, W)`` normalised frames, H and W multiples of ``patch * merge``.
    :returns: ``(grid_t * grid_h * grid_w, C * temporal * patch * patch)`` and ``grid_thw``.
    """
    if pad := -frames.shape[0] % temporal:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
    t, c, h, w = frames.shape
    gt, gh, gw = t // temporal, h // patch, w // patch
    x = frames.reshape(gt, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    # -> (gt, gh/m, gw/m, m, m, C, temporal, patch, patch): merge windows stay contiguous
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * temporal * patch * patch), (gt, gh, gw)
