"""Each fused product's tile, chosen by timing on the GPU the decoder runs on.

Why timed, not a rule: on the H200 the best tile of a one-row product ranged from 1 row x 512
columns with 8 warps (7B down projection: thousands of small programs) to 8 rows x 2,048 columns
(Qwen3-VL-2B gate/up), and a fixed rule's tile was up to 2x slower than the best
(``bench_fused --sweep``, bench/RESULTS.md). Other GPUs (an Orin's 16 SMs) differ again.

Each candidate runs the product of every layer once, back to back, replayed from one CUDA graph:
the decode step's access pattern (each layer's weights read once; the whole model does not fit
in L2), without launch gaps. Choices are kept per shape and GPU in memory, so the answer
decoder and a reloaded decoder reuse them, and with a
:class:`~rats_ros.models.fast.tile_cache.TileCache` (the node's ``cache_dir``) on disk, so a
restarted process does too; Triton caches the compiled kernels on disk across runs.
"""
from __future__ import annotations

import logging

import torch

from rats_ros.errors import ModelError
from rats_ros.models.fast import fused, fused_batch
from rats_ros.models.fast.static import capture_graph

# The tiles timed per GPU and product shape when a decoder is built (the fastest is kept in
# ``_chosen``). One-row products, (BLOCK_N, BLOCK_K, num_warps): the tiles that won on an H200
# over LLaVA-OV 0.5B / 7B and Qwen-VL shapes, and their neighbours
CANDIDATES = ((1, 512, 8), (1, 1024, 4), (1, 2048, 4), (2, 1024, 4), (4, 512, 4), (4, 1024, 4),
              (4, 2048, 4), (8, 1024, 4), (8, 2048, 4))
# the batched products' (fused_batch.norm_gemm: tl.dot of 16 rows, so 16 columns at least),
# with the loop's pipeline depth (num_stages): few programs (N / BLOCK_N) must still keep
# enough loads in flight. The tiles that won among 14 timed on an H200 (0.5B, 7B, Qwen3-VL-2B,
# Qwen2.5-VL-3B shapes) and two neighbours: each candidate compiles on a fresh machine
ROW_CANDIDATES = ((16, 128, 4, 5), (16, 256, 4, 3), (16, 256, 4, 4), (16, 512, 4, 3),
                  (32, 128, 4, 3), (32, 128, 4, 5), (32, 256, 4, 3), (64, 128, 4, 3),
                  (64, 128, 8, 3))
TUNING_ROWS = 8  # rows of the batched products while timed (their cost hardly depends on it)
PRODUCTS = ("qkv", "o", "gate_up", "down")

_chosen: dict = {}  # (GPU name, product, shape) -> tile
log = logging.getLogger(__name__)


def for_decoder(dec, asked: bool, rows: int = 1) -> dict:
    """The tiles of decoder ``dec`` (a ``FastDecoder``; {} when its step is not fused), for
    its one-row products or (``rows`` > 1) the batched decoder's. A GPU where a product has no
    tile that compiles turns the fused step off (logged) unless it was ``asked`` for
    explicitly, which raises :class:`ModelError`; a batched decoder then keeps its torch step."""
    if not dec.fused_step:
        return {}
    try:
        return tuned_tiles(dec.packed, dec.dtype, dec.device, rows, dec.tile_cache)
    except ModelError as err:
        if asked:
            raise
        log.warning("fused decode step off, the torch step runs: %s", err)
        if rows == 1:
            dec.fused_step = False
        return {}


def layer_product(product, name: str, layer, x: torch.Tensor, config,
                  residual: torch.Tensor | None = None) -> torch.Tensor:
    """``layer``'s product ``name`` (one of :data:`PRODUCTS`) of the rows ``x`` ``(B, K)``, by
    ``product`` (:func:`fused.norm_gemv` for one row, :func:`fused_batch.norm_gemm` for more),
    fused with what surrounds it: RMSNorm before qkv and gate/up, the SiLU gate after gate/up,
    ``residual`` ``(B, N)`` added after o and down."""
    if name == "qkv":
        return product(x, layer.qkv, norm=layer.ln1, config=config)
    if name == "gate_up":
        return product(x, layer.gu, norm=layer.ln2, glu=layer.inter, config=config)
    return product(x, layer.o if name == "o" else layer.down, residual=residual, config=config)


def step_out(product, layer, x: torch.Tensor, attn: torch.Tensor, tiles: dict) -> torch.Tensor:
    """The rows ``x`` ``(B, D)`` after ``layer``'s o projection of ``attn`` ``(B, H d)`` and
    its MLP, each product by ``product`` with its tile from ``tiles``."""
    x = layer_product(product, "o", layer, attn, tiles.get("o"), residual=x)
    hidden = layer_product(product, "gate_up", layer, x, tiles.get("gate_up"))  # (B, I)
    return layer_product(product, "down", layer, hidden, tiles.get("down"), residual=x)


def product_calls(layers, dtype, device, rows: int = 1) -> dict:
    """``product -> call(layer, tile)`` of one decode step's products on ``rows`` random rows
    (:func:`fused.norm_gemv` for one, :func:`fused_batch.norm_gemm` for more)."""
    first = layers[0]
    dim, heads_out = first.o.weight.shape
    x = torch.randn(rows, dim, device=device, dtype=dtype) * 0.1
    attn = torch.randn(rows, heads_out, device=device, dtype=dtype) * 0.1
    hidden = torch.randn(rows, first.inter, device=device, dtype=dtype) * 0.1
    product = fused.norm_gemv if rows == 1 else fused_batch.norm_gemm
    inputs = {"qkv": (x, None), "o": (attn, x), "gate_up": (x, None), "down": (hidden, x)}
    return {name: (lambda layer, tile, name=name, inp=inp, res=res:
                   layer_product(product, name, layer, inp, tile, res))
            for name, (inp, res) in inputs.items()}


def candidates(k_in: int, rows: int = 1) -> list[tuple[int, int, int]]:
    """:data:`CANDIDATES` (:data:`ROW_CANDIDATES` for several rows) whose column block does
    not exceed the input width."""
    widest = 1 << max(0, (k_in - 1).bit_length())
    if rows > 1:
        widest = max(widest, 16)
    return sorted({(n, min(k, widest), *rest)
                   for n, k, *rest in (CANDIDATES if rows == 1 else ROW_CANDIDATES)})


def tuned_tiles(layers, dtype, device, rows: int = 1,
                cache=None) -> dict[str, tuple[int, int, int]]:
    """:returns: ``product -> (BLOCK_N, BLOCK_K, num_warps[, num_stages])``, the fastest
    candidate for each
    product of ``layers`` (:class:`~rats_ros.models.fast.layers.PackedLayer`) on ``device``,
    for one row or (``rows`` > 1) the batched products; candidates this GPU cannot compile
    are skipped. ``cache`` (a :class:`~rats_ros.models.fast.tile_cache.TileCache`, or None)
    keeps the choices across restarts.
    :raises ModelError: when no candidate of a product compiles."""
    if device.type != "cuda":  # interpreted: one program holds all rows (fused.gemv_config)
        return {}
    first, gpu = layers[0], torch.cuda.get_device_name(device)
    shapes = {"qkv": first.qkv.weight.shape, "o": first.o.weight.shape,
              "gate_up": first.gu.weight.shape, "down": first.down.weight.shape}
    batched = rows > 1
    calls = product_calls(layers, dtype, device, TUNING_ROWS if batched else 1)
    tiles = {}
    for name in PRODUCTS:
        key = (gpu, name, tuple(shapes[name]), len(layers), first.qkv.bias is not None, batched)
        if key not in _chosen:
            def time_ms(tile, call=calls[name]):
                return replay_ms(lambda: [call(layer, tile) for layer in layers], device)

            _chosen[key] = choose(candidates(int(shapes[name][1]), rows), time_ms, cache,
                                  cache.key(*key) if cache is not None else "", f"{name} on {gpu}")
        tiles[name] = _chosen[key]
    return tiles


def choose(options, time_ms, cache=None, key: str = "", what: str = "") -> tuple:
    """The fastest tile of ``options`` by ``time_ms(tile)`` (a tile that does not compile is
    no candidate), or the one ``cache`` holds for ``key`` when it is still a candidate; a timed
    choice is stored there. :raises ModelError: when no candidate compiles."""
    stored = cache.get(key) if cache is not None else None
    if stored is not None and stored in options:
        return stored
    timings = {}
    for tile in options:
        try:
            timings[tile] = time_ms(tile)
        except fused.KERNEL_ERRORS:  # too many registers for this GPU: not a candidate
            continue
    if not timings:
        raise ModelError(f"no tile of the fused {what} product compiles; use the torch step "
                         "(FastDecoder(fused_step=False))")
    best = min(timings, key=timings.get)
    if cache is not None:
        cache.put(key, best)
    return best


def replay_ms(step, device, replays: int = 5) -> float:
    """Milliseconds of one replay of ``step`` captured in a CUDA graph (mean of ``replays``,
    after one untimed replay); ``bench_fused`` times with it too."""
    graph = capture_graph(step, device, None)
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / replays
