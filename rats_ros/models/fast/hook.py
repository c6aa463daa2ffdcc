"""The seam between a backend and :class:`~rats_ros.models.fast.decode.FastDecoder`: whether the
fast path runs, which decoder serves a call (captions and answers each have their own), and the
hand-over of the read-out and of Qwen3-VL's DeepStack features."""
from __future__ import annotations

import threading

import torch

from rats_ros.errors import ModelError
from rats_ros.models.fast.decode import FastDecoder, supports

_CREATE_LOCK = threading.Lock()


def enabled(backend) -> bool:
    """Whether ``backend`` decodes through this module.

    ``backend.fast_decode`` decides when set (True / False); by default (None or unset) the fast
    path is on for supported models on CUDA, where it pays, and off on CPU.
    """
    choice = getattr(backend, "fast_decode", None)
    if choice is None:
        choice = backend.device.type == "cuda"
    return bool(choice) and supports(backend.model)


def decoder_for(backend, role: str) -> FastDecoder:
    """The backend's decoder of ``role``: ``_fast_decoder`` for captions (calls with a read-out),
    ``_answer_decoder`` for answers and other text-only calls. Each has its own lock, KV buffers
    and CUDA graphs over the same packed weights, so an answer never waits for a whole caption
    (test/test_fast_decode.py); on a GPU their steps interleave on the stream (not yet measured
    there: bench/bench_ask.py's "while captioning" figures predate this)."""
    decoder = getattr(backend, role, None)
    if decoder is None:
        with _CREATE_LOCK:  # caption and QA threads: pack the weights once, not concurrently
            decoder = getattr(backend, role, None)
            if decoder is None:
                decoder = FastDecoder(backend.model, backend.readout_layers,
                                      weights=getattr(backend, "weights", "native"))
                setattr(backend, role, decoder)
    return decoder


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
    if not enabled(backend) or len(backend.eos_ids) > 8:
        return None
    from rats_ros.stream import readout as ro

    session = ro.current()
    decoder = decoder_for(backend, "_fast_decoder" if session is not None else "_answer_decoder")
    span = None
    if session is not None:
        if set(session.layers) != set(decoder.readout_layers):
            raise ModelError(f"read-out layers {sorted(session.layers)} differ from the fast "
                             f"decoder's {list(decoder.readout_layers)}")
        span = (session.key_start, session.key_start + session.num_keys)
    extras = backend.take_prefill_extras()  # Qwen3-VL's DeepStack features of this prompt
    deepstack = None
    if extras.get("deepstack_visual_embeds"):
        positions = extras["visual_pos_masks"][0].nonzero()[:, 0]  # (N,)
        deepstack = (positions.to(decoder.device), extras["deepstack_visual_embeds"])
    result = decoder.run(embeds[0], max_new_tokens, sorted(backend.eos_ids), span,
                         deepstack=deepstack)
    if session is not None:
        session.add(result.sums, result.count)
    timings["prefill"] = result.prefill_ns / 1e9
    timings["decode"] = result.decode_ns / 1e9
    return result.token_ids
