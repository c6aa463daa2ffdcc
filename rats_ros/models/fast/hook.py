"""The seam between a backend and :class:`~rats_ros.models.fast.decode.FastDecoder`: whether the
fast path runs, the decoders a backend owns (:class:`FastDecoders`: captions, answers and several
cameras' captions each have their own), and the hand-over of the read-out and of Qwen3-VL's
DeepStack features; answers first (:mod:`priority`)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rats_ros.errors import ModelError
from rats_ros.models.base import CaptionOutput, FastConfig, PrefillInputs
from rats_ros.models.fast.batch import BatchDecoder
from rats_ros.models.fast.decode import FastDecoder, supports
from rats_ros.models.fast.priority import AnswerFirst
from rats_ros.models.fast.static import MAX_EOS_IDS

__all__ = ["MAX_EOS_IDS", "FastDecoders", "caption_many", "maybe_greedy", "prepare", "serves"]


@dataclass
class FastDecoders:
    """The fast-path decoders of one backend, built on first use (or by :func:`prepare`).

    Each decoder has its own lock, KV buffers and CUDA graphs over the same packed weights, so
    an answer never waits for a whole caption; the caption decoders also step aside between
    layers and tokens while an answer runs (:attr:`gate`; test/test_fast_decode.py).

    :param config: which parts of the fast path run.
    :param caption: the caption decoder (one camera, or one clip at a time).
    :param answer: the answer decoder (text-only generation).
    :param batch: several cameras' captions in one decode step, over ``caption``'s weights.
    :param gate: the model's answers-first gate.
    """

    config: FastConfig = field(default_factory=FastConfig)
    caption: FastDecoder | None = None
    answer: FastDecoder | None = None
    batch: BatchDecoder | None = None
    gate: AnswerFirst = field(default_factory=AnswerFirst)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def use(self, config: FastConfig) -> None:
        """Run with ``config`` from now on; decoders built under another one are dropped
        (rebuilt on next use), except a caption decoder whose settings did not change."""
        with self._lock:
            if config.fused_batch != self.config.fused_batch:
                self.batch = None
            self.config = config

    def clear(self) -> None:
        """Drop every decoder (their static buffers are freed once nothing else holds them)."""
        with self._lock:
            self.caption = self.answer = self.batch = None


def enabled(backend) -> bool:
    """Whether ``backend`` decodes through this module: ``FastConfig.decode`` when set, else on
    CUDA (where it pays) and off on the CPU; and only for language models it serves."""
    choice = backend.fast.config.decode
    if choice is None:
        choice = backend.device.type == "cuda"
    return bool(choice) and supports(backend.model)


def serves(backend) -> bool:
    """Whether this module decodes ``backend``'s calls: the fast path on (:func:`enabled`) and
    no more end ids than a decode state holds."""
    return enabled(backend) and len(backend.eos_ids) <= MAX_EOS_IDS


def caption_decoder(backend) -> FastDecoder:
    """The backend's caption decoder (built on first use; it steps aside for answers)."""
    fast = backend.fast
    with fast._lock:  # caption and QA threads: pack the weights once, not concurrently
        if fast.caption is None:
            fast.caption = _new_decoder(backend)
        fast.caption.gate = fast.gate
        return fast.caption


def answer_decoder(backend) -> FastDecoder:
    """The backend's answer decoder (built on first use; it never steps aside)."""
    fast = backend.fast
    with fast._lock:
        if fast.answer is None:
            fast.answer = _new_decoder(backend)
        return fast.answer


def batch_decoder(backend) -> BatchDecoder:
    """The backend's batched decoder over its caption decoder's weights (built on first use,
    and again when the caption decoder was replaced)."""
    single = caption_decoder(backend)
    fast = backend.fast
    with fast._lock:
        if fast.batch is None or fast.batch.single is not single:
            fast.batch = BatchDecoder(single, fused=fast.config.fused_batch)
        return fast.batch


def _new_decoder(backend) -> FastDecoder:
    return FastDecoder(backend.model, backend.readout_layers, weights=backend.weights,
                       tile_cache=backend.tile_cache)


def prepare(backend, cameras: int) -> float:
    """Build the caption and answer decoders, and for several ``cameras`` the batched one, as
    the first clip and question would: each product's tile is timed and its kernels compiled
    here (seconds on a cold Triton cache, more for the batched tiles) instead of inside the
    first captions' latency. :returns: seconds spent; 0.0 where the fast path is off."""
    if not serves(backend):
        return 0.0
    started = time.perf_counter()
    caption_decoder(backend)
    answer_decoder(backend)
    if cameras > 1:
        batch_decoder(backend)
    return time.perf_counter() - started


def maybe_greedy(backend, inputs: PrefillInputs, max_new_tokens: int, timings: dict,
                 readout=None, answering: bool = False, step=None) -> list[int] | None:
    """The seam ``HFVideoBackend.greedy`` calls first: fast greedy decoding, or ``None``.

    Feeds ``readout`` exactly as the plain path's registered attention function would (same
    sums, same count), so ``Readout.scores()`` is unchanged. Returns ``None`` when the fast path
    is off or unsupported, and the backend then runs its plain loop.

    :param inputs: the prompt (``embeds`` ``(1, L, D)``), its clip span and DeepStack features.
    :param timings: receives ``prefill`` and ``decode`` in seconds.
    :param readout: the caption's read-out, or None.
    :param answering: served by the answer decoder (else the caption decoder).
    :param step: ``step(count, ids)`` after each token (``base.stream_step``), or None.
    :returns: generated ids (the final EOS included), or ``None``.
    """
    if not serves(backend):
        return None
    decoder = answer_decoder(backend) if answering else caption_decoder(backend)
    if readout is not None and set(readout.layers) != set(decoder.readout_layers):
        raise ModelError(f"read-out layers {sorted(readout.layers)} differ from the fast "
                         f"decoder's {list(decoder.readout_layers)}")
    span = inputs.span if readout is not None else None
    result = decoder.run(inputs.embeds[0], max_new_tokens, sorted(backend.eos_ids), span,
                         deepstack=_deepstack(inputs, decoder.device), step=step)
    if readout is not None:
        readout.add(result.sums, result.count)
    timings["prefill"] = result.prefill_ns / 1e9
    timings["decode"] = result.decode_ns / 1e9
    return result.token_ids


def _deepstack(inputs: PrefillInputs, device):
    """``inputs``' DeepStack features as the decoders take them (``(positions (N,), [features
    (N, D)] per layer)``), or None."""
    if inputs.deepstack is None:
        return None
    return inputs.positions().to(device), list(inputs.deepstack)


def caption_many(backend, items, prompt: str, max_new_tokens: int, readout: bool):
    """Caption several clips (one per camera) with one batched decode (:mod:`fast.batch`).

    :param items: ``(memory (M_b, D), visual)`` per clip (``visual``: ``ClipTokens``).
    :returns: a ``CaptionOutput`` per item, each equal to ``backend.caption`` of it alone; or
        None where the fast path is off (the caller then captions one by one).
    """
    if not serves(backend):
        return None
    batch = batch_decoder(backend)
    device = batch.single.device
    inputs = [backend.build_inputs(memory, visual, prompt) for memory, visual in items]
    sessions = [backend.readout_for(i) if readout else None for i in inputs]
    results = batch.run([i.embeds[0] for i in inputs], max_new_tokens, sorted(backend.eos_ids),
                        [i.span if readout else None for i in inputs],
                        [_deepstack(i, device) for i in inputs])
    outputs = []
    for result, session in zip(results, sessions, strict=True):
        if session is not None:
            session.add(result.sums, result.count)
        timings = {"prefill": result.prefill_ns / 1e9, "decode": result.decode_ns / 1e9}
        outputs.append(CaptionOutput(backend._decode(result.token_ids), result.token_ids,
                                     session.scores() if session is not None else None, timings))
    return outputs
