"""The samples every layer passes along: a camera :class:`Frame` and a robot :class:`Pose`.

They sit beside :mod:`rats_ros.records` (the caption record) because the file readers
(:mod:`rats_ros.io`), the streaming loop (:mod:`rats_ros.stream`) and the ROS intake all make or
consume them; none of those layers owns them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rats_ros.errors import FrameError


@dataclass(frozen=True, eq=False)
class Frame:
    """One RGB image and its stamp.

    :param stamp_ns: time of the image in integer nanoseconds (header stamp or bag/video time).
    :param image: ``(H, W, 3)`` uint8 RGB array.
    :raises FrameError: when the image is not a non-empty ``(H, W, 3)`` uint8 array or the stamp
        is not a non-negative integer.
    """

    stamp_ns: int
    image: np.ndarray

    def __post_init__(self):
        stamp = self.stamp_ns
        if isinstance(stamp, bool) or not isinstance(stamp, (int, np.integer)) or stamp < 0:
            raise FrameError(
                f"frame stamp must be a non-negative int of nanoseconds, got {stamp!r}")
        object.__setattr__(self, "stamp_ns", int(stamp))
        image = self.image
        if not isinstance(image, np.ndarray):
            raise FrameError(f"frame image must be a numpy array, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FrameError(
                f"frame image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype "
                f"{image.dtype}; decode it with rats_ros.io.images first")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise FrameError(f"frame image is empty: shape {image.shape}")


@dataclass(frozen=True)
class Pose:
    """One pose: position (m) and orientation quaternion in ``frame`` at ``stamp_ns``."""

    stamp_ns: int
    x: float
    y: float
    z: float
    qx: float = 0.0
    qy: float = 0.0
    qz: float = 0.0
    qw: float = 1.0
    frame: str = ""

    @classmethod
    def of(cls, stamp_ns: int, pose, frame: str) -> Pose:
        """From any ``geometry_msgs/Pose``-shaped object (a ROS message, a rosbags one)."""
        p, q = pose.position, pose.orientation
        return cls(stamp_ns, p.x, p.y, p.z, q.x, q.y, q.z, q.w, frame)

    def record_fields(self) -> dict:
        """The caption record's pose fields (:data:`rats_ros.records.POSE_FIELDS`)."""
        return {"has_pose": True, "pose_x": self.x, "pose_y": self.y, "pose_z": self.z,
                "pose_qx": self.qx, "pose_qy": self.qy, "pose_qz": self.qz,
                "pose_qw": self.qw, "pose_frame": self.frame}
