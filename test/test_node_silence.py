"""A camera whose topic goes quiet is reported on /diagnostics, whatever the cause: a driver that
died, a wrong remapping, or frames lost inside DDS before they reach the node (a hostile tryout
capped the process's memory and saw Fast DDS drop every frame with /diagnostics at OK)."""
import threading

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from helpers import wait_for
from rclpy.qos import QoSProfile
from ros_fixtures import (  # noqa: F401
    assert_no_traceback,
    diagnostics_values,
    ros_client,
    start_node,
)
from sensor_msgs.msg import Image

from rats_ros.io.images import encode_raw

pytestmark = pytest.mark.ros
NS = 1_000_000_000


class Camera:
    """A publisher of small frames at 10 Hz on its own thread while ``on`` is set."""

    def __init__(self, ros_client, topic: str):  # noqa: F811
        self.publisher = ros_client.node.create_publisher(Image, topic, QoSProfile(depth=10))
        self.on, self._stop, self._stamp = threading.Event(), threading.Event(), 100.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            if self.on.is_set():
                encoding, width, height, step, data = encode_raw(
                    np.full((32, 48, 3), 90, np.uint8), "rgb8")
                msg = Image(encoding=encoding, width=width, height=height, step=step, data=data)
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(self._stamp * NS),
                                                                         NS)
                self._stamp += 0.1
                self.publisher.publish(msg)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _status(diagnostics, level, *words):
    """The newest rats_stream values whose level is ``level`` and whose message has ``words``."""
    values = diagnostics_values(diagnostics[-1]) if diagnostics else {}
    if values.get("_level") == level and all(w in values["_message"] for w in words):
        return values
    return None


def test_a_silent_camera_is_warned_about_by_topic_and_cleared_when_it_speaks(
        tmp_path, domain_id, ros_client):  # noqa: F811
    diagnostics = ros_client.collect(DiagnosticArray, "/diagnostics")
    node = start_node(tmp_path, domain_id, qos_reliability="reliable", input_timeout_s=1.5,
                      cameras=["front", "rear"], idle_flush=0.0)
    front, rear = Camera(ros_client, "/front/image"), Camera(ros_client, "/rear/image")
    try:
        wait_for(lambda: front.publisher.get_subscription_count() and
                 rear.publisher.get_subscription_count(), timeout=30)
        front.on.set()  # rear never publishes: a wrong remapping looks like this
        values = wait_for(lambda: _status(diagnostics, DiagnosticStatus.WARN,
                                          "/rear/image since activation"), timeout=30)
        assert "/front/image" not in values["_message"], values["_message"]
        assert float(values["camera.rear.seconds_since_message"]) >= 1.5  # shown to 0.1 s
        assert float(values["camera.front.seconds_since_message"]) < 1.5
        # the same WARN in the node's log (rate-limited): a console without ros2 tools shows it
        node.wait_log("no image message on /rear/image since activation", timeout=30)
        rear.on.set()
        wait_for(lambda: diagnostics_values(diagnostics[-1]).get("_level") == DiagnosticStatus.OK,
                 timeout=30)
        front.on.clear()  # the front driver dies
        values = wait_for(lambda: _status(diagnostics, DiagnosticStatus.WARN,
                                          "/front/image for "), timeout=30)
        assert "/rear/image" not in values["_message"], values["_message"]
        assert "check the camera driver" in values["_message"]
    finally:
        front.close()
        rear.close()
        assert node.stop() == 0, node.log()[-3000:]
    assert_no_traceback(node.log())
