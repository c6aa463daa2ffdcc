"""What the single and the batched decoder share: static-buffer sizing, RoPE tables and
their CUDA graphs (captured once per buffer shape, replayed per token); the single decoder's
buffers (:class:`DecodeState`)."""
from __future__ import annotations

import torch

MAX_GRAPHS = 8  # captured decode steps kept (one per capacity bucket in use)
MAX_EOS_IDS = 8  # end ids a decode state holds (a static buffer: compared inside the graph)


def grown_capacity(old: int, need: int, bucket: int) -> int:
    """Buffer capacity for ``need`` tokens: at least 25 % above ``old`` (so a stream whose memory
    fills up reallocates a few times, then never) and two buckets, in whole buckets."""
    return max(need, -(-int(old * 1.25) // bucket) * bucket, 2 * bucket)


def rope_tables(dec, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:returns: ``(C, d)`` cos and sin of positions ``0..C-1`` for decoder ``dec`` (a
    ``FastDecoder``), as transformers' rotary embedding computes them (float32, then the model
    dtype)."""
    pos = torch.arange(capacity, device=dec.device, dtype=torch.float32)
    freqs = pos[:, None] * dec.inv_freq.to(dec.device, torch.float32)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)  # (C, d)
    return ((emb.cos() * dec.rope_scaling).to(dec.dtype),
            (emb.sin() * dec.rope_scaling).to(dec.dtype))


def capture_graph(step, device, pool) -> torch.cuda.CUDAGraph:
    """``step()`` warmed up twice on a side stream, then captured in a CUDA graph in ``pool``.

    Warm-up runs mutate the decode buffers; that is fine: the next run resets them and its
    prefill rewrites them.
    """
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: another thread's CUDA work (vision encode) must not break the capture
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        step()
    return graph


def recent_graph(graphs: dict, key, capture):
    """The graph of ``key`` (captured by ``capture()`` when missing), kept most recently used
    last; the least recently used beyond :data:`MAX_GRAPHS` are dropped."""
    graph = graphs.pop(key, None)
    if graph is None:
        graph = capture()
    graphs[key] = graph
    while len(graphs) > MAX_GRAPHS:
        graphs.pop(next(iter(graphs)))
    return graph


class DecodeState:
    """A :class:`~rats_ros.models.fast.decode.FastDecoder`'s device buffers for one capacity
    (every decode graph reads and writes only these)."""

    def __init__(self, dec, capacity: int):
        dev, dt = dec.device, dec.dtype
        self.capacity = capacity
        # (layers, K/V, kv_heads, C, head_dim)
        self.kv = torch.zeros(dec.n_layers, 2, dec.n_kv, capacity, dec.head_dim, device=dev,
                              dtype=dt)
        self.mask = torch.full((capacity,), float("-inf"), device=dev, dtype=dt)  # (C,) additive
        self.acc = torch.zeros(capacity, device=dev)  # (C,) read-out sum over rows/heads/layers
        self.cos, self.sin = rope_tables(dec, capacity)  # (C, d) each
        self.tok = torch.zeros(1, device=dev, dtype=torch.long)
        self.pos = torch.zeros(1, device=dev, dtype=torch.long)
        self.step = torch.zeros(1, device=dev, dtype=torch.long)
        self.alive = torch.ones(1, device=dev)
        self.rows = torch.zeros(1, device=dev)
        self.out = torch.zeros(capacity, device=dev, dtype=torch.long)
        self.eos = torch.full((MAX_EOS_IDS,), -1, device=dev, dtype=torch.long)  # -1: unused
