"""Frames, clips and the clip assembler: sampling a stream by its stamps, grouping into clips.

The paper samples frames at a fixed rate (0.5 or 1 fps) and groups consecutive, non-overlapping
runs of 16 sampled frames into clips; the last clip of a finite stream may be shorter. Here the
rate is applied to the frames' own stamps (header stamps, bag times, video times), never to the
order or count of arrival, so a 30 Hz camera and a 10 Hz camera give the same clips.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from rats_ros.errors import ConfigError, FrameError
from rats_ros.samples import Frame

_NS_PER_S = 1_000_000_000
MIN_SIDE = 16      # px; smaller frames hold nothing a vision tower can see
MAX_ASPECT = 8.0   # longer:shorter side; beyond it, a squashed frame is noise


@dataclass(eq=False)
class Clip:
    """Consecutive sampled frames captioned together.

    :param frames: at least one frame, in stamp order.
    :raises FrameError: when ``frames`` is empty.
    """

    frames: list[Frame]

    def __post_init__(self):
        if not self.frames:
            raise FrameError("a clip needs at least one frame")

    @property
    def start_ns(self) -> int:
        """Stamp of the first frame."""
        return self.frames[0].stamp_ns

    @property
    def end_ns(self) -> int:
        """Stamp of the last frame."""
        return self.frames[-1].stamp_ns

    def __len__(self) -> int:
        return len(self.frames)

    def pixels(self) -> np.ndarray:
        """Stack the frames at the clip's most common frame size (the largest of equally common
        ones), so one odd frame, first or not, does not decide the clip's size.

        :returns: ``(T, H, W, 3)`` uint8 array.
        """
        sizes = Counter(frame.image.shape[:2] for frame in self.frames)
        height, width = max(sizes, key=lambda hw: (sizes[hw], hw[0] * hw[1]))
        images = [_resize_to(frame.image, width, height) for frame in self.frames]
        return np.stack(images)  # (T, H, W, 3)


def unusable_size(height: int, width: int) -> str | None:
    """Why a frame of this size cannot be captioned (None when it can): smaller than
    :data:`MIN_SIDE` on a side, or more elongated than :data:`MAX_ASPECT` to 1."""
    if min(height, width) < MIN_SIDE:
        return f"{width} x {height} px has a side under {MIN_SIDE} px"
    if max(height, width) > MAX_ASPECT * min(height, width):
        return f"{width} x {height} px is more elongated than {MAX_ASPECT:g}:1"
    return None


def _resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrinking = image.shape[0] * image.shape[1] > width * height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


@dataclass
class AssemblerStats:
    """Counters of a :class:`ClipAssembler` (all frames ever pushed)."""

    received: int = 0      # every pushed frame
    sampled: int = 0       # frames taken into a clip
    skipped: int = 0       # frames between two sample times (normal rate reduction)
    out_of_order: int = 0  # frames dropped because their stamp went slightly backwards
    repeated_stamps: int = 0  # frames dropped because they carry the previous frame's stamp
    time_jumps: int = 0    # large backward jumps (looping bag, sim time reset): sampling restarted
    clips: int = 0         # clips emitted by push() and flush()


@dataclass
class ClipAssembler:
    """Sample frames at ``fps`` by their stamps and group them into clips of ``clip_frames``.

    Sampling grid: anchored at the first frame's stamp ``t0``, sample times are
    ``t0 + n / fps``. A frame is taken when its stamp reaches the next sample time (a frame up to
    ``min(period / 8, 5 ms)`` early counts as on time, so stamp rounding and camera jitter don't
    skip it); the next sample time is then the first grid point after that stamp, so jitter never
    drifts the grid and a gap in the stream does not cause a burst of frames.

    Repeated stamps: a frame with the previous frame's stamp is a duplicate (a driver that does
    not stamp its frames), dropped and counted in ``stats.repeated_stamps``.

    Backward stamps: a step back smaller than ``time_jump_s`` is an out-of-order message; the
    frame is dropped and counted in ``stats.out_of_order``. A larger step back is a time jump
    (a looping bag, a simulator reset): the partial clip is emitted, sampling restarts on a new
    grid anchored at the new stamp, and ``stats.time_jumps`` counts it.

    API choice: :meth:`push` returns at most one clip. On a time jump it returns the flushed
    partial clip (or ``None`` when nothing was pending) and the jumping frame starts the next
    clip. Both cannot happen in one push: a pending partial clip means ``clip_frames >= 2``, so
    the one new frame cannot complete another clip.

    :param fps: sampling rate in frames per second, > 0.
    :param clip_frames: sampled frames per clip, >= 1.
    :param time_jump_s: a backward step of at least this many seconds is a time jump, > 0;
        None (default): two sampling periods, at least 1 s, so one late frame at a low rate is
        out of order, not the start of a new grid.
    :raises ConfigError: when a value is out of range.
    """

    fps: float
    clip_frames: int = 16
    time_jump_s: float | None = None
    stats: AssemblerStats = field(default_factory=AssemblerStats, init=False)

    def __post_init__(self):
        if not isinstance(self.fps, (int, float)) or not self.fps > 0 or self.fps == float("inf"):
            raise ConfigError(f"fps must be a finite number > 0 (e.g. 0.5 to 30), got {self.fps!r}")
        if isinstance(self.clip_frames, bool) or not isinstance(self.clip_frames, int) \
                or self.clip_frames < 1:
            raise ConfigError(
                f"clip_frames must be an int >= 1 (paper: 16), got {self.clip_frames!r}")
        if self.time_jump_s is None:
            self.time_jump_s = max(1.0, 2.0 / float(self.fps))
        if not isinstance(self.time_jump_s, (int, float)) or not self.time_jump_s > 0:
            raise ConfigError(f"time_jump_s must be > 0 seconds, got {self.time_jump_s!r}")
        self._period_ns = _NS_PER_S / float(self.fps)
        self._early_ns = min(self._period_ns / 8.0, 5e6)
        self._jump_ns = int(self.time_jump_s * _NS_PER_S)
        self._pending: list[Frame] = []
        self._anchor_ns: int | None = None   # t0 of the current sampling grid
        self._next_rel_ns: float = 0.0       # next sample time, relative to t0 (floats stay exact)
        self._last_ns: int | None = None     # newest accepted stamp (for backward checks)

    @property
    def pending(self) -> int:
        """Number of sampled frames waiting for their clip to fill."""
        return len(self._pending)

    def push(self, frame: Frame) -> Clip | None:
        """Offer one frame.

        :param frame: the next frame as received.
        :returns: a complete clip when this frame fills one; on a time jump, the flushed partial
            clip; otherwise ``None``.
        """
        self.stats.received += 1
        stamp = frame.stamp_ns
        flushed = None
        if stamp == self._last_ns:
            self.stats.repeated_stamps += 1
            return None
        if self._last_ns is not None and stamp < self._last_ns:
            if self._last_ns - stamp < self._jump_ns:
                self.stats.out_of_order += 1
                return None
            self.stats.time_jumps += 1
            flushed = self.flush()
            self._anchor_ns = None
        self._last_ns = stamp
        if self._anchor_ns is None:
            self._anchor_ns = stamp
            self._next_rel_ns = 0.0
        if stamp - self._anchor_ns + self._early_ns < self._next_rel_ns:
            self.stats.skipped += 1
            return flushed
        self._take(frame)
        if len(self._pending) >= self.clip_frames:
            return self._emit()
        return flushed

    def flush(self) -> Clip | None:
        """Emit the partial clip of the frames sampled so far (end of a finite stream).

        :returns: the partial clip, or ``None`` when no frame is pending.
        """
        if not self._pending:
            return None
        return self._emit()

    def _take(self, frame: Frame) -> None:
        self.stats.sampled += 1
        self._pending.append(frame)
        relative = frame.stamp_ns - self._anchor_ns + self._early_ns
        self._next_rel_ns = (int(relative // self._period_ns) + 1) * self._period_ns

    def _emit(self) -> Clip:
        clip = Clip(self._pending)
        self._pending = []
        self.stats.clips += 1
        return clip
