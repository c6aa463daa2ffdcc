"""Fast greedy decoding with the attention read-out, for Qwen2-family language models.

Why: stock calls cost ~30 ms a token on an H100 at 0.5B and 7B alike (per-step Python and
launches). This module runs the model's own weights (packed per layer by :mod:`layers`; the
transformers modules keep working on views of them) with static shapes:

- one static KV buffer ``(layers, 2, kv_heads, capacity, head_dim)`` reused across calls and grown
  in a few steps, so GPU memory is flat over a stream;
- prefill with SDPA (flash on CUDA) over the whole prompt, writing K/V into the static buffer;
- one decode step = embedding lookup, every layer, lm_head and argmax, with the next token fed
  back on the device; positions, the additive key mask, RoPE and the output slot are indexed by
  device tensors, so the step is captured once per capacity bucket in a CUDA graph and replayed;
- the read-out is done inside the step: at the read-out layers the softmax row of the single
  query is summed over heads into a preallocated ``(capacity,)`` accumulator (weighted by an
  "alive" flag that turns 0 after EOS); the visual range is sliced only after decoding;
- on CUDA with Triton, the step's norms, products, RoPE and cache writes run as the fused
  kernels of :mod:`fused` (7-10 kernels a layer instead of ~22), tiles timed on the GPU
  (:mod:`tiles`).

Scores follow the captioner contract: attention that the last prompt position and every fed-back
caption token pay to the candidate range, averaged over heads, read-out layers and query rows
(rows: the last prompt position and tokens 1..n-1; token n is never fed), exactly as
:mod:`rats_ros.models.readout` computes them on the plain path.

The backend seam is :mod:`rats_ros.models.fast.hook` (``FastConfig.decode``: None = on CUDA).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
from torch.nn.attention import SDPBackend

from rats_ros.errors import ModelError
from rats_ros.models.base import clock
from rats_ros.models.fast import fused, fused_attention, tiles
from rats_ros.models.fast.layers import PackedLayer, rotate_half_matrix
from rats_ros.models.fast.prefill import prefill_many
from rats_ros.models.fast.priority import AnswerFirst, Pacer
from rats_ros.models.fast.static import (
    MAX_EOS_IDS,
    DecodeState,
    capture_graph,
    grown_capacity,
    recent_graph,
)
from rats_ros.models.fast.support import (  # noqa: F401 (SUPPORTED_LM_CLASSES: re-exported)
    SUPPORTED_LM_CLASSES,
    FastResult,
    fast_result,
    language_parts,
    packed_layers,
    supports,
)

# prefill attention kernels in order of preference (the first usable one runs)
_ALL_SDPA = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
SDPA_ORDER = {"flash": _ALL_SDPA, "cudnn": [SDPBackend.CUDNN_ATTENTION, *_ALL_SDPA]}


class FastDecoder:
    """Static-cache greedy decoder with in-step attention read-out (optionally CUDA-graphed).

    :param model: a transformers model whose language part is a ``Qwen2Model`` (LLaVA-OneVision,
        Qwen2ForCausalLM), a ``Qwen2_5_VLTextModel`` (Qwen2.5-VL) or a ``Qwen3VLTextModel``
        (Qwen3-VL), already on its device and dtype, in eval mode.
    :param readout_layers: 0-based decoder layers whose attention is read out.
    :param use_cuda_graph: capture the decode step in a CUDA graph; default: when on CUDA.
    :param bucket: capacity granularity in tokens (one graph per capacity bucket).
    :param weights: ``native``, or weight-only ``int8`` / ``int4`` projections (:mod:`quant`).
    :param fused_step: decode each layer with the Triton kernels of :mod:`fused` (7-10 kernels
        instead of ~22); default: on CUDA when Triton is installed and the weights are native.
    :param prefill_attention: ``"flash"`` (default) or ``"cudnn"`` (cuDNN attention first, then
        flash). Measured on an H100 (bench/RESULTS.md): cuDNN saves ~13 ms of a 7B prefill of
        6.3k tokens but builds a plan per new prompt length (~50-100 ms: slower answers, whose
        prompts vary) and gave prefill spikes in steady streaming, so flash is the default.
    :raises ModelError: when the model is not supported.
    :param tile_cache: a :class:`~rats_ros.models.fast.tile_cache.TileCache` keeping the fused
        products' tile choices across restarts, or None.
    """

    def __init__(self, model, readout_layers: Sequence[int] = (),
                 use_cuda_graph: bool | None = None, bucket: int = 512,
                 prefill_attention: str = "flash", weights: str = "native",
                 fused_step: bool | None = None, tile_cache=None):
        if not supports(model):
            raise ModelError("fast decoding supports Qwen2, Qwen2.5-VL and Qwen3-VL language "
                             "models with full attention and default RoPE only; "
                             "use the backend's plain decode loop for this model")
        self.decoder, self.head = language_parts(model)
        cfg = self.decoder.config
        self.layers = list(self.decoder.layers)
        self.n_layers = len(self.layers)
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.scale = self.head_dim ** -0.5
        self.readout_layers = tuple(sorted(set(int(i) for i in readout_layers)))
        if any(i < 0 or i >= self.n_layers for i in self.readout_layers):
            raise ModelError(f"read-out layers {self.readout_layers} outside "
                             f"0..{self.n_layers - 1}")
        rotary = self.decoder.rotary_emb
        self.inv_freq, self.rope_scaling = rotary.inv_freq, float(rotary.attention_scaling)
        weight = self.head.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.weights = weights
        self.packed = packed_layers(model, self.layers, self.n_heads, self.n_kv, self.head_dim,
                                     weights)
        self.rot_half = rotate_half_matrix(self.head_dim, self.device, self.dtype)  # (d, d)
        on_cuda = self.device.type == "cuda"
        can_fuse = fused.available(self.device) and fused.supports(self.packed, self.head_dim)
        if fused_step and not can_fuse:
            raise ModelError("the fused decode step needs Triton, native weights and a power of "
                             "two head dim; pass fused_step=False")
        self.fused_step = (on_cuda and can_fuse) if fused_step is None else bool(fused_step)
        self.tile_cache = tile_cache  # tile choices across restarts (tile_cache.TileCache)
        self.tiles = tiles.for_decoder(self, asked=fused_step is not None)  # {}: torch step
        self.use_cuda_graph = on_cuda if use_cuda_graph is None else bool(use_cuda_graph)
        self.bucket = bucket
        if prefill_attention not in SDPA_ORDER:
            raise ModelError(f"prefill_attention must be one of {sorted(SDPA_ORDER)}")
        self.sdpa_backends = SDPA_ORDER[prefill_attention]
        self._state: DecodeState | None = None
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._pool = None
        self._lock = threading.Lock()
        # the model's answers-first gate, set on caption decoders (hook.caption_decoder);
        # None: never step aside (answer decoders, benches of one decoder)
        self.gate: AnswerFirst | None = None

    # ----------------------------------------------------------------------------- public
    @torch.inference_mode()
    def run(self, inputs_embeds: torch.Tensor, max_new_tokens: int,
            eos_token_ids: Sequence[int] = (), readout_range: tuple[int, int] | None = None,
            ignore_eos: bool = False, deepstack=None, step=None) -> FastResult:
        """Greedy-decode after ``inputs_embeds`` and read out attention over ``readout_range``.

        :param inputs_embeds: ``(P, D)`` prompt embeddings (model dtype, model device).
        :param max_new_tokens: tokens to generate (exactly this many when ``ignore_eos``).
        :param eos_token_ids: up to 8 ids that end the caption.
        :param readout_range: ``(start, end)`` key positions whose scores are returned.
        :param ignore_eos: timing mode: decode ``max_new_tokens`` regardless of EOS.
        :param deepstack: Qwen3-VL's ``(positions (N,), [features (N, D)] per layer)``, added to
            the prefill's hidden states after layers ``0, 1, ...``; or None.
        :param step: ``step(count, ids)`` before each decode step (``base.stream_step``: a
            cancel raises out of the loop, the state is reset by the next run), or None.
        :returns: :class:`FastResult`.
        :raises ModelError: on bad shapes or arguments.
        """
        prompt_len = int(inputs_embeds.shape[0])
        if inputs_embeds.dim() != 2 or prompt_len == 0 or max_new_tokens < 1:
            raise ModelError("inputs_embeds must be (P>0, D) and max_new_tokens >= 1")
        if readout_range is not None and not 0 <= readout_range[0] < readout_range[1] <= prompt_len:
            raise ModelError(f"readout range {readout_range} outside the prompt (0..{prompt_len})")
        eos = [] if ignore_eos else list(eos_token_ids)
        if len(eos) > MAX_EOS_IDS:
            raise ModelError(f"at most {MAX_EOS_IDS} EOS ids are supported")
        with self._lock:
            return self._run(inputs_embeds, max_new_tokens, eos, readout_range, deepstack, step)

    # ----------------------------------------------------------------------------- internals
    def _run(self, embeds, max_new, eos, readout_range, deepstack, step=None) -> FastResult:
        prompt_len = int(embeds.shape[0])
        capacity = -(-(prompt_len + max_new) // self.bucket) * self.bucket
        st = self._ensure_state(capacity)
        step_fn = self._step_fn(capacity)  # captures (and so warms up) before the prefill
        pace = Pacer(self.gate, self.device)
        t0 = self._now()
        self._reset(st, eos)
        first = self._prefill(st, embeds.to(self.device, self.dtype), readout_range is not None,
                              deepstack, pace)
        st.tok.copy_(first)
        st.out[0:1].copy_(first)
        st.pos.fill_(prompt_len)
        st.step.fill_(1)
        st.rows.fill_(1.0)
        st.alive.copy_(1.0 - self._is_eos(st, first))
        t1 = self._now()
        done = 1
        while done < max_new:
            if step is not None:  # an answer streamed: the cancel polled, the ids read if wanted
                step(done, lambda n=done: _until_eos(st.out[:n].flatten().tolist(), eos))
            pace()
            step_fn()
            done += 1
            if eos and done % 8 == 0 and float(st.alive) == 0.0:
                break
        t2 = self._now()
        return fast_result(self, st.out, st.rows, st.acc, done, eos, readout_range, t1 - t0,
                           t2 - t1)

    def _now(self) -> int:
        return int(clock(self.device) * 1e9)

    def _ensure_state(self, capacity: int) -> DecodeState:
        """Grow the static buffers when a prompt does not fit (by >= 25 %, so a stream whose
        memory fills up reallocates a few times, then never); graphs die with the old buffers."""
        if self._state is None or self._state.capacity < capacity:
            old = self._state.capacity if self._state is not None else 0
            self._graphs.clear()
            self._pool = None  # a pool whose graphs are all gone must not be reused
            self._state = None
            self._state = DecodeState(self, grown_capacity(old, capacity, self.bucket))
        return self._state

    def _reset(self, st: DecodeState, eos: list[int]) -> None:
        st.mask.fill_(float("-inf"))
        st.acc.zero_()
        st.eos.fill_(-1)
        if eos:
            st.eos[: len(eos)].copy_(torch.tensor(eos, dtype=torch.long))

    @staticmethod
    def _is_eos(st: DecodeState, tok: torch.Tensor) -> torch.Tensor:
        return (tok[:, None] == st.eos[None, :]).any(dim=1).float()  # (rows,)

    def _step_fn(self, capacity: int):
        st = self._state
        if not self.use_cuda_graph:
            return lambda: self._decode_step(st, capacity)
        return recent_graph(self._graphs, capacity, lambda: self._capture(st, capacity)).replay

    def _capture(self, st: DecodeState, capacity: int) -> torch.cuda.CUDAGraph:
        st.pos.zero_()
        st.step.zero_()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        return capture_graph(lambda: self._decode_step(st, capacity), self.device, self._pool)

    def _prefill(self, st: DecodeState, embeds: torch.Tensor, readout: bool, deepstack,
                 pace) -> torch.Tensor:
        """Run the prompt ``(P, D)``; fill K/V rows ``[0, P)``; read out the last row; add
        DeepStack features (:meth:`run`) after the first layers; ``pace()`` (a
        :class:`~rats_ros.models.fast.priority.Pacer`) before each layer. The batched
        decoder's prefill with one prompt (:func:`~rats_ros.models.fast.prefill.prefill_many`).

        :returns: ``(1,)`` the first generated token.
        """
        return prefill_many(self, [st], [embeds], [readout], [deepstack], pace)

    def _rotation(self, st: DecodeState) -> torch.Tensor:
        """:returns: ``(d, d)`` RoPE at this position as a matrix: ``x @ rot == RoPE(x)``."""
        cos, sin = st.cos.index_select(0, st.pos), st.sin.index_select(0, st.pos)  # (1, d)
        rot = self.rot_half * sin  # x @ rot == rotate_half(x) * sin
        rot.diagonal().add_(cos[0])  # + diag(cos)
        return rot

    def _step_q(self, layer, x: torch.Tensor, rot, st: DecodeState, idx: int) -> torch.Tensor:
        """Layer ``idx``'s q/k/v of the token ``x`` ``(1, D)``: K and V written into the cache at
        ``st.pos``. :returns: ``q`` ``(H, d)`` after RoPE."""
        if self.fused_step:
            qkv = tiles.layer_product(fused.norm_gemv, "qkv", layer, x,
                                      self.tiles.get("qkv"))  # (1, (H + 2 Hkv) d)
            return fused.rope_store(qkv, layer, st.cos, st.sin, st.pos, st.kv[idx])
        q, k, v = layer.step_qkv(x, rot)  # (H, d), (Hkv, d), (Hkv, d)
        st.kv[idx, 0].index_copy_(1, st.pos, k[:, None])
        st.kv[idx, 1].index_copy_(1, st.pos, v[:, None])
        return q

    def _step_out(self, layer, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """``x`` ``(1, D)`` after the layer's o projection of ``o`` ``(1, H d)`` and its MLP."""
        if not self.fused_step:
            return layer.mlp(layer.attn_out(x, o))
        return tiles.step_out(fused.norm_gemv, layer, x, o, self.tiles)

    def _attend(self, st: DecodeState, idx: int, q: torch.Tensor, mask: torch.Tensor,
                capacity: int, row: torch.Tensor) -> torch.Tensor:
        """Layer ``idx``'s attention of ``q`` ``(H, d)`` over the cache: ``(1, H d)``. A read-out
        layer adds its float32 softmax rows, summed over heads, to ``row`` ``(C,)``; its scores
        are rounded to the model dtype first, as transformers' eager attention does."""
        if self.fused_step and idx not in self.readout_layers:
            return fused_attention.decode_attention(q, st.kv[idx], st.pos, capacity, self.scale)
        keys, values = st.kv[idx, 0, :, :capacity], st.kv[idx, 1, :, :capacity]
        scores = torch.baddbmm(mask, q.view(self.n_kv, -1, self.head_dim), keys.transpose(1, 2),
                               alpha=self.scale)  # (Hkv, G, C)
        if idx in self.readout_layers:
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
            row += probs.sum(dim=(0, 1))
            probs = probs.to(self.dtype)
        else:  # same values as float32 softmax then rounding, one kernel
            probs = torch.softmax(scores, dim=-1)
        return torch.matmul(probs, values).view(1, -1)  # (1, H d)

    def _decode_step(self, st: DecodeState, capacity: int) -> None:
        """One token: static shapes, device-side indices only (CUDA-graph capturable).

        ~22 kernels per layer in torch (see :mod:`layers`), 7-10 with the fused step
        (:mod:`fused`, :mod:`fused_attention` where the layer is not read out).
        """
        st.mask.index_fill_(0, st.pos, 0.0)
        mask = st.mask[:capacity]  # (C,) broadcast over (Hkv, G, C)
        rot = None if self.fused_step else self._rotation(st)
        x = self.decoder.embed_tokens(st.tok)  # (1, D)
        row = torch.zeros(capacity, device=self.device)
        for idx, layer in enumerate(self.packed):
            q = self._step_q(layer, x, rot, st, idx)  # (H, d); this position's K/V written
            x = self._step_out(layer, x, self._attend(st, idx, q, mask, capacity, row))
        nxt = self.head(PackedLayer.norm(self.decoder.norm, x)).argmax(dim=-1)  # (1,)
        st.acc[:capacity] += st.alive * row
        st.rows += st.alive
        st.alive *= 1.0 - self._is_eos(st, nxt)
        st.out.index_copy_(0, st.step, nxt)
        st.tok.copy_(nxt)
        st.pos += 1
        st.step += 1


def _until_eos(ids: list[int], eos: list[int]) -> list[int]:
    """``ids`` up to and with the first EOS (the decoder runs on up to 7 steps past it)."""
    for i, token in enumerate(ids):
        if token in eos:
            return ids[: i + 1]
    return ids
