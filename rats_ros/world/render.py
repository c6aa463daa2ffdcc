"""Frames and per-token labels of many worlds at once, drawn on the training device.

The shapes come from :func:`rats_ros.world.scene.shape_mask`, the formula the numpy renderer
uses, so training sees the pixels the demo and the evaluation publish (a test checks equality).
"""
from __future__ import annotations

import torch

from rats_ros.world import scene
from rats_ros.world.evaluate import OBJECT_SHARE

RENDER_SIZE = 128  # px: frames are drawn at the size the demo and the evaluation publish


def render_frames(worlds: list[scene.World], clip: int, floors: torch.Tensor,
                  size: int = RENDER_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one clip of each world on the floors' device, as :func:`scene.render` does.

    :param floors: ``(B, size, size, 3)`` uint8 backgrounds.
    :returns: ``(B, T, size, size, 3)`` uint8 frames and ``(B, T, size, size)`` owners (the
        index of the object each pixel shows, -1 for the floor).
    """
    device, frames = floors.device, scene.CLIP_FRAMES
    axis = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    xs, ys = axis.view(1, 1, size), axis.view(1, size, 1)
    out = floors[:, None].repeat(1, frames, 1, 1, 1)  # (B, T, S, S, 3)
    owner = torch.full(out.shape[:4], -1, device=device, dtype=torch.long)
    for b, world in enumerate(worlds):
        per_frame = [scene.centres(world, clip, f) for f in range(frames)]  # [T][object]
        for index, thing in enumerate(world.things):
            found = [centres[index] for centres in per_frame]
            if found[0] is None and found[-1] is None:
                continue
            c = torch.tensor(found, device=device, dtype=torch.float32)  # (T, 2)
            mask = scene.shape_mask(thing.shape, xs - c[:, :1, None], ys - c[:, 1:, None])
            colour = torch.tensor(scene.COLOURS[thing.colour], device=device, dtype=torch.uint8)
            out[b][mask] = colour
            owner[b][mask] = index
    return out, owner


MOTIONS = ("still", "enter", "leave", *scene.DIRECTIONS)  # motion classes 1..; 0 is the floor


def token_labels(worlds: list[scene.World], clip: int, owner: torch.Tensor,
                 grid: int) -> torch.Tensor:
    """What each visual token shows, for the auxiliary losses: per token cell the object covering
    the largest share (at least :data:`~rats_ros.world.evaluate.OBJECT_SHARE`), as its colour,
    its shape and what it does in this clip (:data:`MOTIONS`); class 0 is the floor.

    :param owner: ``(B, T, S, S)`` from :func:`render_frames` for ``clip``; ``grid``: tokens
        per side.
    :returns: ``(3, B, T * grid * grid)`` colour, shape and motion classes.
    """
    b, t, s = owner.shape[:3]
    most = max(len(w.things) for w in worlds)
    shares = torch.stack([(owner == k).float() for k in range(most)], dim=-1)  # (B,T,S,S,K)
    shares = shares.view(b, t, grid, s // grid, grid, s // grid, most).mean(dim=(3, 5))
    best, which = shares.max(dim=-1)  # (B, T, g, g)
    palette, shapes = list(scene.COLOURS), list(scene.SHAPES)
    lookup = torch.zeros(3, b, most, dtype=torch.long)
    for i, world in enumerate(worlds):
        for k, thing in enumerate(world.things):
            action = world.actions[clip][k]
            lookup[0, i, k] = 1 + palette.index(thing.colour)
            lookup[1, i, k] = 1 + shapes.index(thing.shape)
            lookup[2, i, k] = 1 + MOTIONS.index(action.direction or action.kind) \
                if action.kind != "absent" else 0
    lookup = lookup.to(owner.device)
    labels = torch.stack([lookup[j].gather(1, which.view(b, -1)) for j in range(3)])
    return labels.masked_fill((best < OBJECT_SHARE).view(1, b, -1), 0)
