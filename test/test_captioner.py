"""RecurrentCaptioner on both tiny backends: the loop, memory, ablations, determinism."""

import numpy as np
import pytest
import torch

from rats_ros.errors import ConfigError
from rats_ros.models import load_backend
from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner
from rats_ros.stream.clips import Clip, Frame

SECOND = 1_000_000_000




def make_clips(count, frames=16, seed=0, start_s=100):
    """Clips of random frames, one frame every 2 s (0.5 fps, as in the paper)."""
    rng = np.random.default_rng(seed)
    clips = []
    for c in range(count):
        stamps = [(start_s + 2 * (c * frames + i)) * SECOND for i in range(frames)]
        clips.append(Clip([Frame(s, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
                           for s in stamps]))
    return clips


@pytest.fixture(scope="module", params=["tiny-random", "tiny-random-qwen2_5_vl",
                                        "tiny-random-qwen3_vl"])
def backend(request, model_cache):
    return load_backend(request.param)


def test_three_clip_stream(backend):
    captioner = RecurrentCaptioner(backend, CaptionerConfig(max_new_tokens=8), start_index=5)
    clips = make_clips(3)
    results = [captioner.step(clip) for clip in clips]
    n = backend.num_visual_tokens(16, 48, 64)
    k = max(1, round(n / 16))
    for i, (clip, result) in enumerate(zip(clips, results, strict=True)):
        assert result.clip_index == 5 + i
        assert (result.start_ns, result.end_ns) == (clip.start_ns, clip.end_ns)
        assert result.frames == 16 and result.visual_tokens == n and result.kept_tokens == k
        assert result.memory_tokens == i * k  # memory in front of this clip
        assert len(result.kept_indices) == k and result.kept_indices == sorted(result.kept_indices)
        assert 1 <= len(result.token_ids) <= 8 and isinstance(result.text, str)
        assert set(result.timings) == {"encode", "prefill", "decode", "select"}
        assert result.processing_time >= sum(result.timings.values()) * 0.99
        assert result.model == backend.name
        groups, rows, cols = result.token_grid
        assert groups * rows * cols == n and result.frames_per_group == backend.frames_per_group
    assert len(captioner.memory) == 3 and captioner.memory.num_tokens == 3 * k


def test_memory_holds_the_selected_tokens_in_fifo_order(backend):
    config = CaptionerConfig(max_new_tokens=4, memory_clips=2)
    captioner = RecurrentCaptioner(backend, config)
    clips = make_clips(4, frames=4, seed=1)
    kept = []
    for clip in clips:
        kept.append(captioner.step(clip).kept_indices)
    expected = torch.cat([backend.encode_clip(clip.pixels()).tokens[idx]
                          for clip, idx in zip(clips[2:], kept[2:], strict=True)])
    assert len(captioner.memory) == 2
    assert torch.equal(captioner.memory.tokens(), expected)


def test_selected_indices_are_top_k_of_the_backend_scores(backend):
    clip = make_clips(1, seed=2)[0]
    result = RecurrentCaptioner(backend, CaptionerConfig(max_new_tokens=6)).step(clip)
    visual = backend.encode_clip(clip.pixels())
    scores = backend.caption(torch.empty(0, 0), visual, CaptionerConfig().prompt, 6, True).scores
    k = result.kept_tokens
    assert sorted(torch.topk(scores, k).indices.tolist()) == result.kept_indices


def test_deterministic(backend):
    clips = make_clips(3, frames=6, seed=3)
    runs = []
    for _ in range(2):
        captioner = RecurrentCaptioner(backend, CaptionerConfig(max_new_tokens=6))
        runs.append([(r.text, r.token_ids, r.kept_indices) for r in map(captioner.step, clips)])
    assert runs[0] == runs[1]
    captioner.reset()
    again = [(r.text, r.token_ids, r.kept_indices) for r in map(captioner.step, clips)]
    assert again == runs[0] and captioner.next_index == 3


def test_recurrence_off_never_uses_memory(backend):
    config = CaptionerConfig(max_new_tokens=4, recurrence=False)
    captioner = RecurrentCaptioner(backend, config)
    results = [captioner.step(clip) for clip in make_clips(3, frames=4, seed=4)]
    assert [r.memory_tokens for r in results] == [0, 0, 0] and len(captioner.memory) == 0
    first = RecurrentCaptioner(backend, config).step(make_clips(3, frames=4, seed=4)[2])
    assert first.token_ids == results[2].token_ids  # same as captioning that clip alone


@pytest.mark.parametrize("method", ["uniform", "random", "all"])
def test_ablations(backend, method):
    config = CaptionerConfig(max_new_tokens=4, selection=method, seed=11)
    clips = make_clips(2, frames=4, seed=5)
    results = [RecurrentCaptioner(backend, config).step(clips[0]) for _ in range(2)]
    assert results[0].kept_indices == results[1].kept_indices
    n = results[0].visual_tokens
    expected_k = n if method == "all" else max(1, round(n / 16))
    assert results[0].kept_tokens == expected_k
    captioner = RecurrentCaptioner(backend, config)
    captioner.step(clips[0])
    assert captioner.step(clips[1]).memory_tokens == expected_k


def test_short_last_clip(backend):
    clip = make_clips(1, frames=3, seed=6)[0]
    result = RecurrentCaptioner(backend, CaptionerConfig(max_new_tokens=4)).step(clip)
    assert result.frames == 3 and result.visual_tokens == backend.num_visual_tokens(3, 48, 64)


@pytest.mark.parametrize("kwargs", [
    {"keep_ratio": 0}, {"keep_ratio": 1.5}, {"memory_clips": 0}, {"selection": "kmeans"},
    {"recurrence": "yes"}, {"prompt": " "}, {"max_new_tokens": 0}, {"seed": -1},
])
def test_bad_config_raises(kwargs):
    with pytest.raises(ConfigError):
        CaptionerConfig(**kwargs)
