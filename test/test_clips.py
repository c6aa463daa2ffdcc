"""ClipAssembler: sampling by stamps, grouping into clips, backward stamps, mixed frame sizes."""
import numpy as np
import pytest

from rats_ros.errors import ConfigError, FrameError
from rats_ros.stream.clips import Clip, ClipAssembler, Frame, unusable_size

S = 1_000_000_000
BASE = 1_700_000_000 * S  # realistic epoch stamps, so float precision is exercised


def frame(stamp_ns, value=0, size=(4, 6)):
    return Frame(int(stamp_ns), np.full((*size, 3), value, dtype=np.uint8))


def jittered_stream(seconds, rate_hz=30.0, jitter_s=0.004, seed=0):
    """A camera at ``rate_hz`` whose stamps jitter by up to +-jitter_s (sorted, like a driver)."""
    rng = np.random.default_rng(seed)
    count = int(seconds * rate_hz)
    stamps = np.arange(count) / rate_hz + rng.uniform(-jitter_s, jitter_s, count)
    stamps[0] = 0.0
    return [BASE + round(t * S) for t in np.sort(stamps)]


def run(assembler, stamps):
    clips = [assembler.push(frame(t)) for t in stamps]
    clips.append(assembler.flush())
    return [c for c in clips if c is not None]


@pytest.mark.parametrize("fps", [0.5, 2.0])
def test_jittered_30hz_stream_is_sampled_on_the_stamp_grid(fps):
    stamps = jittered_stream(seconds=40)
    assembler = ClipAssembler(fps=fps, clip_frames=4)
    clips = run(assembler, stamps)
    taken = [f.stamp_ns for c in clips for f in c.frames]
    period = S / fps
    # One frame per grid slot, each the first frame at or just after its sample time.
    assert len(taken) == int(40 * fps)
    for n, stamp in enumerate(taken):
        target = BASE + n * period
        assert target - 5e6 <= stamp < target + S / 30 + 10e6, (n, (stamp - target) / S)
    assert assembler.stats.received == len(stamps)
    assert assembler.stats.sampled == len(taken)
    assert assembler.stats.skipped == len(stamps) - len(taken)


def test_sampling_depends_on_stamps_not_on_arrival_count():
    slow = [BASE + round(i * S / 10) for i in range(200)]   # 10 Hz camera, 20 s
    fast = [BASE + round(i * S / 60) for i in range(1200)]  # 60 Hz camera, 20 s
    clips_slow = run(ClipAssembler(fps=1.0, clip_frames=5), slow)
    clips_fast = run(ClipAssembler(fps=1.0, clip_frames=5), fast)
    assert [(c.start_ns, c.end_ns, len(c)) for c in clips_slow] == \
        [(c.start_ns, c.end_ns, len(c)) for c in clips_fast]
    assert [c.start_ns - BASE for c in clips_slow] == [0, 5 * S, 10 * S, 15 * S]


def test_stream_at_the_sampling_rate_keeps_every_frame_despite_rounding():
    stamps = [BASE + int(i * S / 30) for i in range(90)]  # truncated, slightly before the grid
    assembler = ClipAssembler(fps=30.0, clip_frames=16)
    clips = run(assembler, stamps)
    assert sum(len(c) for c in clips) == 90
    assert assembler.stats.skipped == 0


def test_clips_are_consecutive_non_overlapping_and_flush_emits_the_partial_one():
    assembler = ClipAssembler(fps=1.0, clip_frames=3)
    results = [assembler.push(frame(BASE + i * S)) for i in range(8)]
    full = [c for c in results if c is not None]
    assert [i for i, c in enumerate(results) if c is not None] == [2, 5]
    assert [[f.stamp_ns - BASE for f in c.frames] for c in full] == [[0, S, 2 * S],
                                                                     [3 * S, 4 * S, 5 * S]]
    assert assembler.pending == 2
    last = assembler.flush()
    assert [f.stamp_ns - BASE for f in last.frames] == [6 * S, 7 * S]
    assert (last.start_ns, last.end_ns, len(last)) == (BASE + 6 * S, BASE + 7 * S, 2)
    assert assembler.flush() is None
    assert assembler.stats.clips == 3


def test_a_gap_in_the_stream_does_not_cause_a_burst():
    stamps = [BASE + i * S // 10 for i in range(20)] + [BASE + 10 * S + i * S // 10
                                                         for i in range(20)]
    (clip,) = run(ClipAssembler(fps=1.0, clip_frames=100), stamps)
    assert [f.stamp_ns - BASE for f in clip.frames] == [0, S, 10 * S, 11 * S]


def test_small_backward_step_is_dropped_as_out_of_order():
    assembler = ClipAssembler(fps=2.0, clip_frames=2)
    assert assembler.push(frame(BASE)) is None
    assert assembler.push(frame(BASE + 300_000_000)) is None           # skipped (between samples)
    assert assembler.push(frame(BASE + 100_000_000)) is None           # 0.2 s back: out of order
    clip = assembler.push(frame(BASE + 500_000_000))
    assert [f.stamp_ns - BASE for f in clip.frames] == [0, 500_000_000]
    stats = assembler.stats
    assert (stats.received, stats.sampled, stats.skipped, stats.out_of_order, stats.time_jumps) \
        == (4, 2, 1, 1, 0)


def test_large_backward_jump_flushes_and_restarts_sampling():
    assembler = ClipAssembler(fps=1.0, clip_frames=4)
    for i in range(6):  # a bag loop: 6 s of frames, then back to its start
        assembler.push(frame(BASE + i * S))
    flushed = assembler.push(frame(BASE + 250_000_000, value=7))
    assert [f.stamp_ns - BASE for f in flushed.frames] == [4 * S, 5 * S]
    assert assembler.stats.time_jumps == 1
    assert assembler.pending == 1  # the jumping frame anchors the new grid and is sampled
    for i in range(1, 4):
        clip = assembler.push(frame(BASE + 250_000_000 + i * S))
    assert [f.stamp_ns - BASE for f in clip.frames] == [250_000_000 + i * S for i in range(4)]
    assert clip.frames[0].image[0, 0, 0] == 7


def test_time_jump_threshold_is_configurable():
    assembler = ClipAssembler(fps=1.0, clip_frames=8, time_jump_s=5.0)
    for i in range(10):
        assembler.push(frame(BASE + i * S))
    assert assembler.push(frame(BASE + 7 * S)) is None  # 2 s back < 5 s: out of order
    assert (assembler.stats.out_of_order, assembler.stats.time_jumps) == (1, 0)


def test_mixed_frame_sizes_are_resized_to_the_most_common_size():
    clip = Clip([frame(0, 10, (24, 32)), frame(S, 200, (48, 64)), frame(2 * S, 90, (12, 20)),
                 frame(3 * S, 50, (48, 64))])
    pixels = clip.pixels()
    assert pixels.shape == (4, 48, 64, 3) and pixels.dtype == np.uint8
    assert [int(p.mean()) for p in pixels] == [10, 200, 90, 50]
    one_each = Clip([frame(0, 1, (1, 1)), frame(S, 2, (48, 64)), frame(2 * S, 3, (24, 32))])
    assert one_each.pixels().shape == (3, 48, 64, 3)  # a 1x1 first frame does not decide


def test_unusable_frame_sizes_are_named():
    assert unusable_size(480, 640) is None and unusable_size(16, 16) is None
    assert "under 16 px" in unusable_size(1, 1)
    assert "under 16 px" in unusable_size(4, 1000)  # the tryout's 1000 x 4 frame
    assert "elongated" in unusable_size(40, 1000)


def test_repeated_stamps_are_counted_and_dropped():
    assembler = ClipAssembler(fps=1.0, clip_frames=2)
    assert [assembler.push(frame(5 * S, 1)) for _ in range(5)] == [None] * 5
    assert assembler.stats.repeated_stamps == 4 and assembler.pending == 1


def test_the_time_jump_threshold_follows_the_sampling_period():
    slow = ClipAssembler(fps=0.5, clip_frames=4)  # a 2 s period: jumps start at 4 s back
    assert slow.time_jump_s == 4.0
    for t in (100, 102, 104):
        slow.push(frame(t * S, 1))
    slow.push(frame(101 * S, 1))  # one late frame, 3 s back: out of order, no new grid
    assert (slow.stats.out_of_order, slow.stats.time_jumps) == (1, 0)
    assert ClipAssembler(fps=30.0).time_jump_s == 1.0


@pytest.mark.parametrize("kwargs", [dict(fps=0), dict(fps=-1.0), dict(fps=float("nan")),
                                    dict(fps=1.0, clip_frames=0), dict(fps=1.0, clip_frames=2.5),
                                    dict(fps=1.0, time_jump_s=0)])
def test_config_out_of_range_raises_config_error(kwargs):
    with pytest.raises(ConfigError, match="must be"):
        ClipAssembler(**kwargs)


@pytest.mark.parametrize("image", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                   np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8),
                                   [[0, 0, 0]]])
def test_frame_rejects_non_rgb_images(image):
    with pytest.raises(FrameError):
        Frame(0, image)


def test_frame_rejects_bad_stamps_and_clip_rejects_no_frames():
    with pytest.raises(FrameError, match="stamp"):
        Frame(-1, np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(FrameError, match="stamp"):
        Frame(1.5, np.zeros((2, 2, 3), np.uint8))
    assert Frame(np.int64(5), np.zeros((2, 2, 3), np.uint8)).stamp_ns == 5
    with pytest.raises(FrameError, match="at least one frame"):
        Clip([])
