"""The synthetic world: a few coloured shapes entering, moving, stopping and leaving a room.

Time is cut into clips of :data:`CLIP_FRAMES` frames, :data:`FRAME_INTERVAL_S` apart (the node's
defaults: 0.5 fps, 16 frames per clip). Each object does one thing per clip (stay away, enter,
leave, move one way, stay still), so every clip has an exact description; within a clip it moves
in a straight line. Objects are drawn in a fixed order, so later ones can occlude earlier ones.
Coordinates are fractions of the frame side; the frame is square.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rats_ros.samples import Frame
from rats_ros.stream.clips import Clip

CLIP_FRAMES = 16
FRAME_INTERVAL_S = 2.0
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 70), "blue": (50, 90, 235),
           "yellow": (235, 215, 40), "white": (240, 240, 240)}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
HALF = 0.1          # half the side of an object
INNER = (0.15, 0.85)  # where object centres may rest
MOVE = (0.3, 0.5)     # how far a moving object goes in one clip: 1.2 to 2 token cells
START_NS = 1_700_000_000 * 1_000_000_000


@dataclass(frozen=True)
class Thing:
    """One object of a world: a unique colour and a shape."""

    colour: str
    shape: str

    @property
    def name(self) -> str:
        """:returns: e.g. ``red square``."""
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Action:
    """What one object does during one clip.

    :param kind: ``absent``, ``enter``, ``leave``, ``move`` or ``still``.
    :param start: centre ``(x, y)`` at the clip's first frame.
    :param end: centre at its last frame.
    :param direction: for ``move``: left, right, up or down.
    """

    kind: str
    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.0, 0.0)
    direction: str = ""

    def at(self, fraction: float) -> tuple[float, float]:
        """:returns: the centre after ``fraction`` (0..1) of the clip."""
        return tuple(a + (b - a) * fraction for a, b in zip(self.start, self.end, strict=True))


@dataclass
class World:
    """A generated world: its objects and, per clip, one action per object.

    :param things: the objects, in drawing order.
    :param actions: ``actions[clip][i]`` is what ``things[i]`` does in that clip.
    :param seed: the generator's seed (background texture too).
    """

    things: list[Thing]
    actions: list[list[Action]]
    seed: int

    @property
    def clips(self) -> int:
        return len(self.actions)


def generate(seed: int, clips: int, objects: int | None = None) -> World:
    """A random world of ``clips`` clips; every object starts outside the room.

    :param objects: how many objects (default: 3 or 4 at random).
    """
    rng = np.random.default_rng(seed)
    count = int(objects or rng.integers(3, 5))
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    things = [Thing(str(c), str(rng.choice(SHAPES))) for c in colours]
    state = [_Track() for _ in things]
    actions = [[track.next(rng) for track in state] for _ in range(clips)]
    return World(things, actions, seed)


class _Track:
    """One object's state between clips: where it is and what it did last."""

    def __init__(self):
        self.inside, self.position, self.last, self.stay = False, (0.5, 0.5), None, 0

    def next(self, rng) -> Action:
        action = self._inside_action(rng) if self.inside else self._outside_action(rng)
        self.inside = action.kind in ("enter", "move", "still")
        self.position, self.last = action.end, action
        self.stay = self.stay + 1 if action.kind in ("absent", "move", "still") else 0
        return action

    def _outside_action(self, rng) -> Action:
        if rng.random() > 0.4:
            return Action("absent", self.position, self.position)
        target = tuple(float(v) for v in rng.uniform(*INNER, size=2))
        edge = DIRECTIONS[str(rng.choice(list(DIRECTIONS)))]
        start = _outside(target, edge)
        return Action("enter", start, target)

    def _inside_action(self, rng) -> Action:
        x, y = self.position
        roll = rng.random()
        if self.stay >= 2 and roll < 0.15:
            nearest = min(DIRECTIONS, key=lambda d: _room_left((x, y), DIRECTIONS[d]))
            return Action("leave", (x, y), _outside((x, y), DIRECTIONS[nearest]))
        if roll < 0.6:
            feasible = [d for d, v in DIRECTIONS.items() if _room_left((x, y), v) >= MOVE[0]]
            last = self.last.direction if self.last is not None else ""
            if feasible:
                keep = last in feasible and rng.random() < 0.6
                direction = last if keep else str(rng.choice(feasible))
                dx, dy = DIRECTIONS[direction]
                step = float(rng.uniform(MOVE[0], min(MOVE[1], _room_left((x, y), (dx, dy)))))
                return Action("move", (x, y), (x + dx * step, y + dy * step), direction)
        return Action("still", (x, y), (x, y))


def _room_left(position, direction) -> float:
    """Distance from ``position`` to the edge of the resting area along ``direction``."""
    (x, y), (dx, dy) = position, direction
    low, high = INNER
    return (high - x if dx > 0 else x - low) if dx else (high - y if dy > 0 else y - low)


def _outside(position, direction) -> tuple[float, float]:
    """``position`` pushed along ``direction`` until the object is just out of the frame."""
    (x, y), (dx, dy) = position, direction
    out = 1.0 + HALF + 0.02
    return (out if dx > 0 else -HALF - 0.02, y) if dx else (x, out if dy > 0 else -HALF - 0.02)


# ---- rendering ----------------------------------------------------------------------------
def background(seed: int, size: int) -> np.ndarray:
    """:returns: ``(size, size, 3)`` uint8 grey floor with a faint texture."""
    rng = np.random.default_rng(seed + 7919)
    coarse = rng.integers(60, 100, (8, 8, 1)).astype(np.float32)
    floor = np.kron(coarse, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
    return np.repeat(floor, 3, axis=2).astype(np.uint8)


def centres(world: World, clip: int, frame: int) -> list[tuple[float, float] | None]:
    """:returns: each object's centre at that frame, None where it is away."""
    fraction = frame / (CLIP_FRAMES - 1)
    return [None if a.kind == "absent" else a.at(fraction) for a in world.actions[clip]]


def masks(world: World, clip: int, frame: int, size: int) -> np.ndarray:
    """Which object each pixel shows (after occlusion).

    :returns: ``(size, size)`` int8: the index of the visible object, -1 for the floor.
    """
    owner = np.full((size, size), -1, dtype=np.int8)
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    xs, ys = axis[None, :], axis[:, None]
    for index, (thing, centre) in enumerate(
            zip(world.things, centres(world, clip, frame), strict=True)):
        if centre is not None:
            owner[shape_mask(thing.shape, xs - np.float32(centre[0]),
                             ys - np.float32(centre[1]))] = index
    return owner


def shape_mask(shape: str, dx, dy):
    """Pixels inside ``shape`` given their offsets from its centre (numpy arrays or torch
    tensors alike, so the GPU renderer of :mod:`.train` draws the same pixels).

    :returns: a boolean array of the offsets' broadcast shape.
    """
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= HALF ** 2
    if shape == "square":
        return (abs(dx) <= HALF * 0.9) & (abs(dy) <= HALF * 0.9)
    # triangle, apex up: the half-width grows from 0 at the top to HALF at the base
    inside_y = (dy >= -HALF) & (dy <= HALF)
    return inside_y & (abs(dx) <= (dy + HALF) / 2)


def render(world: World, clip: int, frame: int, size: int = 128,
           floor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One frame and its ownership mask.

    :returns: ``(size, size, 3)`` uint8 RGB and ``(size, size)`` int8 owners (see :func:`masks`).
    """
    owner = masks(world, clip, frame, size)
    image = (background(world.seed, size) if floor is None else floor).copy()
    for index, thing in enumerate(world.things):
        image[owner == index] = COLOURS[thing.colour]
    return image, owner


def clip_pixels(world: World, clip: int, size: int = 128) -> np.ndarray:
    """:returns: ``(CLIP_FRAMES, size, size, 3)`` uint8 frames of one clip."""
    floor = background(world.seed, size)
    return np.stack([render(world, clip, f, size, floor)[0] for f in range(CLIP_FRAMES)])


def frames(world: World, size: int = 128, start_ns: int = START_NS) -> Iterator[Frame]:
    """The world as a stamped frame stream (what a camera would publish)."""
    floor = background(world.seed, size)
    step = round(FRAME_INTERVAL_S * 1e9)
    for clip in range(world.clips):
        for f in range(CLIP_FRAMES):
            yield Frame(start_ns + (clip * CLIP_FRAMES + f) * step,
                        render(world, clip, f, size, floor)[0])


def clips(world: World, size: int = 128) -> Iterator[Clip]:
    """The world's stream cut at its clip boundaries (what the assembler gives at 0.5 fps)."""
    stream = frames(world, size)
    for _ in range(world.clips):
        yield Clip([next(stream) for _ in range(CLIP_FRAMES)])
