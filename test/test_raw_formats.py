"""Bayer, mono16, NV12 / NV21 and depth images decoded as cv_bridge decodes them, against cv2's
own conversion of the same bytes (real layouts: row padding, both byte orders)."""
import sys

import cv2
import numpy as np
import pytest

from rats_ros.errors import FrameError
from rats_ros.io.images import decode_raw

RNG = np.random.default_rng(7)
H, W = 24, 32
#: cv_bridge (ros-perception/vision_opencv cv_bridge.cpp, getConversionCode): the pattern a
#: sensor_msgs encoding names -> OpenCV's code (OpenCV names the second row's pair)
CV_BRIDGE_BAYER = {"rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB,
                   "gbrg": cv2.COLOR_BayerGR2RGB, "grbg": cv2.COLOR_BayerGB2RGB}
CHANNEL = {"r": 0, "g": 1, "b": 2}


def smooth_rgb(dtype=np.uint8) -> np.ndarray:
    """A smooth colour image (demosaicing is exact on smooth images, up to rounding)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    top = 255 if dtype == np.uint8 else 65535
    rgb = np.stack([x / W, y / H, 1 - (x + y) / (W + H)], axis=-1) * 0.8 * top + 0.1 * top
    return rgb.astype(dtype)


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The Bayer sensor's samples of ``rgb``: ``pattern`` is the top-left 2x2 block, row by row."""
    out = np.empty(rgb.shape[:2], rgb.dtype)
    for i, colour in enumerate(pattern):
        dy, dx = divmod(i, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, CHANNEL[colour]]
    return out


def padded(plane: np.ndarray, pad: int = 6) -> tuple[int, bytes]:
    """``(step, data)`` of a plane with ``pad`` bytes at the end of every row."""
    rows = plane.reshape(plane.shape[0], -1).view(np.uint8)
    out = np.zeros((rows.shape[0], rows.shape[1] + pad), np.uint8)
    out[:, :rows.shape[1]] = rows
    return out.shape[1], out.tobytes()


@pytest.mark.parametrize("pattern", list(CV_BRIDGE_BAYER))
def test_bayer8_is_cv2s_demosaic_with_cv_bridges_code_and_restores_the_colours(pattern):
    rgb = smooth_rgb()
    raw = mosaic(rgb, pattern)
    step, data = padded(raw)
    ours = decode_raw(f"bayer_{pattern}8", W, H, step, data, max_side=None)
    np.testing.assert_array_equal(ours, cv2.cvtColor(raw, CV_BRIDGE_BAYER[pattern]))
    inner = (slice(2, -2), slice(2, -2))  # the pattern is right: the colours come back
    assert np.abs(ours[inner].astype(int) - rgb[inner]).max() <= 3


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("pattern", ["rggb", "gbrg"])
def test_bayer16_is_demosaiced_then_scaled_to_8_bit_in_either_byte_order(pattern, big_endian):
    rgb16 = smooth_rgb(np.uint16)
    raw = mosaic(rgb16, pattern)
    wire = raw.astype(">u2" if big_endian else "<u2")
    step, data = padded(wire)
    ours = decode_raw(f"bayer_{pattern}16", W, H, step, data, is_bigendian=int(big_endian),
                      max_side=None)
    expected = cv2.convertScaleAbs(cv2.cvtColor(raw, CV_BRIDGE_BAYER[pattern]),
                                   alpha=255 / 65535)
    np.testing.assert_array_equal(ours, expected)
    assert ours.dtype == np.uint8 and ours.shape == (H, W, 3)


def test_mono16_scales_to_8_bit_grey():
    grey = (RNG.integers(0, 65536, (H, W))).astype(np.uint16)
    step, data = padded(grey.astype("<u2"))
    ours = decode_raw("mono16", W, H, step, data, max_side=None)
    expected = np.rint(grey / 65535 * 255).astype(np.uint8)
    np.testing.assert_array_equal(ours, np.repeat(expected[..., None], 3, axis=-1))


@pytest.mark.parametrize("encoding, code", [("nv12", cv2.COLOR_YUV2RGB_NV12),
                                            ("nv21", cv2.COLOR_YUV2RGB_NV21)])
def test_nv12_and_nv21_are_cv2s_conversion_of_the_planes(encoding, code):
    planes = RNG.integers(16, 240, (H * 3 // 2, W), dtype=np.uint8)  # Y rows, then UV rows
    step, data = padded(planes, pad=8)
    ours = decode_raw(encoding, W, H, step, data, max_side=None)
    np.testing.assert_array_equal(ours, cv2.cvtColor(planes, code))
    with pytest.raises(FrameError, match="width and height must be even"):
        decode_raw(encoding, W - 1, H, step, data)
    with pytest.raises(FrameError, match="truncated"):
        decode_raw(encoding, W, H, step, data[:-step])


@pytest.mark.parametrize("encoding, dtype", [("16UC1", np.uint16), ("32FC1", np.float32)])
def test_depth_is_refused_unless_a_colour_map_is_asked_for(encoding, dtype):
    depth = (np.linspace(0.5, 4.0, H * W).reshape(H, W) * (1000 if dtype == np.uint16 else 1)
             ).astype(dtype)
    if dtype == np.float32:
        depth[0, :4] = np.nan  # no reading
    step, data = padded(depth.astype(depth.dtype.newbyteorder("<")))
    with pytest.raises(FrameError, match="depth image, not colour.*depth_images"):
        decode_raw(encoding, W, H, step, data)
    shown = decode_raw(encoding, W, H, step, data, max_side=None, depth="colormap")
    values = depth.astype(np.float64)
    finite = np.isfinite(values)
    scaled = np.zeros_like(values)
    scaled[finite] = (values[finite] - values[finite].min()) * 255 / np.ptp(values[finite])
    expected = cv2.applyColorMap(np.rint(scaled).astype(np.uint8), cv2.COLORMAP_JET)
    expected[~finite] = 0
    np.testing.assert_array_equal(shown, cv2.cvtColor(expected, cv2.COLOR_BGR2RGB))


def test_extra_encodings_are_downscaled_like_the_others():
    raw = mosaic(np.repeat(np.repeat(smooth_rgb(), 8, 0), 8, 1), "rggb")  # 192 x 256
    small = decode_raw("bayer_rggb8", raw.shape[1], raw.shape[0], raw.shape[1], raw.tobytes(),
                       max_side=64)
    assert small.shape == (48, 64, 3)


def test_this_machine_reads_little_endian_samples_natively():
    assert sys.byteorder == "little"  # the big-endian case above is the swapped one
