"""Several cameras' captions decoded together: one decode step for B prompts.

A decode step is launch- and bandwidth-bound (every weight streamed once per step), so B rows
cost little more than one. :class:`BatchDecoder` prefills the prompts together into their own
rows of a static KV cache (:mod:`rats_ros.models.fast.prefill`: one pass over the layers for all
their tokens, attention within each prompt) and then decodes all rows together, each with its
own position, key mask, read-out sum and end of sequence. Per row it computes what
:class:`~rats_ros.models.fast.decode.FastDecoder` computes for that prompt alone (tested against
it), reusing its packed weights.
"""
from __future__ import annotations

import threading
from types import SimpleNamespace

import torch

from rats_ros.errors import ModelError
from rats_ros.models.fast import fused, fused_attention, fused_batch, tiles
from rats_ros.models.fast.decode import FastDecoder, FastResult
from rats_ros.models.fast.layers import PackedLayer
from rats_ros.models.fast.prefill import prefill_many
from rats_ros.models.fast.priority import Pacer
from rats_ros.models.fast.static import (
    MAX_EOS_IDS,
    capture_graph,
    grown_capacity,
    recent_graph,
    rope_tables,
)
from rats_ros.models.fast.support import fast_result


class _BatchState:
    """Static buffers of B rows at one capacity C."""

    def __init__(self, single: FastDecoder, rows: int, capacity: int):
        dev, dt = single.device, single.dtype
        self.rows_n, self.capacity = rows, capacity
        # (layers, K/V, B, kv_heads, C, head_dim)
        self.kv = torch.zeros(single.n_layers, 2, rows, single.n_kv, capacity, single.head_dim,
                              device=dev, dtype=dt)
        self.mask = torch.full((rows, capacity), float("-inf"), device=dev, dtype=dt)  # (B, C)
        self.acc = torch.zeros(rows, capacity, device=dev)  # (B, C) read-out sums
        self.cos, self.sin = rope_tables(single, capacity)  # (C, d) each
        self.tok = torch.zeros(rows, device=dev, dtype=torch.long)
        self.pos = torch.zeros(rows, device=dev, dtype=torch.long)
        self.step = torch.zeros(1, device=dev, dtype=torch.long)
        self.alive = torch.ones(rows, device=dev)
        self.rows = torch.zeros(rows, device=dev)  # read-out rows summed per caption
        self.out = torch.zeros(rows, capacity, device=dev, dtype=torch.long)
        self.eos = torch.full((MAX_EOS_IDS,), -1, device=dev, dtype=torch.long)
        self.index = torch.arange(rows, device=dev)
        self.zero = torch.zeros((), device=dev, dtype=dt)  # a device value for index_put_

    def row(self, b: int) -> SimpleNamespace:
        """Row ``b`` as the single decoder's state (views), for its prefill."""
        return SimpleNamespace(kv=self.kv[:, :, b], mask=self.mask[b], acc=self.acc[b],
                               cos=self.cos, sin=self.sin)


class BatchDecoder:
    """Greedy decoding of several prompts at once over ``single``'s packed weights.

    :param single: the caption decoder whose weights, prefill and settings are reused.
    :param fused: the fused Triton step (``FastConfig.fused_batch``); False: the torch step.
    """

    def __init__(self, single: FastDecoder, fused: bool = True):
        self.single = single
        # the fused step's batched products (fused_batch), tiles timed on this GPU; without a
        # tile that compiles, the torch step (logged)
        self.tiles = tiles.for_decoder(single, asked=False, rows=fused_batch.ROWS) \
            if fused else {}
        self.fused = fused and single.fused_step and (
            bool(self.tiles) or single.device.type != "cuda")
        self._states: dict[int, _BatchState] = {}  # per row count
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._pool = None
        self._lock = threading.Lock()

    @torch.inference_mode()
    def run(self, prompts: list[torch.Tensor], max_new_tokens: int, eos_token_ids=(),
            readout_ranges: list[tuple[int, int] | None] | None = None,
            deepstacks: list | None = None, ignore_eos: bool = False) -> list[FastResult]:
        """Decode every prompt ``(P_b, D)``; the arguments are :meth:`FastDecoder.run`'s, one
        per prompt where they are lists.

        :returns: one :class:`FastResult` per prompt, in order.
        """
        count = len(prompts)
        readout_ranges = readout_ranges or [None] * count
        deepstacks = deepstacks or [None] * count
        if count == 0 or max_new_tokens < 1:
            raise ModelError("a batch needs at least one prompt and max_new_tokens >= 1")
        if len(readout_ranges) != count or len(deepstacks) != count:
            raise ModelError("one read-out range and one DeepStack entry per prompt")
        eos = [] if ignore_eos else list(eos_token_ids)
        if len(eos) > MAX_EOS_IDS:
            raise ModelError(f"at most {MAX_EOS_IDS} EOS ids are supported")
        with self._lock:
            return self._run(prompts, max_new_tokens, eos, readout_ranges, deepstacks)

    def _run(self, prompts, max_new, eos, ranges, deepstacks) -> list[FastResult]:
        single, count = self.single, len(prompts)
        longest = max(int(p.shape[0]) for p in prompts)
        capacity = -(-(longest + max_new) // single.bucket) * single.bucket
        st = self._state(count, capacity)
        step_fn = self._step_fn(st)
        pace = Pacer(single.gate, single.device)  # answers first, as for one caption
        t0 = single._now()
        single._reset(st, eos)  # masks, read-out sums and end ids, as for one prompt
        first = prefill_many(single, [st.row(b) for b in range(count)], prompts,
                             [span is not None for span in ranges], deepstacks, pace)  # (B,)
        st.tok.copy_(first)
        st.out[:, 0].copy_(first)
        st.pos.copy_(torch.tensor([int(p.shape[0]) for p in prompts], device=st.pos.device))
        st.step.fill_(1)
        st.rows.fill_(1.0)
        st.alive.copy_(1.0 - single._is_eos(st, st.tok))
        t1 = single._now()
        done = 1
        while done < max_new:
            pace()
            step_fn()
            done += 1
            if eos and done % 8 == 0 and float(st.alive.sum()) == 0.0:
                break
        t2 = single._now()
        return [fast_result(single, st.out[b], st.rows[b], st.acc[b], done, eos, ranges[b],
                               (t1 - t0) // count, t2 - t1) for b in range(count)]

    def _state(self, count: int, capacity: int) -> _BatchState:
        st = self._states.get(count)
        if st is None or st.capacity < capacity:
            old = st.capacity if st is not None else 0
            self._graphs = {k: g for k, g in self._graphs.items() if k[0] != count}
            if not self._graphs:  # a pool whose graphs are all gone must not be captured into
                self._pool = None  # again (PyTorch's allocator asserts: use_count > 0)
            self._states[count] = None
            st = self._states[count] = _BatchState(
                self.single, count, grown_capacity(old, capacity, self.single.bucket))
        return st

    def _step_fn(self, st: _BatchState):
        if not self.single.use_cuda_graph:
            return lambda: self._decode_step(st)
        return recent_graph(self._graphs, (st.rows_n, st.capacity),
                            lambda: self._capture(st)).replay

    def _capture(self, st: _BatchState) -> torch.cuda.CUDAGraph:
        st.pos.zero_()
        st.step.zero_()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        return capture_graph(lambda: self._decode_step(st), self.single.device, self._pool)

    def _decode_step(self, st: _BatchState) -> None:
        """One token for every row: static shapes, device-side indices (capturable). With the
        fused step, 7-10 kernels a layer for all rows (:mod:`fused_batch`, :mod:`fused`,
        :mod:`fused_attention`), as for one row."""
        single, b = self.single, st.rows_n
        fuse = self.fused and b <= fused_batch.ROWS
        st.mask.index_put_((st.index, st.pos), st.zero)  # each row sees its new position
        rot = None if fuse else self._rotations(st)
        x = single.decoder.embed_tokens(st.tok)  # (B, D)
        row = torch.zeros(b, st.capacity, device=single.device)
        for idx, layer in enumerate(single.packed):
            q = self._step_q(st, idx, layer, x, rot, fuse)  # (B, H, d); K/V written
            x = self._step_out(layer, x, self._attend(st, idx, q, row, fuse), fuse)
        nxt = single.head(PackedLayer.norm(single.decoder.norm, x)).argmax(dim=-1)  # (B,)
        st.acc += st.alive[:, None] * row
        st.rows += st.alive
        st.alive *= 1.0 - single._is_eos(st, nxt)
        st.out.index_copy_(1, st.step, nxt[:, None])  # column `step`
        st.tok.copy_(nxt)
        st.pos += 1
        st.step += 1

    def _rotations(self, st: _BatchState) -> torch.Tensor:
        """:returns: ``(B, d, d)`` each row's RoPE at its position as a matrix."""
        cos, sin = st.cos.index_select(0, st.pos), st.sin.index_select(0, st.pos)  # (B, d)
        return self.single.rot_half[None] * sin[:, None, :] + torch.diag_embed(cos)

    def _step_q(self, st, idx: int, layer, x: torch.Tensor, rot, fuse: bool) -> torch.Tensor:
        """Layer ``idx``'s queries ``(B, H, d)`` after RoPE of the rows ``x`` ``(B, D)``; each
        row's K and V written into its cache row at its position."""
        b, d = st.rows_n, self.single.head_dim
        if fuse:
            qkv = tiles.layer_product(fused_batch.norm_gemm, "qkv", layer, x,
                                      self.tiles.get("qkv"))  # (B, (H + 2 Hkv) d)
            q = fused.rope_store(qkv, layer, st.cos, st.sin, st.pos, st.kv[idx])
            return q.view(b, layer.h, d)
        qkv = layer.qkv(PackedLayer.norm(layer.ln1, x)).view(b, -1, d)  # (B, H+2Hkv, d)
        qk = torch.bmm(layer.head_norm(qkv[:, :layer.h + layer.hkv]), rot)
        k, v = qk[:, layer.h:], qkv[:, layer.h + layer.hkv:]
        st.kv[idx, 0][st.index, :, st.pos] = k  # (B, Hkv, d) at each row's position
        st.kv[idx, 1][st.index, :, st.pos] = v
        return qk[:, :layer.h]

    def _attend(self, st, idx: int, q: torch.Tensor, row: torch.Tensor,
                fuse: bool) -> torch.Tensor:
        """Each row's attention over its cache row: ``(B, H d)``; a read-out layer adds its
        float32 softmax rows, summed over heads, to ``row`` ``(B, C)``."""
        single, b = self.single, st.rows_n
        nkv, group, d = single.n_kv, single.n_heads // single.n_kv, single.head_dim
        if fuse and idx not in single.readout_layers:
            return fused_attention.decode_attention(q.reshape(-1, d), st.kv[idx], st.pos,
                                                    st.capacity, single.scale)
        mask = st.mask[:, None, None, :].expand(b, nkv, 1, st.capacity).reshape(b * nkv, 1, -1)
        keys = st.kv[idx, 0].reshape(b * nkv, st.capacity, d)
        values = st.kv[idx, 1].reshape(b * nkv, st.capacity, d)
        scores = torch.baddbmm(mask, q.reshape(b * nkv, group, d), keys.transpose(1, 2),
                               alpha=single.scale)  # (B Hkv, G, C)
        if idx in single.readout_layers:
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
            row += probs.view(b, nkv * group, -1).sum(1)
            probs = probs.to(single.dtype)
        else:
            probs = torch.softmax(scores, dim=-1)
        return torch.bmm(probs, values).view(b, -1)  # (B Hkv, G, d) -> (B, H d)

    def _step_out(self, layer, x: torch.Tensor, o: torch.Tensor, fuse: bool) -> torch.Tensor:
        """The rows ``x`` ``(B, D)`` after the o projection of ``o`` ``(B, H d)`` and the MLP."""
        if not fuse:
            return layer.mlp(layer.attn_out(x, o))
        return tiles.step_out(fused_batch.norm_gemm, layer, x, o, self.tiles)
