"""Records and stamps as ROS messages: ``builtin_interfaces/Time`` and ``rats_ros/Caption``."""
from __future__ import annotations

from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from std_msgs.msg import Header

from rats_ros.msg import Caption
from rats_ros.records import POSE_FIELDS, record_values

_NS = 1_000_000_000


def time_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` -> int nanoseconds."""
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def ns_to_time(stamp_ns: int) -> TimeMsg:
    """Int nanoseconds -> ``builtin_interfaces/Time``."""
    sec, nanosec = divmod(int(stamp_ns), _NS)
    return TimeMsg(sec=sec, nanosec=nanosec)


def caption_msg(caption, frame_id: str, model: str, robot: str | None = None) -> Caption:
    """A caption record (``ClipCaption``, ``StoredCaption``) as a ``rats_ros/Caption``: every
    record field by name, ``start_ns``/``end_ns`` as times, the ``pose_*`` fields as one
    ``geometry_msgs/Pose``, stamped with the clip's end."""
    values = record_values(caption, model=model)
    start, end = ns_to_time(values.pop("start_ns")), ns_to_time(values.pop("end_ns"))
    x, y, z, qx, qy, qz, qw = (values.pop(name) for name in POSE_FIELDS)
    pose = Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))
    robot = getattr(caption, "robot", "") if robot is None else robot
    return Caption(header=Header(stamp=end, frame_id=frame_id), start=start, end=end, pose=pose,
                   robot=robot, **values)


def target_pose(caption) -> PoseStamped:
    """The pose of a caption with a pose, as where to go: stamped with its clip's end, in the
    poses' frame (``AskVideo.Response.target_pose``)."""
    msg = caption_msg(caption, caption.pose_frame, caption.model)
    return PoseStamped(header=Header(stamp=msg.end, frame_id=caption.pose_frame), pose=msg.pose)
