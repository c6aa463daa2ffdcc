"""The fused decode kernels against the torch ops they replace, per projection of a decode step.

For each model size, the four products of one decoder layer at one row (a decode step), each
timed as the mean of ``--reps`` back-to-back calls replayed from one CUDA graph (what the decode
graph does):

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

from rats_ros.models.fast import fused  # noqa: E402
from rats_ros.models.fast.quant import Dense  # noqa: E402

SHAPES = {**models.TEXT_SIZES, **models.QWEN25_VL_SIZES,
          **models.QWEN3_VL_SIZES,
          "tiny": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=96)}
BIASED = ("0.5b", "7b", *models.QWEN25_VL_SIZES, "tiny")  # Qwen2 layers: q/k/v biases
SWEEP = list(itertools.product((1, 2, 4, 8, 16), (512, 1024, 2048), (4, 8)))


class Norm(torch.nn.Module):
    def __init__(self, dim: int, device, dtype):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.variance_epsilon = 1e-6


def projections(size: str, device, dtype) -> dict:
    """``name -> (torch_fn, fused_fn(config), weight bytes)`` of one layer of ``size``."""
    cfg = SHAPES[size]
    d, inter = cfg["hidden_size"], cfg["intermediate_size"]
    head = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    qkv_out = (cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"]) * head
    o_in = cfg["num_attention_heads"] * head

    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype) * shape[-1] ** -0.5

    x, norm = rand(1, d), Norm(d, device, dtype)
    qkv = Dense(rand(qkv_out, d), rand(qkv_out) if size in BIASED else None)
    o, gu, down = Dense(rand(d, o_in)), Dense(rand(2 * inter, d)), Dense(rand(d, inter))
    attn, hidden = rand(1, o_in), rand(1, inter)

    def rms(v):
        return F.rms_norm(v, (d,), norm.weight, norm.variance_epsilon)

    def torch_gate_up():
        h = gu(rms(x))
        return F.silu(h[:, :inter]) * h[:, inter:]

    return {
        "qkv": (lambda: qkv(rms(x)), lambda c: fused.norm_gemv(x, qkv, norm=norm, config=c),
                qkv.nbytes),
        "o": (lambda: o.residual(x, attn),
              lambda c: fused.norm_gemv(attn, o, residual=x, config=c), o.nbytes),
        "gate_up": (torch_gate_up,
                    lambda c: fused.norm_gemv(x, gu, norm=norm, glu=inter, config=c), gu.nbytes),
        "down": (lambda: down.residual(x, hidden),
                 lambda c: fused.norm_gemv(hidden, down, residual=x, config=c), down.nbytes),
    }


def timed_us(fn, device, reps: int) -> float:
    """Mean microseconds of ``fn`` over ``reps`` calls replayed from one CUDA graph (CPU: a
    plain loop)."""
    fn()
    if device.type != "cuda":
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps * 1e6
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (5 * reps)


def run(args) -> None:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if not fused.available(device):
        raise SystemExit(f"the fused kernels cannot run on {device} here (Triton missing?)")
    emit, env = Emitter(args.out), environment(args.device)
    for size in args.sizes:
        for name, (torch_fn, fused_fn, nbytes) in projections(size, device, dtype).items():
            configs = [None, *SWEEP] if args.sweep else [None]
            variants = [("torch", None, torch_fn)] + [
                ("fused", c, lambda c=c, f=fused_fn: f(c)) for c in configs]
            for variant, config, fn in variants:
                us = timed_us(fn, device, args.reps)
                emit({"bench": "fused", "size": size, "product": name, "variant": variant,
                      "config": list(config) if config else None, "us": us,
                      "bytes_per_s": nbytes / (us * 1e-6), **env})


def parse(argv=None):
    ap = model_parser(__doc__)
    ap.add_argument("--sizes", nargs="+", default=["0.5b", "qwen3-vl-2b", "qwen2.5-vl-3b", "7b"],
                    choices=list(SHAPES))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sweep", action="store_true", help="every tile of SWEEP as well")
    return parse_args(ap, argv, sizes=["tiny"], reps=1)


main = entry_point(parse, run)

if __name__ == "__main__":
    raise SystemExit(main())
