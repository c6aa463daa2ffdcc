"""The subscriptions' side of the node: decode, check and stamp each camera's frames and queue
them (:class:`FrameIntake`); keep the robot's poses (:class:`PoseIntake`).

Runs in the subscription callback (its own callback group): no model, no waiting. Every refused
frame is counted by reason on /diagnostics with a rate-limited warning that names the cause.
"""
from __future__ import annotations

import time

from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CompressedImage, Image

from rats_ros.errors import FrameError
from rats_ros.io.images import (
    SUPPORTED_ENCODINGS,
    ImageTooLarge,
    decode_compressed,
    decode_raw,
)
from rats_ros.io.raw_formats import DEPTH_ENCODINGS
from rats_ros.ros.messages import time_to_ns
from rats_ros.samples import Frame, Pose
from rats_ros.stream.clips import unusable_size
from rats_ros.stream.poses import PoseTrack

_WARN_EVERY_S = 5.0
_OUT_OF_MEMORY = FrameError("out of memory while decoding the frame: the process is short of "
                            "memory; lower max_image_side or free memory on the machine")


class FrameIntake:
    """Image callbacks of one camera of the ``rats_stream`` node (its ``params``, ``frames``,
    ``stats``).

    :param node: the node; its ``frame_ids[camera]`` is set from the frames' headers.
    :param camera: the camera's name (``""``: the single unnamed camera).
    """

    def __init__(self, node, camera: str = ""):
        self.node, self.camera = node, camera
        self._last_warning: dict[str, float] = {}

    def on_image(self, msg: Image) -> None:
        self.node.stats.heard(self.camera)
        try:
            rgb = decode_raw(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                             msg.is_bigendian, max_side=self.node.params.max_image_side,
                             depth=self.node.params.depth_images)
        except FrameError as error:
            self._refuse(_raw_reason(msg), error)
            return
        except MemoryError:
            self._refuse("out_of_memory", _OUT_OF_MEMORY)
            return
        self._queue(msg.header, rgb)

    def on_compressed(self, msg: CompressedImage) -> None:
        self.node.stats.heard(self.camera)
        try:
            rgb = decode_compressed(msg.format, msg.data, max_side=self.node.params.max_image_side)
        except FrameError as error:
            self._refuse("too_many_pixels" if isinstance(error, ImageTooLarge)
                         else "undecodable_compressed", error)
            return
        except MemoryError:
            self._refuse("out_of_memory", _OUT_OF_MEMORY)
            return
        self._queue(msg.header, rgb)

    def _queue(self, header, rgb) -> None:
        """Queue one frame stamped with its header stamp; a zero stamp is refused: a substitute
        from the node's clock, mixed with a driver's real stamps, made clips span decades."""
        stamp_ns = time_to_ns(header.stamp)
        unusable = unusable_size(*rgb.shape[:2])
        if unusable:
            self._refuse("unusable_size", FrameError(
                f"frame of {unusable} (after the downscale to max_image_side): send camera "
                "frames of an ordinary shape"))
            return
        if stamp_ns == 0:
            self._refuse("zero_stamp", FrameError(
                "the image's header stamp is zero: the camera driver does not stamp its frames; "
                "fix the driver (clips are sampled by header stamps)"))
            return
        try:
            frame = Frame(stamp_ns, rgb)
        except FrameError as error:  # a negative header stamp
            self._refuse("bad_stamp", error)
            return
        self.node.frame_ids[self.camera] = header.frame_id
        if self.node.frames.put((self.camera, frame)):
            self.node.stats.drop("queue_full")
        self.node.stats.frame(self.camera)

    def _refuse(self, reason: str, error: FrameError) -> None:
        count = self.node.stats.refuse(reason, self.camera)
        now = time.monotonic()
        if now - self._last_warning.get(reason, -1e9) >= _WARN_EVERY_S:
            self._last_warning[reason] = now
            where = f" of camera {self.camera}" if self.camera else ""
            self.node.get_logger().warning(
                f"refused frame{where} ({reason}, {count} so far): {error}")


#: message type of each ``pose_type``, and how to reach its ``geometry_msgs/Pose``
POSE_TYPES = {"odometry": (Odometry, lambda msg: msg.pose.pose),
              "pose": (PoseStamped, lambda msg: msg.pose),
              "amcl": (PoseWithCovarianceStamped, lambda msg: msg.pose.pose)}


class PoseIntake:
    """The pose subscription's callback: each pose into the node's track, refusals counted
    (``refused_pose.<reason>`` on /diagnostics) with a rate-limited warning.

    :param node: the node (``stats``, logger).
    :param track: the :class:`~rats_ros.stream.poses.PoseTrack` the worker reads.
    :param pose_type: a key of :data:`POSE_TYPES`.
    """

    def __init__(self, node, track: PoseTrack, pose_type: str):
        self.node, self.track = node, track
        self.msg_type, self._pose_of = POSE_TYPES[pose_type]
        self._last_warning = -1e9

    def on_pose(self, msg) -> None:
        reason = self.track.add(Pose.of(time_to_ns(msg.header.stamp), self._pose_of(msg),
                                        msg.header.frame_id))
        if reason is None:
            self.node.stats.count("poses_received")
            return
        self.node.stats.count(f"refused_pose.{reason}")
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            self.node.get_logger().warning(
                f"refused a pose ({reason}, frame {msg.header.frame_id!r}; the track's frame "
                f"is {self.track.frame!r}): send finite, stamped poses in one frame")


def _raw_reason(msg: Image) -> str:
    """Why a raw image was refused, as a short counter key."""
    if msg.encoding in DEPTH_ENCODINGS:
        return "depth_image"
    if msg.encoding not in SUPPORTED_ENCODINGS:
        return "unsupported_encoding"
    if msg.width == 0 or msg.height == 0:
        return "zero_size"
    return "bad_step_or_size"
