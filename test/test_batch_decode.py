"""Several cameras decoded together give each camera what it gets alone (CPU, fp32)."""
import numpy as np
import pytest
import torch

from rats_ros.errors import ConfigError, FrameError, ModelError
from rats_ros.models import load_backend
from rats_ros.models.base import FastConfig
from rats_ros.models.fast import batch as fast_batch
from rats_ros.models.fast import decode as fast_decode
from rats_ros.models.fast import prefill as fast_prefill
from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner, step_many
from rats_ros.stream.clips import Clip, Frame

FAMILIES = ("tiny-random", "tiny-random-qwen2_5_vl", "tiny-random-qwen3_vl")


@pytest.fixture(scope="module", params=FAMILIES)
def backend(request, model_cache):
    return load_backend(request.param)


def prompts(backend, lengths):
    generator = torch.Generator().manual_seed(sum(lengths))
    return [torch.randn(n, backend.hidden_size, generator=generator) * 0.1 for n in lengths]


def test_each_row_decodes_as_the_prompt_alone(backend):
    single = fast_decode.FastDecoder(backend.model, backend.readout_layers)
    batch = fast_batch.BatchDecoder(single)
    inputs = prompts(backend, (37, 90, 61))
    spans = [(5, 30), (10, 80), None]
    alone = [single.run(p, 12, (), span) for p, span in zip(inputs, spans, strict=True)]
    # an end id that row 1 emits early: it stops there, the others run on
    stop = alone[1].token_ids[3]
    alone = [single.run(p, 12, (stop,), span) for p, span in zip(inputs, spans, strict=True)]
    together = batch.run(inputs, 12, (stop,), spans)
    for mine, theirs in zip(together, alone, strict=True):
        assert mine.token_ids == theirs.token_ids
        assert mine.count == theirs.count
        if theirs.sums is None:
            assert mine.sums is None
        else:
            torch.testing.assert_close(mine.sums, theirs.sums, rtol=1e-5, atol=1e-7)
    assert together[1].token_ids[-1] == stop and len(together[1].token_ids) <= 4  # stopped
    again = batch.run(inputs[:2], 12, (stop,), spans[:2])  # another row count: its own buffers
    assert [r.token_ids for r in again] == [r.token_ids for r in alone[:2]]


def test_prompts_over_the_token_limit_are_prefilled_in_packs(backend, monkeypatch):
    assert fast_prefill.packs([5, 6, 7], limit=11) == [[0, 1], [2]]
    assert fast_prefill.packs([20, 3, 4], limit=11) == [[0], [1, 2]]
    batch = fast_batch.BatchDecoder(fast_decode.FastDecoder(backend.model, backend.readout_layers))
    inputs, spans = prompts(backend, (37, 90, 61)), [(5, 30), None, (0, 61)]
    whole = batch.run(inputs, 6, (), spans)
    monkeypatch.setattr(fast_prefill, "MAX_PACKED_TOKENS", 100)  # packs [0], [1], [2]
    packed = batch.run(inputs, 6, (), spans)
    for mine, theirs in zip(packed, whole, strict=True):
        assert mine.token_ids == theirs.token_ids
        if theirs.sums is not None:
            torch.testing.assert_close(mine.sums, theirs.sums, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (bench device)")
@pytest.mark.parametrize("name", FAMILIES)
def test_cuda_graphed_rows_equal_the_single_decoder(model_cache, name):
    backend = load_backend(name, device="cuda", dtype="float32")
    single = fast_decode.FastDecoder(backend.model, backend.readout_layers)
    assert single.use_cuda_graph
    batch = fast_batch.BatchDecoder(single)
    inputs = [p.cuda() for p in prompts(backend, (300, 120, 700, 64))]
    spans = [(10, 200), (0, 100), (50, 650), None]
    for _ in range(2):  # capture, then replay
        together = batch.run(inputs, 16, (), spans)
        for mine, p, span in zip(together, inputs, spans, strict=True):
            theirs = single.run(p, 16, (), span)
            assert mine.token_ids == theirs.token_ids
            if span is not None:
                torch.testing.assert_close(mine.sums, theirs.sums, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (bench device)")
def test_cuda_buffers_grow_under_a_single_batch_size(model_cache):
    """One batch size whose prompts outgrow its buffers (a node whose cameras' memories fill):
    its graphs are dropped and captured again. Found on the H200: with no other batch size's
    graph left in the pool, capturing into the emptied pool failed PyTorch's allocator assert
    (``use_count > 0``) and would have stopped the worker."""
    backend = load_backend("tiny-random", device="cuda", dtype="float32")
    batch = fast_batch.BatchDecoder(fast_decode.FastDecoder(backend.model, bucket=64))
    for length in (100, 100, 700, 2000, 700):  # grows twice, then reuses
        inputs = [p.cuda() for p in prompts(backend, (length, length // 2))]
        together = batch.run(inputs, 8, ())
        alone = [batch.single.run(p, 8, ()) for p in inputs]
        assert [r.token_ids for r in together] == [r.token_ids for r in alone]


def test_bad_batches_are_refused(backend):
    batch = fast_batch.BatchDecoder(fast_decode.FastDecoder(backend.model))
    with pytest.raises(ModelError):
        batch.run([], 4)
    with pytest.raises(ModelError):
        batch.run(prompts(backend, (5, 6)), 4, readout_ranges=[None])


def clip(seed, index):
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)
    return Clip([Frame((index * 8 + i) * 2_000_000_000, pixels[i]) for i in range(8)])


def test_cameras_captioned_together_equal_each_alone(backend):
    """Three cameras, three clips each, memory fed back: the batched step (fast path, CPU)
    gives every camera the captions, kept tokens and memory its own steps give."""
    config = CaptionerConfig(max_new_tokens=6)
    backend.use_fast(FastConfig(decode=True))
    try:
        alone = [RecurrentCaptioner(backend, config) for _ in range(3)]
        together = [RecurrentCaptioner(backend, config) for _ in range(3)]
        for index in range(3):
            clips = [clip(10 * camera + index, index) for camera in range(3)]
            expected = [c.step(x) for c, x in zip(alone, clips, strict=True)]
            got = step_many(together, clips)
            for mine, theirs in zip(got, expected, strict=True):
                assert mine.token_ids == theirs.token_ids and mine.text == theirs.text
                assert mine.kept_indices == theirs.kept_indices
                assert mine.clip_index == theirs.clip_index == index
        assert isinstance(backend.fast.batch, fast_batch.BatchDecoder)  # it ran batched
        for mine, theirs in zip(together, alone, strict=True):
            torch.testing.assert_close(mine.memory.tokens(), theirs.memory.tokens())
    finally:
        backend.use_fast(FastConfig())


def check_prepare(backend) -> None:
    """What a node builds at configure is what its first clips and question use, not built
    again; with the fast path off there is nothing to build."""
    fast = backend.fast
    fast.clear()
    backend.use_fast(FastConfig(decode=False))
    try:
        assert backend.prepare(3) == 0.0
        assert fast.caption is fast.answer is fast.batch is None
        backend.use_fast(FastConfig(decode=True))
        assert backend.prepare(1) > 0.0
        single, answers = backend.fast.caption, backend.fast.answer
        assert single is not answers and backend.fast.batch is None
        backend.prepare(3)
        batch = backend.fast.batch
        assert batch.single is single and backend.fast.caption is single
        config = CaptionerConfig(max_new_tokens=4)
        step_many([RecurrentCaptioner(backend, config) for _ in range(3)],
                  [clip(camera, 0) for camera in range(3)])
        assert backend.fast.batch is batch and backend.fast.caption is single
        backend.generate("What happened?", 4)
        assert backend.fast.answer is answers
    finally:
        backend.use_fast(FastConfig())


def test_prepare_builds_the_decoders_the_first_clips_use(backend):
    check_prepare(backend)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="tiles are timed on a GPU (bench device)")
@pytest.mark.parametrize("name", ("tiny-random", "tiny-random-qwen3_vl"))
def test_cuda_prepare_times_the_tiles_the_first_clips_use(model_cache, name):
    backend = load_backend(name, device="cuda", dtype="bfloat16")
    check_prepare(backend)
    assert backend.fast.caption.fused_step and backend.fast.batch.fused
    assert set(backend.fast.caption.tiles) == set(backend.fast.batch.tiles) == {
        "qkv", "o", "gate_up", "down"}  # timed on this GPU in prepare


def test_captioners_that_differ_are_not_batched(backend):
    a = RecurrentCaptioner(backend, CaptionerConfig(max_new_tokens=4))
    b = RecurrentCaptioner(backend, CaptionerConfig(max_new_tokens=5))
    with pytest.raises(ConfigError, match="must share"):
        step_many([a, b], [clip(0, 0), clip(1, 0)])
    with pytest.raises(ConfigError):
        step_many([a], [])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen kernel needs CUDA")
@pytest.mark.parametrize("name", FAMILIES)
def test_cuda_bf16_packed_prefill_is_each_prompts_own(model_cache, name):
    """What a GPU runs for cameras captioned together (varlen causal attention over the packed
    prompts) against each prompt's own prefill: same first token, same read-out up to bf16."""
    backend = load_backend(name, device="cuda", dtype="bfloat16")
    single = fast_decode.FastDecoder(backend.model, backend.readout_layers)
    assert fast_prefill.CAUSAL is not None  # the varlen path is the one under test
    batch = fast_batch.BatchDecoder(single)
    inputs = [p.to("cuda", torch.bfloat16) for p in prompts(backend, (300, 120, 700))]
    spans = [(10, 200), (0, 100), (50, 650)]
    together = batch.run(inputs, 1, (), spans)
    for mine, p, span in zip(together, inputs, spans, strict=True):
        theirs = single.run(p, 1, (), span)
        assert mine.token_ids == theirs.token_ids
        assert float(torch.nn.functional.cosine_similarity(mine.sums, theirs.sums, dim=0)) > 0.999


@pytest.mark.parametrize("name", FAMILIES)
def test_clips_of_one_shape_are_encoded_in_one_forward(model_cache, name):
    """Every family's tower attends within a clip's frames (and windows): several clips in one
    forward give each clip's own tokens (and Qwen3-VL's DeepStack features); a clip of another
    shape, or one bad clip, falls back or fails whole."""
    backend = load_backend(name)
    rng = np.random.default_rng(4)
    pixels = [rng.integers(0, 256, (8, 48, 64, 3), dtype=np.uint8) for _ in range(3)]
    together = backend.encode_clips(pixels)
    for mine, alone in zip(together, pixels, strict=True):
        theirs = backend.encode_clip(alone)
        torch.testing.assert_close(mine.tokens, theirs.tokens, rtol=1e-5, atol=1e-5)
        assert (mine.deepstack is None) == (theirs.deepstack is None)
        if mine.deepstack is not None:
            torch.testing.assert_close(mine.deepstack, theirs.deepstack, rtol=1e-5, atol=1e-5)
    odd = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    mixed = backend.encode_clips([pixels[0], odd])  # two shapes: one by one
    torch.testing.assert_close(mixed[1].tokens, backend.encode_clip(odd).tokens, rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(FrameError):
        backend.encode_clips([pixels[0], pixels[1][..., :2]])  # a clip without 3 channels
    with pytest.raises(FrameError):  # same shape, not uint8: the batched path refuses it
        backend.encode_clips([pixels[0], pixels[1].astype(np.float32)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (bench device)")
@pytest.mark.parametrize("name", FAMILIES)
def test_cuda_bf16_clips_encoded_together_are_each_clips_own(model_cache, name):
    """On the GPU's kernels (varlen attention, the RoPE kernel), bf16: the same tokens to bf16
    precision (the packed products may sum in another order)."""
    backend = load_backend(name, device="cuda", dtype="bfloat16")
    rng = np.random.default_rng(5)
    pixels = [rng.integers(0, 256, (8, 96, 128, 3), dtype=np.uint8) for _ in range(4)]
    for mine, alone in zip(backend.encode_clips(pixels), pixels, strict=True):
        theirs = backend.encode_clip(alone)
        cosine = torch.nn.functional.cosine_similarity(mine.tokens.float(),
                                                       theirs.tokens.float(), dim=-1)
        assert float(cosine.min()) > 0.99
