"""The seam between a backend and :class:`~rats_ros.models.fast.decode.FastDecoder`: whether the
fast path runs, which decoder serves a call (captions and answers each have their own), and the
hand-over of the read-out and of Qwen3-VL's DeepStack features; answers first (:mod:`priority`)."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import torch

from rats_ros.errors import ModelError
from rats_ros.models.fast.batch import BatchDecoder
from rats_ros.models.fast.decode import FastDecoder, supports
from rats_ros.models.fast.priority import AnswerFirst
from rats_ros.models.fast.static import MAX_EOS_IDS

_CREATE_LOCK = threading.Lock()
_ANSWERING = threading.local()  # .active: this thread is inside answering()


def enabled(backend) -> bool:
    """Whether ``backend`` decodes through this module.

    ``backend.fast_decode`` decides when set (True / False); by default (None or unset) the fast
    path is on for supported models on CUDA, where it pays, and off on CPU.
    """
    choice = getattr(backend, "fast_decode", None)
    if choice is None:
        choice = backend.device.type == "cuda"
    return bool(choice) and supports(backend.model)


def serves(backend) -> bool:
    """Whether this module decodes ``backend``'s calls: the fast path on (:func:`enabled`) and
    no more end ids than a decode state holds."""
    return enabled(backend) and len(backend.eos_ids) <= MAX_EOS_IDS


def gate_of(backend) -> AnswerFirst:
    """The backend's answers-first gate (one per model), created on first use."""
    gate = getattr(backend, "_answer_first", None)
    if gate is None:
        with _CREATE_LOCK:
            gate = getattr(backend, "_answer_first", None)
            if gate is None:
                gate = backend._answer_first = AnswerFirst()
    return gate


@contextmanager
def answering(backend):
    """An answer on ``backend`` (text-only generation): served by the answer decoder, and the
    captions in flight on the same model step aside until it is done (:mod:`priority`)."""
    outer = getattr(_ANSWERING, "active", False)
    _ANSWERING.active = True
    try:
        with gate_of(backend).answering():
            yield
    finally:
        _ANSWERING.active = outer


def step_aside(backend) -> None:
    """Where a caption starts GPU work outside the decoders (its vision encode): wait while an
    answer runs."""
    if not getattr(_ANSWERING, "active", False):
        gate_of(backend).wait_for_answers()


def decoder_for(backend, role: str) -> FastDecoder:
    """The backend's decoder of ``role``: ``_fast_decoder`` for captions, ``_answer_decoder``
    for answers (calls inside :func:`answering`). Each has its own lock, KV buffers and CUDA
    graphs over the same packed weights, so an answer never waits for a whole caption; the
    caption decoder also steps aside between layers and tokens while an answer runs
    (test/test_fast_decode.py; bench_busy_ask measures it on the GPU, bench/RESULTS.md)."""
    decoder = getattr(backend, role, None)
    if decoder is None:
        with _CREATE_LOCK:  # caption and QA threads: pack the weights once, not concurrently
            decoder = getattr(backend, role, None)
            if decoder is None:
                decoder = FastDecoder(backend.model, backend.readout_layers,
                                      weights=getattr(backend, "weights", "native"))
                setattr(backend, role, decoder)
    if role == "_fast_decoder":  # also when a bench or _quantize set the decoder itself
        decoder.gate = gate_of(backend)
    return decoder


def prepare(backend, cameras: int) -> float:
    """Build the caption and answer decoders, and for several ``cameras`` the batched one, as
    the first clip and question would: each product's tile is timed and its kernels compiled
    here (seconds on a cold Triton cache, more for the batched tiles) instead of inside the
    first captions' latency. :returns: seconds spent; 0.0 where the fast path is off."""
    if not serves(backend):
        return 0.0
    started = time.perf_counter()
    decoder_for(backend, "_fast_decoder")
    decoder_for(backend, "_answer_decoder")
    if cameras > 1:
        batch_decoder_for(backend)
    return time.perf_counter() - started


def batch_decoder_for(backend) -> BatchDecoder:
    """The backend's batched decoder over its caption decoder's weights (built on first use,
    and again when the caption decoder was replaced)."""
    single = decoder_for(backend, "_fast_decoder")
    batch = getattr(backend, "_batch_decoder", None)
    if batch is None or batch.single is not single:
        batch = backend._batch_decoder = BatchDecoder(single)
    return batch


def maybe_greedy(backend, embeds: torch.Tensor, max_new_tokens: int,
                 timings: dict) -> list[int] | None:
    """The seam ``HFVideoBackend.greedy`` calls first: fast greedy decoding, or ``None``.

    Feeds the calling thread's active read-out session (``readout.active``) exactly as the plain
    path's registered attention function would (same sums, same count), so
    ``Readout.scores()`` is unchanged. Returns ``None`` when the fast path is off or unsupported,
    and the backend then runs its plain loop.

    :param embeds: ``(1, L, D)`` prompt embeddings.
    :param timings: receives ``prefill`` and ``decode`` in seconds.
    :returns: generated ids (the final EOS included), or ``None``.
    """
    if not serves(backend):
        return None
    from rats_ros.stream import readout as ro

    session = ro.current()
    answer = getattr(_ANSWERING, "active", False)
    decoder = decoder_for(backend, "_answer_decoder" if answer else "_fast_decoder")
    span = None
    if session is not None:
        if set(session.layers) != set(decoder.readout_layers):
            raise ModelError(f"read-out layers {sorted(session.layers)} differ from the fast "
                             f"decoder's {list(decoder.readout_layers)}")
        span = _span(session)
    deepstack = _deepstack(backend, decoder.device)  # Qwen3-VL's, of this prompt
    result = decoder.run(embeds[0], max_new_tokens, sorted(backend.eos_ids), span,
                         deepstack=deepstack)
    if session is not None:
        session.add(result.sums, result.count)
    timings["prefill"] = result.prefill_ns / 1e9
    timings["decode"] = result.decode_ns / 1e9
    return result.token_ids


def _span(session) -> tuple[int, int]:
    """The key positions a read-out session scores: the clip's tokens."""
    return session.key_start, session.key_start + session.num_keys


def _deepstack(backend, device):
    """This thread's pending DeepStack features as the decoders take them, or None."""
    extras = backend.take_prefill_extras()
    if not extras.get("deepstack_visual_embeds"):
        return None
    positions = extras["visual_pos_masks"][0].nonzero()[:, 0]  # (N,)
    return positions.to(device), extras["deepstack_visual_embeds"]


def caption_many(backend, items, prompt: str, max_new_tokens: int, readout: bool):
    """Caption several clips (one per camera) with one batched decode (:mod:`fast.batch`).

    :param items: ``(memory (M_b, D), visual (N_b, D))`` per clip.
    :returns: a ``CaptionOutput`` per item, each equal to ``backend.caption`` of it alone; or
        None where the fast path is off (the caller then captions one by one).
    """
    if not serves(backend):
        return None
    from rats_ros.models.base import CaptionOutput
    from rats_ros.stream import readout as ro

    batch = batch_decoder_for(backend)
    single = batch.single
    prompts, spans, deepstacks, sessions = [], [], [], []
    for memory, visual in items:
        embeds, start = backend.build_inputs(memory, visual, prompt)
        prompts.append(embeds[0])
        deepstacks.append(_deepstack(backend, single.device))
        session = (ro.Readout(backend.readout_layers, start, visual.shape[0], backend.device)
                   if readout else None)
        sessions.append(session)
        spans.append(_span(session) if session is not None else None)
    results = batch.run(prompts, max_new_tokens, sorted(backend.eos_ids), spans, deepstacks)
    outputs = []
    for result, session in zip(results, sessions, strict=True):
        if session is not None:
            session.add(result.sums, result.count)
        timings = {"prefill": result.prefill_ns / 1e9, "decode": result.decode_ns / 1e9}
        outputs.append(CaptionOutput(backend._decode(result.token_ids), result.token_ids,
                                     session.scores() if session is not None else None, timings))
    return outputs
