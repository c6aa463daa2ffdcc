"""A deterministic synthetic camera scene, and a rosbag2 bag of it (``make demo``, tests)."""
from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from rats_ros.io.bags import write_image_bag
from rats_ros.samples import Frame


def write_sample_bag(path, seconds: float = 64.0, fps: float = 2.0,
                     size: tuple[int, int] = (320, 240), seed: int = 0,
                     storage: str = "sqlite3", compressed: bool = False,
                     topic: str = "/camera/image_raw") -> int:
    """Write :func:`sample_scene` as a bag (for ``make demo`` and tests).

    :returns: the number of messages written.
    """
    scene = sample_scene(seconds=seconds, fps=fps, size=size, seed=seed)
    return write_image_bag(path, scene, topic=topic, storage=storage, compressed=compressed)


def sample_scene(seconds: float = 64.0, fps: float = 2.0, size: tuple[int, int] = (320, 240),
                 seed: int = 0, start_ns: int = 1_700_000_000 * 1_000_000_000) -> Iterator[Frame]:
    """A deterministic synthetic scene: a red ball crossing a textured floor, a blue box that
    appears and disappears, a green bar sweeping up and down.

    :param seconds: duration.
    :param fps: frame rate.
    :param size: ``(width, height)``.
    :param seed: texture and motion seed (same seed, same frames).
    :param start_ns: stamp of the first frame.
    :returns: an iterator of ``int(seconds * fps)`` frames.
    """
    width, height = size
    rng = np.random.default_rng(seed)
    background = _texture(rng, width, height)  # (H, W, 3)
    speed, phase = rng.uniform(0.6, 1.4), rng.uniform(0, 2 * np.pi)
    for index in range(int(seconds * fps)):
        t = index / fps
        image = background.copy()
        _draw_scene(image, t, seconds, speed, phase)
        yield Frame(start_ns + round(t * 1e9), image)


def _texture(rng, width, height) -> np.ndarray:
    noise = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    tiles = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    gradient = np.linspace(60, 160, height, dtype=np.float32)[:, None, None]  # (H, 1, 1)
    return np.clip(0.3 * tiles + gradient, 0, 255).astype(np.uint8)


def _draw_scene(image, t, seconds, speed, phase) -> None:
    height, width = image.shape[:2]
    radius = max(2, min(width, height) // 10)
    ball_x = int((t * speed / max(seconds, 1e-9) * 2 % 1.0) * (width + 2 * radius)) - radius
    ball_y = int(height * (0.6 + 0.2 * np.sin(t + phase)))
    cv2.circle(image, (ball_x, ball_y), radius, (220, 30, 30), thickness=-1)
    if int(t // 8) % 2 == 1:  # the box is there every other 8 s
        box = (width // 6, height // 5, width // 3, height // 2)
        cv2.rectangle(image, box[:2], box[2:], (30, 60, 220), thickness=-1)
    bar_y = int((0.5 + 0.4 * np.sin(0.5 * t)) * height)
    cv2.rectangle(image, (width - width // 8, bar_y - 3), (width - 2, bar_y + 3), (40, 200, 40), -1)
