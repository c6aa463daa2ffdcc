"""The robot's recent poses, so each caption can say where its clip was seen.

:class:`PoseTrack` keeps the last poses (any source: odometry, a pose topic, AMCL; no ROS here),
sorted by stamp, and gives the one nearest in time to a clip's end stamp within a tolerance.
Poses that cannot be trusted (non-finite values, another frame than the track's, a zero stamp)
are refused with a reason, counted by the caller, and never stored.
"""
from __future__ import annotations

import bisect
import math
import threading

from rats_ros.errors import ConfigError
from rats_ros.samples import Pose

#: the reasons :meth:`PoseTrack.add` refuses a pose for
REFUSALS = ("non_finite_pose", "wrong_pose_frame", "zero_pose_stamp")


class PoseTrack:
    """Recent poses for nearest-in-time lookups. Thread-safe (a callback adds, the captioner
    reads).

    :param tolerance_s: a pose further than this from the asked stamp is not used.
    :param frame: the frame every pose must be in; empty = the frame of the first pose accepted.
    :param capacity: poses kept (the oldest go first); at 50 Hz, 4096 is 80 s.
    :raises ConfigError: a tolerance that is not > 0 or a capacity < 1.
    """

    def __init__(self, tolerance_s: float, frame: str = "", capacity: int = 4096):
        if not tolerance_s > 0 or capacity < 1:
            raise ConfigError(f"pose tolerance must be > 0 s and capacity >= 1, got "
                              f"{tolerance_s} s and {capacity}")
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.frame = frame
        self.capacity = capacity
        self._stamps: list[int] = []
        self._poses: list[Pose] = []
        self._lock = threading.Lock()

    def add(self, pose: Pose) -> str | None:
        """Keep one pose. :returns: None when kept, else the refusal reason (see REFUSALS)."""
        values = (pose.x, pose.y, pose.z, pose.qx, pose.qy, pose.qz, pose.qw)
        if not all(math.isfinite(v) for v in values):
            return "non_finite_pose"
        if pose.stamp_ns <= 0:
            return "zero_pose_stamp"
        with self._lock:
            if not self.frame:
                self.frame = pose.frame
            if pose.frame != self.frame:
                return "wrong_pose_frame"
            at = bisect.bisect(self._stamps, pose.stamp_ns)  # usually the end: poses come in order
            self._stamps.insert(at, pose.stamp_ns)
            self._poses.insert(at, pose)
            if len(self._stamps) > self.capacity:
                del self._stamps[0], self._poses[0]
        return None

    def nearest(self, stamp_ns: int) -> Pose | None:
        """The pose nearest in time to ``stamp_ns``, or None when none is within tolerance."""
        with self._lock:
            at = bisect.bisect(self._stamps, stamp_ns)
            near = [i for i in (at - 1, at) if 0 <= i < len(self._stamps)]
            if not near:
                return None
            best = min(near, key=lambda i: abs(self._stamps[i] - stamp_ns))
            if abs(self._stamps[best] - stamp_ns) > self.tolerance_ns:
                return None
            return self._poses[best]

    def place(self, caption) -> bool:
        """Give a caption record the pose nearest its clip's end (``end_ns``).

        :returns: False when no pose is near enough (the caption keeps ``has_pose`` false).
        """
        pose = self.nearest(caption.end_ns)
        if pose is None:
            return False
        for name, value in pose.record_fields().items():
            setattr(caption, name, value)
        return True

    def __len__(self) -> int:
        return len(self._stamps)
