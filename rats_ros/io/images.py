"""Image bytes to RGB arrays and back, without ROS: the node and the bag reader pass raw fields.

Decoding also shrinks the image so its longest side is at most ``max_side`` (the vision towers
use 384 px inputs), which keeps the node's frame queue small for 1080p or 8K cameras. The raw
buffer is viewed, not copied; the one full-size copy made is at most a colour conversion
(YUV, mono) or the output itself when no downscale is needed.
"""
from __future__ import annotations

import cv2
import numpy as np

from rats_ros.errors import ConfigError, FrameError
from rats_ros.io.raw_formats import DEPTH_MODES, EXTRA_ENCODINGS, decode_extra

# sensor_msgs/image_encodings names -> (bytes per pixel, cv2 conversion to RGB or None).
# "yuv422"/"yuv422_yuy2" are the deprecated names of "uyvy"/"yuyv" and mean the same layouts.
_RAW_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "uyvy": (2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422": (2, cv2.COLOR_YUV2RGB_UYVY),
    "yuyv": (2, cv2.COLOR_YUV2RGB_YUYV),
    "yuv422_yuy2": (2, cv2.COLOR_YUV2RGB_YUYV),
}
_PACKED_YUV = {"uyvy", "yuv422", "yuyv", "yuv422_yuy2"}
# RGB -> encoding conversions used by encode_raw (tests, bag writer, replay).
_TO_ENCODING = {
    "rgb8": None,
    "bgr8": cv2.COLOR_RGB2BGR,
    "rgba8": cv2.COLOR_RGB2RGBA,
    "bgra8": cv2.COLOR_RGB2BGRA,
    "mono8": cv2.COLOR_RGB2GRAY,
    "uyvy": cv2.COLOR_RGB2YUV_UYVY,
    "yuv422": cv2.COLOR_RGB2YUV_UYVY,
    "yuyv": cv2.COLOR_RGB2YUV_YUYV,
    "yuv422_yuy2": cv2.COLOR_RGB2YUV_YUYV,
}
#: the raw encodings encode_raw writes too (8-bit colour and YUV 4:2:2)
COLOUR_ENCODINGS = tuple(_RAW_ENCODINGS)
#: every raw encoding decode_raw takes (depth only with depth="colormap")
SUPPORTED_ENCODINGS = (*COLOUR_ENCODINGS, *EXTRA_ENCODINGS)
#: compressed images above this many pixels are refused before decoding (8K is 33 MP)
MAX_PIXELS = 50_000_000
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageTooLarge(FrameError):
    """A compressed image whose header announces more pixels than allowed (refused unread)."""


def decode_raw(encoding: str, width: int, height: int, step: int, data,
               is_bigendian: int = 0, max_side: int | None = 768,
               depth: str = "refuse") -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/msg/Image`` into an RGB array.

    :param encoding: one of :data:`SUPPORTED_ENCODINGS` (sensor_msgs/image_encodings names).
    :param width: pixels per row.
    :param height: rows.
    :param step: bytes per row, including any padding at its end.
    :param data: ``step * height`` bytes (bytes, bytearray, memoryview, array.array or a uint8
        numpy array); viewed, not copied.
    :param is_bigendian: the byte order of 16- and 32-bit samples (8-bit ones have none).
    :param max_side: shrink (INTER_AREA) so the longest side is at most this; ``None`` keeps
        the full size.
    :param depth: what 16UC1 / 32FC1 depth becomes: ``refuse`` (FrameError) or ``colormap``
        (:mod:`rats_ros.io.raw_formats`, which also converts Bayer, mono16 and NV12 / NV21).
    :returns: ``(H', W', 3)`` uint8 RGB array that owns its memory.
    :raises FrameError: for an unsupported encoding, a zero size, or a step/size mismatch.
    :raises ConfigError: for ``max_side`` < 1.
    """
    _check_max_side(max_side)
    if depth not in DEPTH_MODES:
        raise ConfigError(f"depth must be one of {DEPTH_MODES}, got {depth!r}")
    if encoding in EXTRA_ENCODINGS:
        rgb = decode_extra(encoding, width, height, step, _as_uint8(data), is_bigendian, depth)
        return _shrink(rgb, max_side, copy=False)  # (H', W', 3), owns its memory
    if encoding not in _RAW_ENCODINGS:
        raise FrameError(
            f"image encoding {encoding!r} is not supported; supported: "
            f"{', '.join(SUPPORTED_ENCODINGS)} (publish one of these, or a CompressedImage)")
    bpp, conversion = _RAW_ENCODINGS[encoding]
    pixels = _view_pixels(encoding, width, height, step, data, bpp)  # (H, W, C) view
    if encoding in _PACKED_YUV:
        rgb = cv2.cvtColor(pixels, conversion)  # (H, W, 3): YUV needs full-size conversion
        return _shrink(rgb, max_side, copy=False)
    small = _shrink(pixels, max_side, copy=conversion is None)
    if conversion is None:
        return small
    return cv2.cvtColor(small, conversion)


def _view_pixels(encoding, width, height, step, data, bpp) -> np.ndarray:
    """View ``data`` as ``(H, W, C)`` pixels (C = bpp), skipping row padding, without copying."""
    if width <= 0 or height <= 0:
        raise FrameError(f"{encoding} image has zero size: width={width}, height={height}")
    if encoding in _PACKED_YUV and width % 2:
        raise FrameError(f"{encoding} packs pixel pairs; width must be even, got {width}")
    row_bytes = width * bpp
    if step < row_bytes:
        raise FrameError(
            f"{encoding} image step {step} < width {width} x {bpp} bytes per pixel = {row_bytes}")
    flat = _as_uint8(data)
    if flat.size != step * height:
        raise FrameError(
            f"{encoding} image data has {flat.size} bytes but step {step} x height {height} = "
            f"{step * height}; the message is truncated or its step is wrong")
    rows = flat.reshape(height, step)[:, :row_bytes]  # (H, W*bpp), padding dropped, still a view
    return rows.reshape(height, width, bpp)


def _as_uint8(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise FrameError(f"image data must be uint8 bytes, got an array of {data.dtype}")
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a plain list of ints (some deserializers)
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _check_max_side(max_side) -> None:
    if max_side is not None and (not isinstance(max_side, int) or max_side < 1):
        raise ConfigError(f"max_side must be None or an int >= 1 (e.g. 768), got {max_side!r}")


def _shrink(image: np.ndarray, max_side: int | None, copy: bool) -> np.ndarray:
    """Resize so the longest side is <= ``max_side``; copy only if asked and nothing resized."""
    height, width = image.shape[:2]
    longest = max(height, width)
    if max_side is None or longest <= max_side:
        return np.array(image, copy=True, order="C") if copy else image
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if not image.flags.c_contiguous and image.base is not None:
        image = _contiguous_rows(image)
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if resized.ndim == 2:  # cv2 drops a channel axis of size 1
        resized = resized[:, :, None]
    return resized


def _contiguous_rows(image: np.ndarray) -> np.ndarray:
    """cv2 takes row-strided views (padded rows) as is; only a non-row layout needs a copy."""
    if image.strides[-1] == 1 and image.strides[-2] == image.shape[-1]:
        return image
    return np.ascontiguousarray(image)


def decode_compressed(format: str, data, max_side: int | None = 768,
                      max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/msg/CompressedImage`` (JPEG, PNG, anything cv2.imdecode reads).

    PNG and JPEG dimensions are read from the header first: a decompression bomb (a 0.4 MB PNG
    of 20000 x 20000 px would need 1.2 GB decoded) is refused unread, and a JPEG much larger
    than ``max_side`` is decoded at 1/2, 1/4 or 1/8 scale by the codec itself.

    :param format: the message's format field, e.g. ``"jpeg"`` or ``"rgb8; jpeg compressed bgr8"``.
    :param data: the compressed bytes.
    :param max_side: shrink so the longest side is at most this; ``None`` keeps the full size.
    :param max_pixels: refuse PNG/JPEG images whose header announces more pixels.
    :returns: ``(H', W', 3)`` uint8 RGB array.
    :raises ImageTooLarge: above ``max_pixels``.
    :raises FrameError: for depth images (``compressedDepth``), empty or undecodable bytes.
    """
    _check_max_side(max_side)
    if "compresseddepth" in format.lower():
        raise FrameError(
            f"compressed image format {format!r} is a depth image; subscribe to a colour topic")
    buffer = _as_uint8(data)
    if buffer.size == 0:
        raise FrameError(f"compressed image ({format!r}) has no data")
    size = compressed_size(buffer)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageTooLarge(f"compressed image ({format!r}) of {size[0]} x {size[1]} px exceeds "
                            f"{max_pixels} pixels; refused before decoding (send frames of at "
                            "most 8K)")
    try:  # (H, W, 3) BGR, alpha and 16 bit dropped
        bgr = cv2.imdecode(buffer, _reduced_read_flag(buffer, size, max_side))
    except cv2.error as error:
        raise FrameError(f"compressed image ({format!r}) cannot be decoded: {error}") from error
    if bgr is None:
        raise FrameError(
            f"compressed image ({format!r}, {buffer.size} bytes) cannot be decoded; "
            "expected JPEG or PNG bytes")
    small = _shrink(bgr, max_side, copy=False)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def compressed_size(buffer: np.ndarray) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG or JPEG header without decoding; None for other data."""
    head = bytes(buffer[:24])
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if not head.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 9 <= buffer.size and buffer[at] == 0xFF:  # walk the JPEG segments to a SOF
        marker, length = int(buffer[at + 1]), int(buffer[at + 2]) << 8 | int(buffer[at + 3])
        if marker in _JPEG_SOF:
            height = int(buffer[at + 5]) << 8 | int(buffer[at + 6])
            return int(buffer[at + 7]) << 8 | int(buffer[at + 8]), height
        at += 2 + length
    return None


def _reduced_read_flag(buffer, size, max_side) -> int:
    """A JPEG at least twice ``max_side`` decodes at 1/2, 1/4 or 1/8 scale (no full copy)."""
    if size is None or max_side is None or not bytes(buffer[:2]) == b"\xff\xd8":
        return cv2.IMREAD_COLOR
    flag = cv2.IMREAD_COLOR
    for factor, reduced in ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
                            (8, cv2.IMREAD_REDUCED_COLOR_8)):
        if max(size) // factor >= max_side:
            flag = reduced
    return flag


def encode_raw(rgb: np.ndarray, encoding: str = "rgb8") -> tuple[str, int, int, int, bytes]:
    """Encode an RGB array as the fields of a ``sensor_msgs/msg/Image`` (no row padding).

    :param rgb: ``(H, W, 3)`` uint8 RGB.
    :param encoding: one of :data:`COLOUR_ENCODINGS`.
    :returns: ``(encoding, width, height, step, data)``.
    :raises FrameError: for an unsupported encoding, a bad array, or an odd width for YUV 4:2:2.
    """
    _check_rgb(rgb)
    if encoding not in _TO_ENCODING:
        raise FrameError(f"cannot encode {encoding!r}; supported: {', '.join(_TO_ENCODING)}")
    height, width = rgb.shape[:2]
    if encoding in _PACKED_YUV and width % 2:
        raise FrameError(f"{encoding} packs pixel pairs; width must be even, got {width}")
    conversion = _TO_ENCODING[encoding]
    pixels = rgb if conversion is None else cv2.cvtColor(rgb, conversion)
    pixels = np.ascontiguousarray(pixels)
    step = pixels.nbytes // height
    return encoding, width, height, step, pixels.tobytes()


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Compress an RGB array to JPEG or PNG bytes (``CompressedImage.data``).

    :param rgb: ``(H, W, 3)`` uint8 RGB.
    :param fmt: ``"jpeg"`` (or ``"jpg"``) or ``"png"``.
    :param quality: JPEG quality 1..100.
    :returns: the compressed bytes.
    :raises FrameError: for another format or a bad array.
    """
    _check_rgb(rgb)
    extensions = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}
    if fmt not in extensions:
        raise FrameError(f"cannot compress to {fmt!r}; supported: jpeg, png")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if extensions[fmt] == ".jpg" else []
    ok, encoded = cv2.imencode(extensions[fmt], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise FrameError(f"cv2 could not encode a {rgb.shape} image as {fmt}")
    return encoded.tobytes()


def _check_rgb(rgb) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 \
            or rgb.dtype != np.uint8 or rgb.size == 0:
        shape = getattr(rgb, "shape", None)
        raise FrameError(f"expected a non-empty (H, W, 3) uint8 RGB array, got {shape}")
