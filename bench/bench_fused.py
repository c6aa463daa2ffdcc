"""The fused decode kernels against the torch ops they replace, per projection of a decode step.

For each model size, the four products of one decoder layer at one row (a decode step), each
timed as the mean of ``--reps`` back-to-back calls replayed from one CUDA graph (what the decode
graph does), each call cycling through copies of the weights beyond the L2 cache:

- ``qkv``: RMSNorm, then the packed q/k/v product (+ bias for the Qwen2 families);
- ``o``: the o product with the residual add (``addmm``);
- ``gate_up``: RMSNorm, the packed gate/up product, SiLU(gate) * up;
- ``down``: the down product with the residual add.

``torch`` is the torch step's ops, ``fused`` one :func:`rats_ros.models.fast.fused.norm_gemv`
with its default tiles; ``--sweep`` adds every tile in :data:`SWEEP` (one line each) to choose
the defaults from. ``bytes_per_s`` is the weight bytes over the time (the floor is the copy
bandwidth). With ``--smoke`` (``make bench``, CI): tiny shapes on the CPU through Triton's
interpreter, timing only that it runs.
"""
from __future__ import annotations

import itertools
import os
import sys
import time

if "--smoke" in sys.argv:  # Triton reads this when imported: kernels interpreted on the CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

import models  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import Emitter, entry_point, environment, model_parser, parse_args  # noqa: E402

from rats_ros.models.fast import fused, tiles  # noqa: E402
from rats_ros.models.fast.quant import Dense  # noqa: E402

SHAPES = {**models.TEXT_SIZES, **models.QWEN25_VL_SIZES,
          **models.QWEN3_VL_SIZES,
          "tiny": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=96)}
BIASED = ("0.5b", "7b", *models.QWEN25_VL_SIZES, "tiny")  # Qwen2 layers: q/k/v biases
STREAMED = 200 * 2**20  # bytes each product cycles through (4x the H200's 50 MB L2)
SWEEP = list(itertools.product((1, 2, 4, 8, 16), (512, 1024, 2048), (4, 8)))


class Norm(torch.nn.Module):
    def __init__(self, dim: int, device, dtype):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.variance_epsilon = 1e-6


def projections(size: str, device, dtype) -> dict:
    """``name -> (torch_fn, fused_fn(config), copies, weight bytes of one)`` of one layer of
    ``size``. Each product cycles through copies of its weights holding at least
    :data:`STREAMED` bytes, so that, as in a decode step, no weight is read from L2."""
    cfg = SHAPES[size]
    d, inter = cfg["hidden_size"], cfg["intermediate_size"]
    head = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    qkv_out = (cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"]) * head
    o_in = cfg["num_attention_heads"] * head

    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype) * shape[-1] ** -0.5

    def copies(out_dim, in_dim, bias=False):
        n = max(1, -(-STREAMED // (out_dim * in_dim * 2))) if device.type == "cuda" else 1
        return [Dense(rand(out_dim, in_dim), rand(out_dim) if bias else None) for _ in range(n)]

    x, norm = rand(1, d), Norm(d, device, dtype)
    qkv = copies(qkv_out, d, bias=size in BIASED)
    o, gu, down = copies(d, o_in), copies(2 * inter, d), copies(d, inter)
    attn, hidden = rand(1, o_in), rand(1, inter)

    def rms(v):
        return F.rms_norm(v, (d,), norm.weight, norm.variance_epsilon)

    def torch_gate_up(m):
        h = m(rms(x))
        return F.silu(h[:, :inter]) * h[:, inter:]

    def each(ms, fn):
        return lambda: [fn(m) for m in ms]

    def each_tile(ms, fn):
        return lambda c: [fn(m, c) for m in ms]

    return {
        "qkv": (each(qkv, lambda m: m(rms(x))),
                each_tile(qkv, lambda m, c: fused.norm_gemv(x, m, norm=norm, config=c)), qkv),
        "o": (each(o, lambda m: m.residual(x, attn)),
              each_tile(o, lambda m, c: fused.norm_gemv(attn, m, residual=x, config=c)), o),
        "gate_up": (each(gu, torch_gate_up),
                    each_tile(gu, lambda m, c: fused.norm_gemv(x, m, norm=norm, glu=inter,
                                                               config=c)), gu),
        "down": (each(down, lambda m: m.residual(x, hidden)),
                 each_tile(down, lambda m, c: fused.norm_gemv(hidden, m, residual=x, config=c)),
                 down),
    }


def timed_us(fn, device, reps: int) -> float:
    """Mean microseconds of ``fn`` over ``reps`` calls replayed from one CUDA graph (the
    decoder's tile timer, :func:`~rats_ros.models.fast.tiles.replay_ms`); CPU: a plain loop."""
    if device.type == "cuda":
        return tiles.replay_ms(lambda: [fn() for _ in range(reps)], device) * 1e3 / reps
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e6


def run(args) -> None:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if not fused.available(device):
        raise SystemExit(f"the fused kernels cannot run on {device} here (Triton missing?)")
    emit, env = Emitter(args.out), environment(args.device)
    for size in args.sizes:
        for name, (torch_fn, fused_fn, mats) in projections(size, device, dtype).items():
            configs = [None, *SWEEP] if args.sweep else [None]
            variants = [("torch", None, torch_fn)] + [
                ("fused", c, lambda c=c, f=fused_fn: f(c)) for c in configs]
            for variant, config, fn in variants:
                us = timed_us(fn, device, args.reps) / len(mats)  # one product
                emit({"bench": "fused", "size": size, "product": name, "variant": variant,
                      "config": list(config) if config else None, "us": us,
                      "bytes_per_s": mats[0].nbytes / (us * 1e-6), **env})


def parse(argv=None):
    ap = model_parser(__doc__)
    ap.add_argument("--sizes", nargs="+", default=["0.5b", "qwen3-vl-2b", "qwen2.5-vl-3b", "7b"],
                    choices=list(SHAPES))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sweep", action="store_true", help="every tile of SWEEP as well")
    return parse_args(ap, argv, sizes=["tiny"], reps=1)


main = entry_point(parse, run)

if __name__ == "__main__":
    raise SystemExit(main())
