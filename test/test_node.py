"""The node process on its own: names, QoS, service before captions, diagnostics, SIGINT."""
import signal

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from helpers import wait_for
from rats_ros.srv import AskVideo
from rclpy.qos import ReliabilityPolicy
from ros_fixtures import assert_no_traceback, diagnostics_values, ros_client, start_node  # noqa: F401

from rats_ros.io.overlay import kept_mask, selection_tile
from rats_ros.stream.queues import DropOldestQueue

pytestmark = pytest.mark.ros
CAMERA = "/robot/front_camera/image_raw"


@pytest.fixture(scope="module")
def node(tmp_path_factory, domain_id, model_cache):
    """One node, `image` remapped to a camera topic, no input at all."""
    process = start_node(tmp_path_factory.mktemp("node"), domain_id, remaps={"image": CAMERA})
    yield process
    if process.alive():
        process.stop(signal.SIGKILL)


def test_image_subscription_is_relative_and_uses_sensor_data_qos(node, ros_client):  # noqa: F811
    def subscriptions():
        return [info for info in ros_client.node.get_subscriptions_info_by_topic(CAMERA)
                if info.node_name == "rats_stream"]

    infos = wait_for(subscriptions, timeout=30)
    assert infos[0].topic_type == "sensor_msgs/msg/Image"
    assert infos[0].qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
    publishers = ros_client.node.get_publishers_info_by_topic("/captions")
    assert any(info.node_name == "rats_stream" for info in publishers)
    assert "active: listening on " + CAMERA in node.log()


def test_question_before_any_caption_says_no_captions_yet(node, ros_client):  # noqa: F811
    response = ros_client.call(AskVideo, "/ask_video",
                               AskVideo.Request(question="What is on the table?"),
                               retry_after=5.0)
    assert response.success is False
    assert "no captions exist yet" in response.message
    assert response.answer == "" and len(response.evidence) == 0


def test_diagnostics_report_the_pipeline(node, ros_client):  # noqa: F811
    arrays = ros_client.collect(DiagnosticArray, "/diagnostics")

    def answered_status():
        values = diagnostics_values(arrays[-1]) if arrays else {}
        return values if values.get("questions_refused", "0") != "0" else None

    values = wait_for(answered_status, timeout=30)
    assert values["_level"] == DiagnosticStatus.OK, values["_message"]
    assert values["state"] == "active"
    assert (values["model"], values["device"]) == ("tiny-random", "cpu")
    for key in ("input_frame_rate", "clip_rate", "queue_depth", "queue_capacity",
                "dropped_total", "refused_total", "last_processing_time", "avg_processing_time",
                "clip_duration", "clips_captioned", "next_clip_index"):
        assert key in values, key
    assert float(values["clip_duration"]) == 2.0  # clip_frames 4 / fps 2.0
    assert values["frames_received"] == "0" and values["clips_captioned"] == "0"


def test_sigint_stops_cleanly_with_exit_code_zero(node):
    assert node.stop(signal.SIGINT, timeout=60) == 0
    output = node.log()
    assert_no_traceback(output)


def test_overlay_maps_kept_tokens_to_frames_and_patches():
    # LLaVA-OneVision layout: one group per frame; Qwen2.5-VL: one group per 2 frames.
    mask = kept_mask([0, 5, 8 + 3, 99], (2, 2, 4), frames_per_group=1, frames=2)
    assert mask.shape == (2, 2, 4) and mask.sum() == 3  # 99 is past the grid: ignored
    assert mask[0, 0, 0] and mask[0, 1, 1] and mask[1, 0, 3]
    pairs = kept_mask([1], (1, 2, 2), frames_per_group=2, frames=2)
    assert pairs[0, 0, 1] and pairs[1, 0, 1] and pairs.sum() == 2
    pixels = np.zeros((4, 32, 48, 3), dtype=np.uint8) + 200
    tile = selection_tile(pixels, [0], (4, 2, 2), cell=48)
    assert tile.shape == (2 * 32, 2 * 48, 3)  # 4 frames in 2 rows of 2
    assert tile[20, 30].max() < 200 and tile[5, 5].min() > 0  # dimmed vs kept patch


def test_drop_oldest_queue_keeps_the_newest_and_says_when_it_dropped():
    queue = DropOldestQueue(2)
    assert [queue.put(i) for i in range(4)] == [False, False, True, True]
    assert len(queue) == 2 and queue.get(0.1) == 2 and queue.get(0.1) == 3
    assert queue.get(0.01) is None
