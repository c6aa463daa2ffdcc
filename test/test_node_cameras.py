"""Several cameras on one model, and "where" as well as "when": a real node with three camera
publishers and an odometry publisher over DDS on loopback."""
import math
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from helpers import wait_for
from nav_msgs.msg import Odometry
from rats_ros.msg import Caption
from rats_ros.srv import AskVideo
from rclpy.qos import QoSProfile
from ros_fixtures import (  # noqa: F401
    assert_no_traceback,
    diagnostics_values,
    ros_client,
    start_node,
    time_ns,
)
from sensor_msgs.msg import Image

from rats_ros.io.images import encode_raw

pytestmark = pytest.mark.ros
CAMERAS = ("front", "rear", "left")
NS = 1_000_000_000


def _image(stamp_s: float, camera: int) -> Image:
    rgb = np.full((64, 96, 3), 30 + 60 * camera, np.uint8)
    x = int(stamp_s * 10) % 80
    rgb[20:36, x:x + 16] = (250, 40 * camera, 90)
    encoding, width, height, step, data = encode_raw(rgb, "rgb8")
    msg = Image(encoding=encoding, width=width, height=height, step=step, data=data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_s * NS), NS)
    msg.header.frame_id = f"{CAMERAS[camera]}_optical"
    return msg


def _odometry(stamp_s: float, x: float, frame: str = "odom") -> Odometry:
    """The robot drives along x at 1 m/s: x = stamp - 100 s."""
    msg = Odometry()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_s * NS), NS)
    msg.header.frame_id = frame
    msg.pose.pose.position.x, msg.pose.pose.orientation.w = x, 1.0
    return msg


def test_three_cameras_one_model_poses_and_spatial_questions(tmp_path, domain_id,
                                                              ros_client):  # noqa: F811
    captions = ros_client.collect(Caption, "/robot/captions")
    diagnostics = ros_client.collect(DiagnosticArray, "/diagnostics")
    node = start_node(tmp_path, domain_id, qos_reliability="reliable", cameras=list(CAMERAS),
                      pose_topic="odom", pose_type="odometry", idle_flush=0.0,
                      remaps={"__ns": "/robot"})
    qos = QoSProfile(depth=50)
    images = [ros_client.node.create_publisher(Image, f"/robot/{c}/image", qos) for c in CAMERAS]
    odometry = ros_client.node.create_publisher(Odometry, "/robot/odom", qos)
    try:
        wait_for(lambda: all(p.get_subscription_count() for p in [*images, odometry]),
                 timeout=30)
        for step in range(49):  # poses every 0.25 s over 100..112 s
            odometry.publish(_odometry(100 + step * 0.25, step * 0.25))
        odometry.publish(_odometry(112.5, math.nan))           # refused: not finite
        odometry.publish(_odometry(112.75, 12.75, "map"))       # refused: another frame
        _publish(images, range(3), [100 + i * 0.5 for i in range(8)])  # 2 clips per camera
        wait_for(lambda: len(captions) >= 6, timeout=120)
        by_camera = {c: [m for m in captions if m.camera == c] for c in CAMERAS}
        assert all([m.clip_index for m in by_camera[c]] == [0, 1] for c in CAMERAS), by_camera
        for msg in captions:  # the pose at the clip's end: x = end - 100 s, in odom
            assert msg.has_pose and msg.pose_frame == "odom"
            assert msg.pose.position.x == pytest.approx(time_ns(msg.end) / NS - 100, abs=1e-6)
            assert msg.header.frame_id == f"{msg.camera}_optical"
        _publish(images, range(2), [104 + i * 0.5 for i in range(8)])  # "left" is silent
        wait_for(lambda: sum(m.camera in ("front", "rear") for m in captions) >= 8, timeout=120)
        assert [m.clip_index for m in captions if m.camera == "front"] == [0, 1, 2, 3]
        _ask_by_camera_and_place(ros_client)
        # /diagnostics comes once a second: the newest may predate front's fourth caption
        values = wait_for(lambda: diagnostics and _pose_refusals(diagnostics[-1], front="4"),
                          timeout=30)
        assert values["camera.front.clips_captioned"] == "4"
        assert values["camera.left.clips_captioned"] == "2"
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    log = node.log()
    assert "stream 'default/front', next clip index 0" in log
    assert "non_finite_pose" in log
    assert_no_traceback(log)


def _publish(publishers, cameras, stamps) -> None:
    for stamp in stamps:
        for camera in cameras:
            publishers[camera].publish(_image(stamp, camera))
        time.sleep(0.1)


def _pose_refusals(array, front: str | None = None):
    """The status values once both bad poses are counted (and ``front``'s clips, if given)."""
    values = diagnostics_values(array)
    if values.get("refused_pose.non_finite_pose") == "1" and \
            values.get("refused_pose.wrong_pose_frame") == "1" and \
            front in (None, values.get("camera.front.clips_captioned")):
        return values
    return None


def _ask_by_camera_and_place(ros_client) -> None:  # noqa: F811
    def ask(**fields):
        return ros_client.call(AskVideo, "/robot/ask_video",
                               AskVideo.Request(question="Where was the red square?", **fields),
                               retry_after=10.0)

    rear = ask(cameras=["rear"])
    assert rear.success, rear.message
    assert rear.evidence and {c.camera for c in rear.evidence} == {"rear"}
    near = ask(use_position=True, position=_point(1.5), radius=0.6)  # clip 0 ends at x = 1.5
    assert near.success, near.message
    assert len(near.evidence) == 3  # clip 0 of each camera, nothing else
    assert all(abs(c.pose.position.x - 1.5) <= 0.6 for c in near.evidence)
    everything = ask()
    assert {c.camera for c in everything.evidence} == set(CAMERAS)
    # "where": a pose to drive to, one of the evidence's, in the poses' frame at its clip's end
    assert near.has_target and near.target_pose.header.frame_id == "odom"
    chosen = [c for c in near.evidence if c.end == near.target_pose.header.stamp]
    assert chosen and chosen[0].pose == near.target_pose.pose
    assert ask(cameras=["rear"]).has_target

    unknown = ask(cameras=["roof"])
    assert not unknown.success and "unknown cameras ['roof']" in unknown.message
    nowhere = ask(use_position=True, position=_point(500.0), radius=1.0)
    assert not nowhere.success and "no captions with a pose within 1.0 m" in nowhere.message
    bad_radius = ask(use_position=True, position=_point(1.5), radius=0.0)
    assert not bad_radius.success and "radius > 0" in bad_radius.message


def _point(x: float):
    from geometry_msgs.msg import Point

    return Point(x=x, y=0.0, z=0.0)
