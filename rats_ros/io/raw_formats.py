"""The raw encodings beyond 8-bit RGB/YUV that industrial and depth cameras publish: Bayer (8 and
16 bit), mono16, 16UC1 / 32FC1 depth, NV12 / NV21; converted to RGB as cv_bridge converts them.

cv_bridge's rules (ros-perception/vision_opencv, ``cv_bridge/src/cv_bridge.cpp`` at 8b42d66,
``getConversionCode`` and ``toCvCopyImpl``): ``bayer_rggb`` demosaics with OpenCV's
``COLOR_BayerBG2RGB``, ``bayer_bggr`` with ``BayerRG``, ``bayer_gbrg`` with ``BayerGR`` and
``bayer_grbg`` with ``BayerGB`` (OpenCV names a pattern by its second row); 16-bit images
become 8-bit by ``convertTo`` with scale 255 / 65535, after the colour conversion; data whose
``is_bigendian`` differs from this machine's is byte-swapped first. Depth is not colour: it is
refused for captioning unless asked for, and then shown as cv_bridge's ``cvtColorForDisplay``
shows it (finite values scaled min..max to 0..255, a colour map applied, NaN black).
"""
from __future__ import annotations

import sys

import cv2
import numpy as np

from rats_ros.errors import FrameError

_BAYER = {"rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB,
          "gbrg": cv2.COLOR_BayerGR2RGB, "grbg": cv2.COLOR_BayerGB2RGB}
#: encoding -> (numpy sample type, cv2 conversion of one channel to RGB)
_SINGLE_PLANE = {
    **{f"bayer_{p}8": (np.uint8, code) for p, code in _BAYER.items()},
    **{f"bayer_{p}16": (np.uint16, code) for p, code in _BAYER.items()},
    "mono16": (np.uint16, cv2.COLOR_GRAY2RGB),
}
_SEMI_PLANAR = {"nv12": cv2.COLOR_YUV2RGB_NV12, "nv21": cv2.COLOR_YUV2RGB_NV21}
DEPTH_ENCODINGS = {"16UC1": np.uint16, "32FC1": np.float32}
#: what depth images become: refused (the default) or a colour-mapped picture of the depth
DEPTH_MODES = ("refuse", "colormap")
EXTRA_ENCODINGS = (*_SINGLE_PLANE, *_SEMI_PLANAR, *DEPTH_ENCODINGS)


def decode_extra(encoding: str, width: int, height: int, step: int, data: np.ndarray,
                 is_bigendian: int = 0, depth: str = "refuse") -> np.ndarray:
    """One of :data:`EXTRA_ENCODINGS` as full-size ``(H, W, 3)`` uint8 RGB.

    :param data: the message's bytes as a flat uint8 array (viewed, not copied).
    :param depth: :data:`DEPTH_MODES`: what a depth image becomes.
    :raises FrameError: a depth image with ``depth`` refuse, an odd size for NV12 / NV21, or a
        step / size that does not match the encoding.
    """
    if encoding in _SEMI_PLANAR:
        return _semi_planar(encoding, width, height, step, data)
    if encoding in DEPTH_ENCODINGS:
        if depth != "colormap":
            raise FrameError(f"{encoding!r} is a depth image, not colour: a Video-LLM cannot "
                             "caption it; subscribe to a colour topic, or set depth_images "
                             "to colormap to caption a colour-mapped picture of the depth")
        return _colormap(_plane(encoding, width, height, step, data, is_bigendian,
                                DEPTH_ENCODINGS[encoding]))
    dtype, conversion = _SINGLE_PLANE[encoding]
    plane = _plane(encoding, width, height, step, data, is_bigendian, dtype)
    rgb = cv2.cvtColor(np.ascontiguousarray(plane), conversion)  # (H, W, 3), dtype kept
    if dtype is np.uint16:
        rgb = cv2.convertScaleAbs(rgb, alpha=255.0 / 65535.0)  # cv_bridge's 16 -> 8 bit
    return rgb


def _plane(encoding, width, height, step, data, is_bigendian, dtype) -> np.ndarray:
    """``(H, W)`` samples of ``dtype``, row padding dropped, in this machine's byte order."""
    size = np.dtype(dtype).itemsize
    _check_size(encoding, width, height, step, data, width * size, height)
    rows = data.reshape(height, step)[:, :width * size]  # (H, W * size) uint8 view
    plane = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    if size > 1 and bool(is_bigendian) != (sys.byteorder == "big"):
        plane = plane.byteswap()
    return plane


def _semi_planar(encoding, width, height, step, data) -> np.ndarray:
    """NV12 / NV21: a Y plane of ``height`` rows, then ``height / 2`` rows of interleaved UV,
    each ``step`` bytes apart."""
    if width % 2 or height % 2:
        raise FrameError(f"{encoding} subsamples colour 2x2; width and height must be even, "
                         f"got {width} x {height}")
    _check_size(encoding, width, height, step, data, width, height * 3 // 2)
    rows = data.reshape(height * 3 // 2, step)[:, :width]  # (1.5 H, W) view
    return cv2.cvtColor(np.ascontiguousarray(rows), _SEMI_PLANAR[encoding])


def _check_size(encoding, width, height, step, data, row_bytes, rows) -> None:
    if width <= 0 or height <= 0:
        raise FrameError(f"{encoding} image has zero size: width={width}, height={height}")
    if step < row_bytes:
        raise FrameError(f"{encoding} image step {step} < the {row_bytes} bytes of a row of "
                         f"{width} pixels")
    if data.size != step * rows:
        raise FrameError(f"{encoding} image data has {data.size} bytes but step {step} x "
                         f"{rows} rows = {step * rows}; the message is truncated or its step "
                         "is wrong")


def _colormap(plane: np.ndarray) -> np.ndarray:
    """cv_bridge's display of one depth channel: finite values min..max -> 0..255, the JET map,
    NaN (no reading) black; a flat image is mid-grey. :returns: ``(H, W, 3)`` uint8 RGB."""
    values = plane.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any() or values[finite].min() == values[finite].max():
        return np.full((*plane.shape, 3), 127, np.uint8)
    low, high = values[finite].min(), values[finite].max()
    scaled = np.where(finite, (values - low) * (255.0 / (high - low)), 0.0)
    bgr = cv2.applyColorMap(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    bgr[np.isnan(values)] = 0
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
