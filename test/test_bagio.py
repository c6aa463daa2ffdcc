"""bagio: real rosbag2 files (sqlite3 and mcap, raw and compressed) and real video files."""
import shutil

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from rats_ros.errors import InputError
from rats_ros.io.bags import (
    list_image_topics,
    open_input,
    read_frames,
    serialize_image,
    write_image_bag,
)
from rats_ros.io.sample_scene import sample_scene, write_sample_bag
from rats_ros.io.video import read_video_frames
from rats_ros.stream.clips import Frame

S = 1_000_000_000
TYPESTORE = get_typestore(Stores.ROS2_KILTED)


def scene(seconds=4.0, fps=2.0):
    return list(sample_scene(seconds=seconds, fps=fps, size=(64, 48), seed=3))


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("compressed", [False, True])
def test_bag_round_trip(tmp_path, storage, compressed):
    frames = scene()
    bag = tmp_path / "bag"
    assert write_image_bag(bag, frames, storage=storage, compressed=compressed) == len(frames)
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    assert list_image_topics(bag) == [("/camera/image_raw", msgtype, len(frames))]
    back = list(read_frames(bag, max_side=None))  # the only image topic is picked
    assert [f.stamp_ns for f in back] == [f.stamp_ns for f in frames]
    for original, read in zip(frames, back, strict=True):
        error = np.abs(read.image.astype(int) - original.image).mean()
        assert error == 0 if not compressed else error < 6
    suffix = ".db3" if storage == "sqlite3" else ".mcap"
    (data_file,) = bag.glob(f"*{suffix}")
    assert len(list(read_frames(data_file))) == len(frames)  # a single storage file works too


@pytest.mark.parametrize("encoding", ["bgr8", "mono8", "yuyv"])
def test_raw_encodings_survive_a_bag(tmp_path, encoding):
    frames = scene(seconds=1.0)
    write_image_bag(tmp_path / "bag", frames, encoding=encoding)
    back = list(read_frames(tmp_path / "bag", max_side=32))
    assert len(back) == len(frames) and back[0].image.shape == (24, 32, 3)


def test_several_topics_need_a_choice_and_a_bad_choice_lists_them(tmp_path):
    bag = tmp_path / "bag"
    frames = scene(seconds=2.0)
    with Writer(bag, version=9) as writer:
        string = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=TYPESTORE)
        writer.write(string, 1, TYPESTORE.serialize_cdr(
            TYPESTORE.types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String"))
    assert list_image_topics(bag) == []
    with pytest.raises(InputError, match="no sensor_msgs Image or CompressedImage topic"):
        read_frames(bag)
    shutil.rmtree(bag)
    with Writer(bag, version=9) as writer:
        for topic, compressed in (("/front/image_raw", False), ("/rear/compressed", True)):
            msgtype = serialize_image(frames[0], compressed)[0]
            connection = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            for frame in frames:
                writer.write(connection, frame.stamp_ns, serialize_image(frame, compressed)[1])
    with pytest.raises(InputError, match=r"several image topics.*--topic.*/front/image_raw"):
        read_frames(bag)
    with pytest.raises(InputError, match=r"no image topic '/side'.*/rear/compressed"):
        read_frames(bag, topic="/side")
    rear = list(read_frames(bag, topic="/rear/compressed"))
    assert len(rear) == len(frames)
    assert open_input(bag, topic="/front/image_raw")[1] == len(frames)


def test_zero_header_stamp_falls_back_to_log_time(tmp_path):
    frames = [Frame(0, f.image) for f in scene(seconds=1.0)]
    bag = tmp_path / "bag"
    with Writer(bag, version=9) as writer:
        connection = writer.add_connection("/cam", "sensor_msgs/msg/Image", typestore=TYPESTORE)
        for index, frame in enumerate(frames):
            writer.write(connection, 5 * S + index * S, serialize_image(frame)[1])
    assert [f.stamp_ns for f in read_frames(bag)] == [5 * S + i * S for i in range(len(frames))]


def test_undecodable_messages_are_skipped_and_reported(tmp_path):
    bag = tmp_path / "bag"
    frames = scene(seconds=2.0)
    with Writer(bag, version=9) as writer:
        connection = writer.add_connection("/cam", "sensor_msgs/msg/Image", typestore=TYPESTORE)
        for index, frame in enumerate(frames):
            raw = serialize_image(frame, encoding="mono8" if index == 1 else "rgb8")[1]
            if index == 1:  # same bytes, but an encoding no decoder accepts
                msg = TYPESTORE.deserialize_cdr(raw, "sensor_msgs/msg/Image")
                msg.encoding = "16UC1"
                raw = TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/Image")
            writer.write(connection, frame.stamp_ns, raw)
    errors = []
    back = list(read_frames(bag, on_error=lambda stamp, error: errors.append((stamp, error))))
    assert len(back) == len(frames) - 1
    assert len(errors) == 1 and errors[0][0] == frames[1].stamp_ns
    assert "'16UC1'" in str(errors[0][1])


@pytest.mark.parametrize("storage, suffix", [("sqlite3", ".db3"), ("mcap", ".mcap")])
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_bag_raises_input_error(tmp_path, storage, suffix, damage):
    bag = tmp_path / "bag"
    write_sample_bag(bag, seconds=4.0, storage=storage)
    (data_file,) = bag.glob(f"*{suffix}")
    content = data_file.read_bytes()
    data_file.write_bytes(content[:len(content) // 2] if damage == "truncate"
                          else bytes(range(256)) * 64)
    with pytest.raises(InputError, match="corrupt|not a readable rosbag2"):
        frames, _ = open_input(bag)
        list(frames)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_empty_bag_and_missing_or_broken_inputs(tmp_path, storage):
    write_image_bag(tmp_path / "empty", [], storage=storage)
    with pytest.raises(InputError, match="has no messages"):
        open_input(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        open_input(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a readable rosbag2 bag"):
        open_input(tmp_path / "plain")
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(InputError, match="neither a rosbag2 bag nor a video"):
        open_input(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="cannot write bag"):
        write_image_bag(tmp_path / "empty", scene(seconds=1.0))  # exists already


@pytest.mark.parametrize("name, fourcc", [("clip.avi", "MJPG"), ("clip.mp4", "mp4v")])
def test_video_round_trip(tmp_path, name, fourcc):
    frames = list(sample_scene(seconds=2.0, fps=10.0, size=(96, 64), seed=1))
    path = tmp_path / name
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (96, 64))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    writer.release()
    stream, total = open_input(path)
    back = list(stream)
    assert total == len(frames) == len(back)
    assert [f.stamp_ns for f in back] == [round(i * S / 10) for i in range(len(frames))]
    assert np.abs(back[7].image.astype(int) - frames[7].image).mean() < 8
    assert next(read_video_frames(path, max_side=48)).image.shape == (32, 48, 3)


def test_sample_scene_is_deterministic_and_moves():
    first, second = scene(), scene()
    assert all((a.image == b.image).all() and a.stamp_ns == b.stamp_ns
               for a, b in zip(first, second, strict=True))
    assert len(first) == 8 and first[1].stamp_ns - first[0].stamp_ns == S // 2
    assert not (first[0].image == first[3].image).all()
    other = list(sample_scene(seconds=4.0, fps=2.0, size=(64, 48), seed=4))
    assert not (other[0].image == first[0].image).all()
