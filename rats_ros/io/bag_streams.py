"""Several cameras and the robot's poses from one rosbag2 bag, in log order.

:func:`read_cameras` yields each image message of the chosen topics as ``(camera, Frame)`` and
each message of the pose topic as ``(None, Pose)``, interleaved as they were recorded, so a
caller can keep a pose track current while it captions every camera with the same model.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rats_ros.errors import FrameError, InputError
from rats_ros.io.bags import (
    _TYPESTORE,
    _bag_path,
    _deserialize_frame,
    _messages,
    _open_reader,
    _report,
    _stamp_ns,
    list_image_topics,
)
from rats_ros.samples import Pose

#: pose message types read from bags, and how to reach their ``geometry_msgs/Pose``
POSE_TYPES = {"nav_msgs/msg/Odometry": lambda msg: msg.pose.pose,
              "geometry_msgs/msg/PoseStamped": lambda msg: msg.pose,
              "geometry_msgs/msg/PoseWithCovarianceStamped": lambda msg: msg.pose.pose}
_TRANSPORT_SUFFIXES = ("/compressed", "/image_raw", "/image_rect", "/image_color", "/image")


def camera_name(topic: str) -> str:
    """A camera name from its image topic: ``/front/image_raw`` -> ``front``,
    ``/cam/left/image/compressed`` -> ``cam/left``; a bare ``/image`` -> ``image``."""
    name = topic.strip("/")
    for suffix in _TRANSPORT_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    name = re.sub(r"[^A-Za-z0-9_/]", "_", name).strip("/") or topic.strip("/") or "image"
    return "/".join(part if part[:1].isalpha() else f"c{part}" for part in name.split("/"))


def pick_cameras(path, topics: list[str] | None) -> dict[str, tuple[str, str]]:
    """The cameras to caption: ``{camera name: (topic, msgtype)}``.

    :param topics: image topics to use; None: every image topic with messages.
    :raises InputError: a topic that is not an image topic of the bag, or none with messages.
    """
    bag = _bag_path(path)
    listing = {name: (msgtype, count) for name, msgtype, count in list_image_topics(bag)}
    for topic in topics or ():
        if topic not in listing:
            raise InputError(f"bag {str(bag)!r} has no image topic {topic!r}; image topics: "
                             f"{', '.join(listing) or 'none'}")
    chosen = topics or [name for name, (_, count) in listing.items() if count]
    if not listing:
        raise InputError(f"bag {str(bag)!r} has no sensor_msgs Image or CompressedImage topic")
    if not chosen or not any(listing[topic][1] for topic in chosen):
        raise InputError(f"the image topics {list(topics or listing)} of bag {str(bag)!r} "
                         "has no messages; record camera images into it")
    cameras = {camera_name(topic): (topic, listing[topic][0]) for topic in chosen}
    if len(cameras) < len(chosen):
        raise InputError(f"topics {chosen} give the same camera name twice; pick them with "
                         "--topics so that each camera has a distinct name")
    return cameras


def read_cameras(path, cameras: dict[str, tuple[str, str]], pose_topic: str | None = None,
                 max_side: int | None = 768, on_error=None) -> Iterator[tuple]:
    """Frames of several cameras and poses, in log order.

    :param cameras: from :func:`pick_cameras`.
    :param pose_topic: a ``nav_msgs/Odometry``, ``PoseStamped`` or ``PoseWithCovarianceStamped``
        topic of the bag, or None.
    :returns: an iterator of ``(camera, Frame)`` and ``(None, Pose)``.
    :raises InputError: the pose topic is missing or of another type; the bag is corrupt.
    """
    bag = _bag_path(path)
    reader = _open_reader(bag)
    try:
        by_topic = {topic: (camera, msgtype) for camera, (topic, msgtype) in cameras.items()}
        pose_type = _pose_type(reader, bag, pose_topic)
        for connection, log_ns, raw in _messages(bag, reader, {*by_topic, pose_topic}):
            if connection.topic == pose_topic:
                yield None, _pose(raw, pose_type, log_ns)
                continue
            camera, msgtype = by_topic[connection.topic]
            try:
                yield camera, _deserialize_frame(raw, msgtype, log_ns, max_side)
            except FrameError as error:
                _report(on_error, log_ns, error)
    finally:
        reader.close()


def _pose_type(reader, bag, pose_topic) -> str | None:
    if pose_topic is None:
        return None
    types = {c.msgtype for c in reader.connections if c.topic == pose_topic}
    if not types & set(POSE_TYPES):
        found = ", ".join(sorted(types)) or "no such topic"
        raise InputError(f"--pose-topic {pose_topic!r} of bag {str(bag)!r}: {found}; give a "
                         f"topic of type {', '.join(POSE_TYPES)}")
    return next(iter(types & set(POSE_TYPES)))


def _pose(raw, msgtype, log_ns) -> Pose:
    msg = _TYPESTORE.deserialize_cdr(raw, msgtype)
    return Pose.of(_stamp_ns(msg, log_ns), POSE_TYPES[msgtype](msg), msg.header.frame_id)


def write_camera_bag(path, cameras: dict, poses=(), pose_topic: str = "/odom",
                     storage: str = "sqlite3") -> int:
    """Write a real rosbag2 bag with several image topics and ``nav_msgs/Odometry`` poses
    (log time = stamp), as a robot's recorder would.

    :param cameras: ``{topic: frames}`` (raw ``rgb8`` images, frame id = the camera's name).
    :param poses: :class:`~rats_ros.samples.Pose` items for ``pose_topic``.
    :returns: the number of messages written.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    from rats_ros.io.bags import _BAG_VERSION, serialize_image

    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    items = [(frame.stamp_ns, topic, frame) for topic, frames in cameras.items()
             for frame in frames] + [(pose.stamp_ns, pose_topic, pose) for pose in poses]
    with Writer(Path(path), version=_BAG_VERSION, storage_plugin=plugin) as writer:
        odometry = "nav_msgs/msg/Odometry"
        connections = {topic: writer.add_connection(topic, "sensor_msgs/msg/Image",
                                                    typestore=_TYPESTORE) for topic in cameras}
        if poses:
            connections[pose_topic] = writer.add_connection(pose_topic, odometry,
                                                            typestore=_TYPESTORE)
        for stamp, topic, item in sorted(items, key=lambda entry: (entry[0], entry[1])):
            if topic == pose_topic and poses:
                raw = _TYPESTORE.serialize_cdr(_odometry_msg(item), odometry)
            else:
                raw = serialize_image(item, frame_id=camera_name(topic))[1]
            writer.write(connections[topic], stamp, raw)
    return len(items)


def _odometry_msg(pose: Pose):
    types = _TYPESTORE.types
    stamp = types["builtin_interfaces/msg/Time"](sec=pose.stamp_ns // 1_000_000_000,
                                                 nanosec=pose.stamp_ns % 1_000_000_000)
    point = types["geometry_msgs/msg/Point"](x=pose.x, y=pose.y, z=pose.z)
    quaternion = types["geometry_msgs/msg/Quaternion"](x=pose.qx, y=pose.qy, z=pose.qz,
                                                       w=pose.qw)
    covariance = types["geometry_msgs/msg/PoseWithCovariance"](
        pose=types["geometry_msgs/msg/Pose"](position=point, orientation=quaternion),
        covariance=np.zeros(36))
    zero = types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    twist = types["geometry_msgs/msg/TwistWithCovariance"](
        twist=types["geometry_msgs/msg/Twist"](linear=zero, angular=zero),
        covariance=np.zeros(36))
    return types["nav_msgs/msg/Odometry"](
        header=types["std_msgs/msg/Header"](stamp=stamp, frame_id=pose.frame),
        child_frame_id="base_link", pose=covariance, twist=twist)
