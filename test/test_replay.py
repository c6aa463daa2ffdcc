"""replay.py, the stand-in for `ros2 bag play`: real bags out, real topics in (DDS on loopback)."""
import signal
import time

import numpy as np
import pytest
from helpers import wait_for
from ros_fixtures import NS, ros_client, scene_frames, start_replay, time_ns  # noqa: F401
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image

from rats_ros.io.bags import write_image_bag
from rats_ros.io.images import decode_compressed, decode_raw

pytestmark = pytest.mark.ros


def _finish(process, timeout=60):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, err


def test_replay_publishes_every_message_with_recorded_timing_and_clock(
        tmp_path, domain_id, ros_client):  # noqa: F811
    frames = scene_frames(20, fps=10.0, start_s=50.0)
    write_image_bag(tmp_path / "bag", frames, topic="/cam/image_raw")
    images = ros_client.collect(Image, "/replay/image")
    clocks = ros_client.collect(Clock, "/clock")
    arrivals = []
    ros_client.node.create_subscription(Image, "/replay/image",
                                        lambda _: arrivals.append(time.monotonic()), 10)
    replay = start_replay(tmp_path / "bag", domain_id, "--rate", "2", "--clock", "--remap-to",
                          "/replay/image", "--wait-subscribers", "2")
    code, err = _finish(replay)
    assert code == 0, err
    assert "published 20 messages from /cam/image_raw on /replay/image" in err
    wait_for(lambda: len(images) == 20, timeout=10)
    assert [time_ns(m.header.stamp) for m in images] == [f.stamp_ns for f in frames]
    for msg, frame in zip(images, frames, strict=True):
        assert msg.header.frame_id == "camera"
        decoded = decode_raw(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                             max_side=None)
        np.testing.assert_array_equal(decoded, frame.image)
    # 1.9 s of recorded time at rate 2 is paced, not dumped: the arrivals span most of 0.95 s.
    wait_for(lambda: len(arrivals) == 20, timeout=10)
    assert arrivals[-1] - arrivals[0] > 0.8 * 0.95
    bag_times = [time_ns(c.clock) for c in clocks]
    assert bag_times, "no /clock message received"
    assert bag_times == sorted(bag_times)
    assert frames[0].stamp_ns <= bag_times[0] and bag_times[-1] <= frames[-1].stamp_ns


def test_replay_loops_and_stamps_go_back_at_each_start(tmp_path, domain_id,
                                                      ros_client):  # noqa: F811
    frames = scene_frames(5, fps=20.0, start_s=10.0)
    write_image_bag(tmp_path / "bag", frames, topic="/loop/image")
    images = ros_client.collect(Image, "/loop/image")
    replay = start_replay(tmp_path / "bag", domain_id, "--loop", "--wait-subscribers", "1")
    wait_for(lambda: len(images) >= 12, timeout=30)
    replay.send_signal(signal.SIGINT)
    code, err = _finish(replay)
    assert code == 0, err
    stamps = [time_ns(m.header.stamp) for m in images]
    assert stamps[:5] == [f.stamp_ns for f in frames]
    assert stamps[5] == frames[0].stamp_ns < stamps[4]  # the second pass starts over


def test_replay_of_a_compressed_mcap_bag(tmp_path, domain_id, ros_client):  # noqa: F811
    frames = scene_frames(4, fps=20.0)
    write_image_bag(tmp_path / "bag", frames, topic="/cam/image_raw/compressed",
                    storage="mcap", compressed=True)
    images = ros_client.collect(CompressedImage, "/cam/image_raw/compressed")
    replay = start_replay(tmp_path / "bag", domain_id)  # waits for 1 subscriber by default
    code, err = _finish(replay)
    assert code == 0, err
    assert "waiting up to 60 s for 1 subscriber(s) on /cam/image_raw/compressed" in err
    wait_for(lambda: len(images) == 4, timeout=10)  # none published into the void
    decoded = decode_compressed(images[0].format, images[0].data, max_side=None)
    assert decoded.shape == frames[0].image.shape
    assert np.abs(decoded.astype(int) - frames[0].image).mean() < 10  # JPEG, lossy


def test_replay_refuses_a_missing_bag_and_an_unknown_topic(tmp_path, domain_id):
    code, err = _finish(start_replay(tmp_path / "nothing", domain_id))
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    write_image_bag(tmp_path / "bag", scene_frames(2, fps=10.0), topic="/a/image")
    code, err = _finish(start_replay(tmp_path / "bag", domain_id, "--topic", "/b/image"))
    assert code == 2 and "no image topic '/b/image'" in err and "/a/image" in err
    code, err = _finish(start_replay(tmp_path / "bag", domain_id, "--rate", "0"))
    assert code == 2 and "--rate must be > 0" in err
