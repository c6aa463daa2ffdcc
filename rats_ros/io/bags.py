"""Offline inputs and outputs: real rosbag2 files (via ``rosbags``); :func:`open_input` also
opens video files (:mod:`rats_ros.io.video`).

Bags are read and written without ROS (``rosbags`` is pure Python), with sqlite3 or mcap
storage, holding ``sensor_msgs/msg/Image`` or ``sensor_msgs/msg/CompressedImage``. Every failure
of a missing, empty or corrupt input surfaces as :class:`InputError` saying what to do.
"""
from __future__ import annotations

import logging
import sqlite3
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from rats_ros.errors import FrameError, InputError
from rats_ros.io.images import decode_compressed, decode_raw, encode_compressed, encode_raw
from rats_ros.io.video import iter_video, open_video
from rats_ros.samples import Frame

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
_IMAGE_TYPES = (IMAGE, COMPRESSED)
_BAG_SUFFIXES = (".db3", ".mcap")
_BAG_VERSION = 9  # rosbag2 metadata version written by Jazzy and Kilted
# What rosbags, sqlite and the mcap parser raise on a corrupt or truncated file.
_CORRUPT = (ReaderError, sqlite3.Error, struct.error, KeyError, IndexError, ValueError, EOFError,
            UnicodeDecodeError, OSError, AssertionError)
_TYPESTORE = get_typestore(Stores.ROS2_KILTED)
_log = logging.getLogger(__name__)

OnError = Callable[[int, FrameError], None]


def _existing(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {str(path)!r} does not exist; pass a rosbag2 directory or a video")
    return path


def is_bag(path) -> bool:
    """Whether an input is a rosbag2 bag (a directory, or a .db3/.mcap file) rather than a video.

    :raises InputError: when it does not exist.
    """
    source = _existing(path)
    return source.is_dir() or source.suffix in _BAG_SUFFIXES


def _bag_path(path) -> Path:
    """Resolve a bag directory, or a single .db3/.mcap file (its directory when that is a bag)."""
    path = _existing(path)
    if path.is_file() and path.suffix in _BAG_SUFFIXES and (path.parent / "metadata.yaml").exists():
        return path.parent
    return path


def _open_reader(path: Path) -> Reader:
    try:
        reader = Reader(path)
        reader.open()
    except _CORRUPT as error:
        raise InputError(
            f"{str(path)!r} is not a readable rosbag2 bag ({type(error).__name__}: {error}); "
            "pass a bag directory with metadata.yaml and its .db3/.mcap file, re-record or "
            "`ros2 bag reindex` it") from None
    return reader


def list_image_topics(path) -> list[tuple[str, str, int]]:
    """List the image topics of a rosbag2 bag.

    :param path: bag directory, or one of its .db3/.mcap files.
    :returns: ``[(topic, msgtype, message_count)]`` sorted by topic, for Image and
        CompressedImage topics.
    :raises InputError: when the bag is missing or unreadable.
    """
    reader = _open_reader(_bag_path(path))
    try:
        return sorted((c.topic, c.msgtype, c.msgcount) for c in reader.connections
                      if c.msgtype in _IMAGE_TYPES)
    finally:
        reader.close()


def _pick_topic(path, topics, topic) -> tuple[str, str, int]:
    listing = ", ".join(f"{name} ({msgtype}, {count} msgs)" for name, msgtype, count in topics)
    if topic is not None:
        for entry in topics:
            if entry[0] == topic:
                return entry
        raise InputError(f"bag {str(path)!r} has no image topic {topic!r}; image topics: "
                         f"{listing or 'none'}")
    if not topics:
        raise InputError(f"bag {str(path)!r} has no sensor_msgs Image or CompressedImage topic")
    if len(topics) > 1:
        raise InputError(f"bag {str(path)!r} has several image topics, pick one with --topic: "
                         f"{listing}")
    return topics[0]


def read_frames(path, topic: str | None = None, max_side: int | None = 768,
                on_error: OnError | None = None) -> Iterator[Frame]:
    """Read the frames of one image topic of a rosbag2 bag, in log order.

    The stamp is the header stamp, or the bag's log time when the header stamp is zero.
    Messages that cannot be decoded are skipped; each one is reported to ``on_error`` (or
    logged as a warning when no callback is given).

    :param path: bag directory, or one of its .db3/.mcap files.
    :param topic: the image topic; ``None`` picks the only one.
    :param max_side: longest side of the decoded images (``None``: full size).
    :param on_error: called as ``on_error(log_time_ns, FrameError)`` for each skipped message.
    :returns: an iterator of frames.
    :raises InputError: missing, corrupt or empty bag, no or ambiguous image topic.
    """
    bag = _bag_path(path)
    name, msgtype, count = _pick_topic(bag, list_image_topics(bag), topic)
    if count == 0:
        raise InputError(f"image topic {name!r} of bag {str(bag)!r} has no messages")
    return _iter_bag(bag, name, msgtype, max_side, on_error)


def _messages(bag: Path, reader: Reader, topics) -> Iterator[tuple]:
    """``(connection, log_ns, raw)`` of the messages on ``topics``, in log order.

    :raises InputError: the storage itself is broken (nothing more can be read).
    """
    messages = reader.messages(connections=[c for c in reader.connections if c.topic in topics])
    while True:
        try:
            item = next(messages, None)
        except _CORRUPT as error:
            raise InputError(f"bag {str(bag)!r} is corrupt ({type(error).__name__}: {error})"
                             "; re-record it or `ros2 bag reindex` it") from None
        if item is None:
            return
        yield item


def _iter_bag(bag, topic, msgtype, max_side, on_error) -> Iterator[Frame]:
    reader = _open_reader(bag)
    try:
        for _, log_ns, raw in _messages(bag, reader, {topic}):
            try:
                frame = _deserialize_frame(raw, msgtype, log_ns, max_side)
            except FrameError as error:  # one bad message: skip it, say so, keep reading
                _report(on_error, log_ns, error)
                continue
            yield frame
    finally:
        reader.close()


def _deserialize_frame(raw, msgtype, log_ns, max_side) -> Frame:
    try:
        msg = _TYPESTORE.deserialize_cdr(raw, msgtype)
    except _CORRUPT as error:
        raise FrameError(f"{msgtype} message cannot be deserialized ({type(error).__name__}: "
                         f"{error})") from None
    return Frame(_stamp_ns(msg, log_ns), _decode(msg, msgtype, max_side))


def _stamp_ns(msg, log_ns: int) -> int:
    stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    return stamp if stamp > 0 else int(log_ns)


def _decode(msg, msgtype, max_side) -> np.ndarray:
    if msgtype == COMPRESSED:
        return decode_compressed(msg.format, msg.data, max_side=max_side)
    return decode_raw(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                      msg.is_bigendian, max_side=max_side)


def _report(on_error, stamp_ns, error) -> None:
    if on_error is None:
        _log.warning("skipped a frame at %d ns: %s", stamp_ns, error)
    else:
        on_error(stamp_ns, error)


def open_input(path, topic: str | None = None, max_side: int | None = 768,
               on_error: OnError | None = None) -> tuple[Iterator[Frame], int | None]:
    """Open a bag (directory or .db3/.mcap file) or a video file as a frame stream.

    :param path: the input.
    :param topic: image topic of a bag (``None``: the only one); ignored for videos.
    :param max_side: longest side of the decoded images.
    :param on_error: callback for undecodable bag messages (see :func:`read_frames`).
    :returns: ``(frames, total)``, total being the message or frame count when known.
    :raises InputError: missing, corrupt or empty input.
    """
    source = _existing(path)
    if is_bag(source):
        bag = _bag_path(source)
        name, _, count = _pick_topic(bag, list_image_topics(bag), topic)
        return read_frames(bag, name, max_side, on_error), count
    capture = open_video(source)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    return iter_video(capture, source, max_side), (total if total > 0 else None)


def write_image_bag(path, frames: Iterable[Frame], topic: str = "/camera/image_raw",
                    storage: str = "sqlite3", compressed: bool = False,
                    frame_id: str = "camera", encoding: str = "rgb8") -> int:
    """Write frames as a real rosbag2 bag (log time = frame stamp).

    :param path: bag directory to create; must not exist.
    :param frames: frames in stamp order.
    :param topic: topic name.
    :param storage: ``"sqlite3"`` or ``"mcap"``.
    :param compressed: write ``CompressedImage`` (JPEG) instead of raw ``Image``.
    :param frame_id: header frame id.
    :param encoding: raw image encoding (see :data:`rats_ros.io.images.SUPPORTED_ENCODINGS`).
    :returns: the number of messages written.
    :raises InputError: for an unknown storage or an existing path.
    """
    plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
    if storage not in plugins:
        raise InputError(f"bag storage must be sqlite3 or mcap, got {storage!r}")
    msgtype = COMPRESSED if compressed else IMAGE
    written = 0
    try:
        with Writer(Path(path), version=_BAG_VERSION, storage_plugin=plugins[storage]) as writer:
            connection = writer.add_connection(topic, msgtype, typestore=_TYPESTORE)
            for frame in frames:
                _, raw = serialize_image(frame, compressed, encoding, frame_id)
                writer.write(connection, frame.stamp_ns, raw)
                written += 1
    except WriterError as error:
        raise InputError(f"cannot write bag {str(path)!r}: {error}; pick a new directory") from None
    return written


def serialize_image(frame: Frame, compressed: bool = False, encoding: str = "rgb8",
                    frame_id: str = "camera") -> tuple[str, bytes]:
    """Serialize a frame as a CDR ``Image`` or ``CompressedImage`` (JPEG) message.

    :returns: ``(msgtype, cdr_bytes)``, ready for ``rosbags`` ``Writer.write``.
    :raises FrameError: for an unsupported encoding.
    """
    msgtype = COMPRESSED if compressed else IMAGE
    msg = _image_msg(frame, frame_id, compressed, encoding)
    return msgtype, _TYPESTORE.serialize_cdr(msg, msgtype)


def _image_msg(frame: Frame, frame_id: str, compressed: bool, encoding: str):
    types = _TYPESTORE.types
    stamp = types["builtin_interfaces/msg/Time"](
        sec=frame.stamp_ns // 1_000_000_000, nanosec=frame.stamp_ns % 1_000_000_000)
    header = types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)
    if compressed:
        data = np.frombuffer(encode_compressed(frame.image, "jpeg"), dtype=np.uint8)
        return types[COMPRESSED](header=header, format="rgb8; jpeg compressed bgr8", data=data)
    encoding, width, height, step, raw = encode_raw(frame.image, encoding)
    return types[IMAGE](header=header, height=height, width=width, encoding=encoding,
                        is_bigendian=0, step=step, data=np.frombuffer(raw, dtype=np.uint8))
