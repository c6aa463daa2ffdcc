"""images: every supported encoding decodes to the right RGB; refused ones say why."""
import array
import resource
import tracemalloc

import numpy as np
import pytest
from helpers import png_bomb

from rats_ros.errors import ConfigError, FrameError
from rats_ros.io.images import (
    COLOUR_ENCODINGS,
    ImageTooLarge,
    compressed_size,
    decode_compressed,
    decode_raw,
    encode_compressed,
    encode_raw,
)

# Colour bars, each 2 pixels wide so YUV 4:2:2 (one chroma pair per 2 pixels) keeps them exact.
BARS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0],
                 [255, 255, 0], [40, 120, 200], [128, 128, 128]], dtype=np.uint8)


def colour_bars(height=6):
    row = np.repeat(BARS, 2, axis=0)  # (16, 3)
    return np.ascontiguousarray(np.broadcast_to(row, (height, 16, 3)))  # (H, 16, 3)


def grey(rgb):
    return np.round(rgb @ np.array([0.299, 0.587, 0.114])).astype(int)


def pad_rows(data, height, step, pad):
    return b"".join(data[r * step:(r + 1) * step] + b"\xab" * pad for r in range(height))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip_exactly(encoding):
    rgb = colour_bars()
    enc, width, height, step, data = encode_raw(rgb, encoding)
    assert (enc, width, height) == (encoding, 16, 6)
    assert len(data) == step * height
    np.testing.assert_array_equal(decode_raw(enc, width, height, step, data), rgb)


def test_hand_built_bgr_and_bgra_bytes_are_swapped_to_rgb():
    bgr = bytes([10, 20, 30] * 4)  # 2x2 pixels, B=10 G=20 R=30
    assert decode_raw("bgr8", 2, 2, 6, bgr)[0, 0].tolist() == [30, 20, 10]
    bgra = bytes([10, 20, 30, 99] * 4)
    assert decode_raw("bgra8", 2, 2, 8, bgra)[1, 1].tolist() == [30, 20, 10]
    rgba = bytes([10, 20, 30, 99] * 4)
    assert decode_raw("rgba8", 2, 2, 8, rgba)[1, 0].tolist() == [10, 20, 30]


def test_mono8_becomes_grey_rgb():
    rgb = colour_bars()
    enc, width, height, step, data = encode_raw(rgb, "mono8")
    assert step == 16
    out = decode_raw(enc, width, height, step, data)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.abs(out[..., 0].astype(int) - grey(rgb)).max() <= 1


@pytest.mark.parametrize("encoding", ["uyvy", "yuv422", "yuyv", "yuv422_yuy2"])
def test_packed_yuv_round_trips_colour_bars(encoding):
    rgb = colour_bars()
    enc, width, height, step, data = encode_raw(rgb, encoding)
    assert step == 32
    out = decode_raw(enc, width, height, step, data)
    assert np.abs(out.astype(int) - rgb).max() <= 6  # BT.601 video range rounding


@pytest.mark.parametrize("encoding, order", [("uyvy", "UYVY"), ("yuyv", "YUYV")])
def test_hand_built_yuv_bytes_decode_to_known_colours(encoding, order):
    # Video-range BT.601: white Y=235, black Y=16, pure red Y=81 U=90 V=240.
    def pair(y, u, v):
        values = {"Y": y, "U": u, "V": v}
        return bytes(values[c] for c in order)  # both Y of a pair are the same
    row = pair(235, 128, 128) + pair(16, 128, 128) + pair(81, 90, 240)
    out = decode_raw(encoding, 6, 1, 12, row)
    expected = [[255, 255, 255]] * 2 + [[0, 0, 0]] * 2 + [[255, 0, 0]] * 2
    assert np.abs(out[0].astype(int) - np.array(expected)).max() <= 3


@pytest.mark.parametrize("encoding", COLOUR_ENCODINGS)  # the others: test_raw_formats.py
def test_padded_rows_are_skipped(encoding):
    rgb = colour_bars()
    enc, width, height, step, data = encode_raw(rgb, encoding)
    padded = pad_rows(data, height, step, pad=7)
    plain = decode_raw(enc, width, height, step, data)
    np.testing.assert_array_equal(decode_raw(enc, width, height, step + 7, padded), plain)


@pytest.mark.parametrize("encoding", ["8UC3", "rgb16", "", "jpeg", "yuv420"])
def test_refused_encoding_names_itself_and_the_supported_ones(encoding):
    with pytest.raises(FrameError) as info:
        decode_raw(encoding, 2, 2, 12, bytes(24))
    assert repr(encoding) in str(info.value)
    assert "rgb8" in str(info.value) and "yuyv" in str(info.value)


def test_size_and_step_mismatches_give_the_numbers():
    with pytest.raises(FrameError, match="zero size"):
        decode_raw("rgb8", 0, 4, 0, b"")
    with pytest.raises(FrameError, match="zero size"):
        decode_raw("rgb8", 4, 0, 12, b"")
    with pytest.raises(FrameError, match=r"step 10 < width 4 x 3 .* = 12"):
        decode_raw("rgb8", 4, 2, 10, bytes(20))
    with pytest.raises(FrameError, match=r"23 bytes but step 12 x height 2 = 24"):
        decode_raw("rgb8", 4, 2, 12, bytes(23))
    with pytest.raises(FrameError, match="width must be even"):
        decode_raw("uyvy", 3, 2, 6, bytes(12))
    with pytest.raises(FrameError, match="uint8"):
        decode_raw("rgb8", 2, 1, 6, np.zeros(6, np.float32))


def test_accepted_buffer_types():
    rgb = colour_bars(2)
    _, width, height, step, data = encode_raw(rgb, "rgb8")
    for buffer in (data, bytearray(data), memoryview(data), array.array("B", data),
                   np.frombuffer(data, np.uint8), list(data)):
        np.testing.assert_array_equal(decode_raw("rgb8", width, height, step, buffer), rgb)


def test_output_owns_its_memory():
    data = bytearray(encode_raw(colour_bars(2), "rgb8")[4])
    out = decode_raw("rgb8", 16, 2, 48, data)
    data[:3] = b"\x01\x02\x03"
    assert out[0, 0].tolist() == [255, 0, 0]


def test_8k_frame_is_downscaled_without_extra_full_copies():
    width, height = 7680, 4320
    full = width * height * 3
    data = np.full(full, 77, np.uint8).tobytes()
    tracemalloc.start()
    try:
        out = decode_raw("bgr8", width, height, width * 3, data, max_side=768)
        bgr_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        yuv = np.full(width * height * 2, 128, np.uint8)
        yuv_out = decode_raw("uyvy", width, height, width * 2, yuv, max_side=768)
        yuv_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (432, 768, 3) and (out == 77).all()
    assert yuv_out.shape == (432, 768, 3)
    assert bgr_peak < 0.2 * full  # the input is viewed, only the small output is allocated
    assert yuv_peak < 2.0 * full  # the YUV input + one full-size RGB conversion


def test_max_side_none_keeps_size_and_bad_max_side_is_config_error():
    rgb = colour_bars()
    args = encode_raw(rgb, "rgb8")
    assert decode_raw(*args, max_side=None).shape == (6, 16, 3)
    assert decode_raw(*args, max_side=8).shape == (3, 8, 3)
    with pytest.raises(ConfigError, match="max_side"):
        decode_raw(*args, max_side=0)


@pytest.mark.parametrize("fmt, wire_format", [("jpeg", "jpeg"),
                                              ("jpeg", "rgb8; jpeg compressed bgr8"),
                                              ("png", "bgr8; png compressed bgr8")])
def test_compressed_round_trip(fmt, wire_format):
    rgb = np.repeat(np.repeat(colour_bars(2), 8, axis=0), 8, axis=1)  # (16, 128, 3) big blocks
    data = encode_compressed(rgb, fmt)
    out = decode_compressed(wire_format, data, max_side=None)
    tolerance = 0 if fmt == "png" else 24
    assert out.shape == rgb.shape
    assert np.abs(out[4:12, 4::16].astype(int) - rgb[4:12, 4::16]).max() <= tolerance
    assert decode_compressed(wire_format, data, max_side=64).shape == (8, 64, 3)


def test_garbage_and_depth_compressed_images_raise_frame_error():
    with pytest.raises(FrameError, match="cannot be decoded"):
        decode_compressed("jpeg", b"\xff\xd8 this is not a jpeg" * 10)
    with pytest.raises(FrameError, match="no data"):
        decode_compressed("jpeg", b"")
    with pytest.raises(FrameError, match="depth"):
        decode_compressed("16UC1; compressedDepth png", encode_compressed(colour_bars(), "png"))


def test_encoders_reject_bad_input():
    with pytest.raises(FrameError, match="cannot encode"):
        encode_raw(colour_bars(), "mono16")
    with pytest.raises(FrameError, match="RGB"):
        encode_raw(np.zeros((2, 2), np.uint8))
    with pytest.raises(FrameError, match="jpeg, png"):
        encode_compressed(colour_bars(), "webp")


def test_header_sizes_of_png_and_jpeg_are_read_without_decoding():
    image = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    for fmt in ("png", "jpeg"):
        data = np.frombuffer(encode_compressed(image, fmt), np.uint8)
        assert compressed_size(data) == (200, 120), fmt
    assert compressed_size(np.frombuffer(b"GIF89a" + bytes(30), np.uint8)) is None


def test_a_png_decompression_bomb_is_refused_before_decoding():
    bomb = png_bomb(20000, 20000)
    assert len(bomb) < 2_000_000  # 1.2 GB of pixels in ~1 MB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLarge, match="20000 x 20000 px exceeds"):
        decode_compressed("png", bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_a_large_jpeg_is_decoded_at_reduced_scale_to_the_same_size():
    image = np.random.default_rng(1).integers(0, 255, (1600, 3200, 3), dtype=np.uint8)
    small = decode_compressed("jpeg", encode_compressed(image, "jpeg"), max_side=768)
    assert small.shape == (384, 768, 3)
