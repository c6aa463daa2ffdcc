"""Video files as frame streams (cv2): stamps from the container, else frame index / fps."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from rats_ros.errors import InputError
from rats_ros.io.images import decode_raw
from rats_ros.samples import Frame


def read_video_frames(path, max_side: int | None = 768) -> Iterator[Frame]:
    """Read a video file's frames with cv2.

    Stamps are the video's own timestamps (``CAP_PROP_POS_MSEC``) when the container gives them,
    else frame index / fps.

    :param path: a file cv2 can open (mp4, avi, mkv, ...).
    :param max_side: longest side of the returned images (``None``: full size).
    :returns: an iterator of frames.
    :raises InputError: when the file is missing, not a video, or has no frames.
    """
    capture = open_video(Path(path))
    return iter_video(capture, Path(path), max_side)


def open_video(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise InputError(f"video {str(path)!r} does not exist or is not a file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{str(path)!r} is neither a rosbag2 bag nor a video cv2 can open")
    return capture


def iter_video(capture, path, max_side) -> Iterator[Frame]:
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and fps > 0 else 30.0
    index, last_ns = 0, -1
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            stamp = round(capture.get(cv2.CAP_PROP_POS_MSEC) * 1e6)
            if stamp <= last_ns:  # no container timestamps: fall back to the frame index
                stamp = round(index * 1e9 / fps)
            last_ns = stamp
            rgb = decode_raw("bgr8", bgr.shape[1], bgr.shape[0], bgr.strides[0],
                             np.ascontiguousarray(bgr).reshape(-1), max_side=max_side)
            index += 1
            yield Frame(stamp, rgb)
    finally:
        capture.release()
    if index == 0:
        raise InputError(f"video {str(path)!r} has no readable frames")
