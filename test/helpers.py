"""Shared test helpers: polling instead of sleeps, and the ROS 2 network rule."""
import os
import struct
import time
import zlib

from rats_ros.records import CaptionRecord

SEC = 1_000_000_000


def wait_for(condition, timeout=10.0, interval=0.05):
    """Poll ``condition()`` until it returns a truthy value or ``timeout`` seconds pass.

    :returns: the truthy value.
    :raises AssertionError: when the timeout passes first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


def ros_env(domain_id: int) -> dict:
    """Environment for a child process that starts ROS 2: loopback discovery, its own domain."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def make_caption(clip_index: int, start_ns: int, end_ns: int, text: str,
                 **fields) -> CaptionRecord:
    """A caption record with plausible statistics (the store tests care about the text/times)."""
    stats = dict(frames=16, visual_tokens=3136, kept_tokens=196, memory_tokens=392,
                 processing_time=0.25) | fields
    return CaptionRecord(clip_index, start_ns, end_ns, text, **stats)


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG of ``width x height`` black pixels: ~1 MB that decodes to w * h * 3 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    compressor, rows = zlib.compressobj(9), b"\0" * (1 + 3 * width) * 500  # filter byte + RGB
    body = b"".join(compressor.compress(rows) for _ in range(height // 500)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))
