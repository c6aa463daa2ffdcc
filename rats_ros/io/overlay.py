"""The selection overlay: a clip's frames tiled, with the patches whose tokens were kept lit up.

A clip's visual tokens are laid out as ``(groups, rows, cols)`` (``ClipCaption.token_grid``):
kept token ``i`` belongs to group ``g = i // (rows * cols)``, which covers frames
``g * frames_per_group ... (g + 1) * frames_per_group - 1`` (1 frame per group for
LLaVA-OneVision, 2 for Qwen2.5-VL), and to grid cell ``divmod(i % (rows * cols), cols)``.
Patches that were not kept are dimmed; kept ones keep their colours and get a green border.
Pure numpy/cv2.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

_DIM = 0.3
_BORDER = (0, 255, 0)


def kept_mask(kept_indices, token_grid: tuple[int, int, int], frames_per_group: int,
              frames: int) -> np.ndarray:
    """Which patch of which frame was kept.

    :param kept_indices: kept token indices into the clip's visual tokens; indices past
        ``groups * rows * cols`` (e.g. a trailing newline token) are ignored.
    :param token_grid: ``(groups, rows, cols)``.
    :param frames_per_group: frames one token group covers.
    :param frames: frames in the clip.
    :returns: ``(frames, rows, cols)`` bool.
    :raises ValueError: for an empty grid.
    """
    groups, rows, cols = (int(v) for v in token_grid)
    if min(groups, rows, cols) < 1:
        raise ValueError(f"token grid {token_grid} is empty; the backend gave no layout")
    per_group = rows * cols
    mask = np.zeros((frames, rows, cols), dtype=bool)  # (T, rows, cols)
    for index in np.asarray(kept_indices, dtype=np.int64).reshape(-1):
        if 0 <= index < groups * per_group:
            group, cell = divmod(int(index), per_group)
            first = group * frames_per_group
            mask[first:first + frames_per_group, cell // cols, cell % cols] = True
    return mask


def selection_tile(pixels: np.ndarray, kept_indices, token_grid: tuple[int, int, int],
                   frames_per_group: int = 1, cell: int = 160) -> np.ndarray:
    """Tile a clip's frames and highlight the kept patches.

    :param pixels: ``(T, H, W, 3)`` uint8 RGB frames of the clip.
    :param kept_indices: kept token indices (``ClipCaption.kept_indices``).
    :param token_grid: ``(groups, rows, cols)`` (``ClipCaption.token_grid``).
    :param frames_per_group: ``ClipCaption.frames_per_group``.
    :param cell: longest side of one tile, in pixels.
    :returns: ``(H', W', 3)`` uint8 RGB image, frames in rows of ``ceil(sqrt(T))``.
    :raises ValueError: for an empty token grid.
    """
    frames, height, width = pixels.shape[:3]
    mask = kept_mask(kept_indices, token_grid, frames_per_group, frames)  # (T, rows, cols)
    rows, cols = mask.shape[1:]
    scale = cell / max(height, width)
    size = (max(cols, round(width * scale)), max(rows, round(height * scale)))
    tiles = [_highlight(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), mask[t])
             for t, frame in enumerate(pixels)]
    per_row = math.ceil(math.sqrt(frames))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % per_row)
    lines = [np.concatenate(tiles[i:i + per_row], axis=1) for i in range(0, len(tiles), per_row)]
    return np.ascontiguousarray(np.concatenate(lines, axis=0))


def _highlight(tile: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Dim the patches of ``tile`` not marked in ``kept`` ``(rows, cols)``; frame the kept ones."""
    rows, cols = kept.shape
    height, width = tile.shape[:2]
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    mask = np.repeat(np.repeat(kept, np.diff(ys), axis=0), np.diff(xs), axis=1)  # (h, w)
    out = np.where(mask[:, :, None], tile, (tile * _DIM).astype(np.uint8))
    for r, c in zip(*np.nonzero(kept), strict=True):
        cv2.rectangle(out, (int(xs[c]), int(ys[r])), (int(xs[c + 1]) - 1, int(ys[r + 1]) - 1),
                      _BORDER, 1)
    return out
