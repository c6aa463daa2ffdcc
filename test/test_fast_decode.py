"""The fast decode path gives the plain path's tokens and read-out scores.

CPU runs exercise the static-cache decode step without a CUDA graph (the same arithmetic that
the graph captures). The CUDA-graph test runs only where CUDA exists (the bench device); on a CPU
machine pytest reports it as skipped, never as passed.
"""
import contextlib
import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from helpers import wait_for

from rats_ros.errors import ModelError
from rats_ros.models import load_backend
from rats_ros.models import readout as ro
from rats_ros.models.base import FastConfig, PrefillInputs
from rats_ros.models.fast import decode as fast_decode
from rats_ros.models.fast import hook as fast_hook
from rats_ros.models.fast import layers as fast_layers
from rats_ros.models.fast import static as fast_static

PROMPT = "Describe what's happening in this video."


FAMILIES = ("tiny-random", "tiny-random-qwen2_5_vl", "tiny-random-qwen3_vl")


@pytest.fixture(scope="module", params=FAMILIES)
def backend(request, model_cache):
    """LLaVA-OV (Qwen2 LLM), Qwen2.5-VL and Qwen3-VL: with the method's contiguous positions all
    three M-RoPE sections get the same index, which is plain RoPE, so the plain path (the model's
    own forward, M-RoPE, Qwen3's q/k norms and DeepStack included) and the fast path must agree."""
    return load_backend(request.param)


def clip(seed):
    return np.random.default_rng(seed).integers(0, 256, (16, 48, 64, 3), dtype=np.uint8)


def plain_and_fast(backend, memory_tokens, max_new, eos_ids=None, **fast_kwargs):
    """Decode the same prompt through the backend's plain loop and through the fast path."""
    visual = backend.encode_clip(clip(memory_tokens))
    memory = torch.randn(memory_tokens, backend.hidden_size, generator=torch.Generator()
                         .manual_seed(memory_tokens)) * 0.1
    saved = backend.eos_ids
    if eos_ids is not None:
        backend.eos_ids = eos_ids
    try:
        results = []
        with torch.inference_mode():
            inputs = backend.build_inputs(memory, visual, PROMPT)
        for fast in (False, True):
            session = ro.Readout(backend.readout_layers, inputs.key_start, inputs.num_keys)
            timings = {}
            with torch.inference_mode():
                if fast:
                    with forced_fast(backend, **fast_kwargs):
                        ids = fast_hook.maybe_greedy(backend, inputs, max_new, timings, session)
                else:
                    ids = backend.greedy(inputs, max_new, timings, session)
            results.append((ids, session.scores(), session.count, timings))
    finally:
        backend.eos_ids = saved
    return results


@contextmanager
def forced_fast(backend, **kwargs):
    """Switch the real backend's fast path on (it is off on CPU by default), then off again."""
    backend.use_fast(FastConfig(decode=True))
    backend.fast.caption = fast_decode.FastDecoder(backend.model, backend.readout_layers, **kwargs)
    try:
        yield backend.fast.caption
    finally:
        backend.use_fast(FastConfig())
        backend.fast.clear()


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("memory_tokens", [0, 37])
def test_fast_matches_plain_tokens_and_scores(backend, memory_tokens, split, monkeypatch):
    # split: the large-prompt prefill layout (one product per projection), forced on tiny sizes
    monkeypatch.setattr(fast_layers, "SPLIT_ELEMENTS", 0 if split else 2**62)
    (ids, scores, count, _), (fids, fscores, fcount, ftimes) = plain_and_fast(
        backend, memory_tokens, 12, eos_ids=set())
    assert fids == ids and len(ids) == 12
    assert fcount == count
    torch.testing.assert_close(fscores, scores, rtol=1e-5, atol=1e-7)
    assert ftimes["prefill"] > 0 and ftimes["decode"] > 0


def test_fast_stops_at_eos_like_plain(backend):
    ids = plain_and_fast(backend, 5, 10, eos_ids=set())[0][0]
    eos = ids[5]  # an id the greedy caption emits; both paths must stop at its first use
    first = ids.index(eos)
    (pids, pscores, pcount, _), (fids, fscores, fcount, _) = plain_and_fast(
        backend, 5, 10, eos_ids={eos})
    assert pids == ids[:first + 1] and fids == pids
    assert fcount == pcount
    torch.testing.assert_close(fscores, pscores, rtol=1e-5, atol=1e-7)


def test_capacity_growth_and_bucket_reuse_give_same_results(backend):
    decoder = fast_decode.FastDecoder(backend.model, backend.readout_layers, bucket=64)
    embeds_long = torch.randn(300, backend.hidden_size) * 0.1
    embeds_short = torch.randn(40, backend.hidden_size) * 0.1
    with torch.inference_mode():
        short_fresh = decoder.run(embeds_short, 6, (), (0, 40))
        capacity = decoder._state.capacity
        decoder.run(embeds_long, 6, (), (0, 300))  # grows the static buffers
        assert decoder._state.capacity > capacity
        short_again = decoder.run(embeds_short, 6, (), (0, 40))
    assert short_again.token_ids == short_fresh.token_ids
    torch.testing.assert_close(short_again.scores, short_fresh.scores)


def test_a_streamed_answer_reports_each_token_and_a_cancel_stops_it_on_both_paths(backend):
    """generate(stream=...) on the plain loop and the fast decoder: the text after each token
    grows to the answer; a cancel raises AnswerCancelled before the next step, and the next
    answer is the same as before."""
    from rats_ros.errors import AnswerCancelled

    class Stream:
        def __init__(self, stop_after=0):
            self.texts, self.stop_after = [], stop_after
            self.on_text = self.texts.append

        def cancelled(self):
            return 0 < self.stop_after <= len(self.texts)

    for fast in (False, True):
        with (forced_fast(backend) if fast else contextlib.nullcontext()):
            whole = backend.generate("What happened?", 12)
            stream = Stream()
            assert backend.generate("What happened?", 12, stream) == whole
            assert stream.texts[-1] == whole and len(stream.texts) >= 2
            assert all(whole.startswith(t.strip()) for t in stream.texts[:-1])
            stopped = Stream(stop_after=3)
            with pytest.raises(AnswerCancelled, match="cancelled after 3 answer tokens"):
                backend.generate("What happened?", 12, stopped)
            assert len(stopped.texts) == 3
            assert backend.generate("What happened?", 12) == whole  # the decoder is free


def test_text_only_generate_matches(backend):
    ids = torch.tensor(backend._encode(backend._render("What happened?")))
    with torch.inference_mode():
        inputs = PrefillInputs(backend.embed_tokens(ids)[None])
        plain = backend.greedy(inputs, 8, {}, answering=True)
        with forced_fast(backend):
            fast = fast_hook.maybe_greedy(backend, inputs, 8, {}, answering=True)
    assert fast == plain and len(plain) >= 1


def test_an_answer_does_not_wait_for_a_caption_in_flight(model_cache):
    """Captions and answers have their own decoders over the same packed weights: with the
    caption decoder busy (its lock held, as during a caption), an answer still completes, and
    gives what it gives alone."""
    backend = load_backend("tiny-random")
    backend.use_fast(FastConfig(decode=True))
    alone = backend.generate("What happened?", 8)
    caption = backend.caption(torch.zeros(0, backend.hidden_size), backend.encode_clip(clip(3)),
                              PROMPT, 4, readout=True)
    assert caption.scores is not None
    captions, answers = backend.fast.caption, backend.fast.answer
    assert captions is not answers and captions.packed is answers.packed
    box = {}
    with captions._lock:  # a caption in flight
        worker = threading.Thread(target=lambda: box.update(text=backend.generate(
            "What happened?", 8)))
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "the answer waited for the caption decoder"
    assert box["text"] == alone


def test_a_caption_steps_aside_while_an_answer_runs(model_cache):
    """Answers first: while an answer runs on the model (inside the gate's ``answering``, as
    ``generate`` is), a caption stops before its first layer, and once the answer is done it goes
    on and gives what it gives alone."""
    backend = load_backend("tiny-random")
    backend.use_fast(FastConfig(decode=True))
    visual, memory = backend.encode_clip(clip(5)), torch.zeros(0, backend.hidden_size)
    alone = backend.caption(memory, visual, PROMPT, 6, readout=True)
    gate, box = backend.fast.gate, {}
    assert backend.fast.caption.gate is gate
    with gate.answering():
        worker = threading.Thread(target=lambda: box.update(out=backend.caption(
            memory, visual, PROMPT, 6, readout=True)))
        worker.start()
        assert wait_for(lambda: gate.waits == 1, timeout=60)
        assert worker.is_alive() and "out" not in box  # held back, not finished
        assert backend.generate("What happened?", 4)  # the answer itself runs meanwhile
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert box["out"].token_ids == alone.token_ids
    torch.testing.assert_close(box["out"].scores, alone.scores, rtol=1e-5, atol=1e-7)
    assert not gate.busy


def test_unsupported_and_disabled_fall_back(model_cache, backend):
    other = load_backend("tiny-random")
    other.use_fast(FastConfig(decode=True))
    other.language_model.config.layer_types = ["sliding_attention"] * other.num_layers
    assert not fast_decode.supports(other.model)  # sliding windows: the plain loop
    inputs = PrefillInputs(torch.zeros(1, 3, other.hidden_size))
    assert fast_hook.maybe_greedy(other, inputs, 2, {}) is None
    assert not fast_hook.enabled(backend)  # CPU default: plain loop
    with pytest.raises(ModelError):
        fast_decode.FastDecoder(other.model)
    other.weights = "int8"
    with pytest.raises(ModelError, match="use weights 'native'"):
        other._quantize()


def test_bad_arguments_raise_model_error(backend):
    decoder = fast_decode.FastDecoder(backend.model, backend.readout_layers)
    with pytest.raises(ModelError):
        decoder.run(torch.zeros(0, backend.hidden_size), 4)
    with pytest.raises(ModelError):
        decoder.run(torch.zeros(5, backend.hidden_size), 4, readout_range=(3, 9))
    with pytest.raises(ModelError):
        fast_decode.FastDecoder(backend.model, (99,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (bench device)")
def test_cuda_graph_matches_eager_step(backend):
    model = backend.model.to("cuda")
    try:
        graphed = fast_decode.FastDecoder(model, backend.readout_layers, bucket=64)
        for length in (200, 260, 700, 200, 1300):  # grows the buffers twice, reuses buckets
            embeds = (torch.randn(length, backend.hidden_size) * 0.1).cuda()
            eager = fast_decode.FastDecoder(model, backend.readout_layers, use_cuda_graph=False)
            runs = [d.run(embeds, 16, (), (10, 150)) for d in (eager, graphed)]
            assert runs[1].token_ids == runs[0].token_ids
            torch.testing.assert_close(runs[1].scores, runs[0].scores, rtol=1e-5, atol=1e-7)
        assert len(graphed._graphs) <= fast_static.MAX_GRAPHS
    finally:
        backend.model.to("cpu")


def test_backend_fast_path_captions_like_plain(model_cache):
    backend = load_backend("tiny-random")  # CPU: the fast path is off by default
    visual = backend.encode_clip(clip(7))
    memory = visual.tokens[:20] * 0.5
    plain = backend.caption(memory, visual, PROMPT, 10, readout=True)
    assert backend.fast.caption is None  # the plain loop ran
    backend.use_fast(FastConfig(decode=True))
    fast = backend.caption(memory, visual, PROMPT, 10, readout=True)
    assert isinstance(backend.fast.caption, fast_decode.FastDecoder)  # the fast path ran
    assert fast.token_ids == plain.token_ids and fast.text == plain.text
    torch.testing.assert_close(fast.scores, plain.scores, rtol=1e-5, atol=1e-7)
    assert set(fast.timings) == {"prefill", "decode"}


def test_fast_pooling_equals_interpolate_on_the_odd_27x27_grid(model_cache):
    """LLaVA-OV's 384 px / patch 14 gives a 27x27 grid pooled to 14x14 (odd: edge rows blend).

    The backend installs the fast pooling at load; the reference is ``F.interpolate`` as the
    transformers method calls it, and the transformers method itself on the same model.
    """
    backend = load_backend("tiny-random")
    inner = backend.model.model
    assert "apply_pooling" in vars(inner)  # the backend installed the fast pooling
    inner.config.vision_config.image_size = 27 * inner.config.vision_config.patch_size
    assert fast_layers.install_fast_pooling(backend.model)  # pooling matrices for 27 -> 14
    features = torch.randn(3, 27 * 27, 5)  # (frames, patches, D); fast pooling is float32
    reference = torch.nn.functional.interpolate(
        features.view(3, 27, 27, 5).permute(0, 3, 1, 2), size=[14, 14], mode="bilinear")
    reference = reference.permute(0, 2, 3, 1).reshape(3, 14 * 14, 5)
    stock = type(inner).apply_pooling(inner, features)  # the transformers method
    torch.testing.assert_close(stock, reference)
    torch.testing.assert_close(inner.apply_pooling(features), reference)  # float32 tolerance


def test_fast_pooling_leaves_the_clip_tokens_unchanged(model_cache):
    backend = load_backend("tiny-random")
    frames = clip(11)
    fast = backend.encode_clip(frames)
    del backend.model.model.apply_pooling  # back to the transformers method
    stock = backend.encode_clip(frames)
    assert fast.tokens.shape == stock.tokens.shape
    torch.testing.assert_close(fast.tokens, stock.tokens, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (bench device)")
@pytest.mark.parametrize("attention", ["cudnn", "flash"])
@pytest.mark.parametrize("name", FAMILIES)
def test_cuda_bf16_fast_path_close_to_plain(model_cache, attention, name):
    backend = load_backend(name, device="cuda", dtype="bfloat16")
    visual = backend.encode_clip(clip(3))
    memory = visual.tokens[:40]
    backend.use_fast(FastConfig(decode=False))
    plain = backend.caption(memory, visual, PROMPT, 4, readout=True)
    backend.use_fast(FastConfig(decode=True))
    backend.fast.caption = fast_decode.FastDecoder(backend.model, backend.readout_layers,
                                                    prefill_attention=attention)
    fast = backend.caption(memory, visual, PROMPT, 4, readout=True)
    assert fast.token_ids[0] == plain.token_ids[0]
    error = (fast.scores.float() - plain.scores.float()).norm() / plain.scores.float().norm()
    assert error < 5e-2  # bf16 arithmetic in both paths, in different orders


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (bench device)")
@pytest.mark.parametrize("name", FAMILIES)
def test_cuda_fp32_fast_path_keeps_the_plain_paths_tokens(model_cache, name):
    """The fast path's kept set equals the fp32 reference's: bench_overlap's fp32_fast rows
    (1.000 at tiny, 0.5B and 7B size on the H200); bf16 differs by rounding alone."""
    backend = load_backend(name, device="cuda", dtype="float32")
    for seed in range(4):
        visual = backend.encode_clip(clip(seed))
        memory = backend.encode_clip(clip(seed + 10)).tokens[:64]
        k = visual.count // 16
        backend.use_fast(FastConfig(decode=False))
        backend.fast.clear()
        plain = backend.caption(memory, visual, PROMPT, 8, readout=True)
        backend.use_fast(FastConfig(decode=True))
        fast = backend.caption(memory, visual, PROMPT, 8, readout=True)
        assert isinstance(backend.fast.caption, fast_decode.FastDecoder)
        assert fast.token_ids == plain.token_ids
        assert set(torch.topk(fast.scores, k).indices.tolist()) == set(
            torch.topk(plain.scores, k).indices.tolist())
