"""Where one clip's encode spends its time, host and device: for comparing two trees.

    PYTHONPATH=TREE python3 TREE/bench/profile_encode.py --size qwen3-vl-2b [--python]

Prints the median of 20 timed encodes (pre-processing, tower, both), the CUDA kernel count and
the top ops by CUDA and by host time (torch.profiler); ``--python`` adds the top Python functions
by own time (cProfile). Same kernels and device time with more host time means overhead around
the kernels (dispatch, Python), not the kernels.
"""
import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import frame_pool, load_bench_backend  # noqa: E402


def timed(fn) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="qwen3-vl-2b")
    ap.add_argument("--python", action="store_true", help="also a cProfile of 20 encodes")
    args = ap.parse_args(argv)
    from torch.profiler import ProfilerActivity, profile

    backend = load_bench_backend(args.size, "cuda")
    pool = frame_pool(3, 384, 16)
    for _ in range(5):
        backend.encode_clip(pool[0])
    parts = {"inputs": [], "tower": [], "encode": []}
    for i in range(20):
        clip = pool[i % 3]
        parts["encode"].append(timed(lambda c=clip: backend.encode_clip(c)))
        made = []
        parts["inputs"].append(timed(lambda c=clip, out=made: out.append(
            backend.vision_inputs(c))))
        parts["tower"].append(timed(lambda out=made: backend.vision_tower(*out[0])))
    print(args.size, {k: round(statistics.median(v), 2) for k, v in parts.items()}, "ms")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        timed(lambda: backend.encode_clip(pool[0]))
    events = prof.key_averages()
    kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    print("cuda kernels:", kernels)
    print(events.table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=60))
    if args.python:
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(20):
            backend.encode_clip(pool[i % 3])
        torch.cuda.synchronize()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
