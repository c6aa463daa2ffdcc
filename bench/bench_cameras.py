"""Several cameras on one model: clips/s and per-clip latency for N cameras, against N = 1.

What the node does today (``ros/worker.py``): one backend, one ``RecurrentCaptioner`` (own FIFO
memory, own clip indices) per camera, cameras served round robin, one clip at a time. Each
camera contributes ``--rounds`` clips; N = 1 is the baseline measured in the same run. A second
line per N gives the memory cost of a camera (its token memory when full) against the model's
weights, which all cameras share. Batched multi-camera forwards are not built: expect clips/s
flat in N (the model's throughput shared by the cameras) and per-clip latency unchanged.
"""
from __future__ import annotations

from common import (
    Emitter,
    entry_point,
    environment,
    frame_pool,
    load_bench_backend,
    make_clip,
    model_parser,
    parse_args,
    summary,
    sync,
)

from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner


def parse(argv=None):
    ap = model_parser(__doc__)
    ap.add_argument("--cameras", default="1,2,4,8", help="camera counts, comma-separated")
    ap.add_argument("--rounds", type=int, default=6, help="clips per camera")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--tokens", type=int, default=40, help="caption length (EOS ignored)")
    return parse_args(ap, argv, cameras="1,2,4", rounds=2, frames=4, side=64, tokens=4)


def run(args) -> None:
    emit = Emitter(args.out)
    backend = load_bench_backend(args.size, args.device, args.dtype)
    backend.eos_ids = set()  # fixed-length captions: the same work per clip at every N
    weights = sum(p.numel() * p.element_size() for p in backend.model.parameters())
    pool = frame_pool(4, args.side, args.frames)
    config = CaptionerConfig(max_new_tokens=args.tokens)
    RecurrentCaptioner(backend, config).step(make_clip(pool[0], 0))  # warm-up
    baseline = None
    for n in [int(c) for c in args.cameras.split(",")]:
        captioners = [RecurrentCaptioner(backend, config) for _ in range(n)]
        latencies = []
        started = sync(backend.device)
        for index in range(args.rounds):
            for camera, captioner in enumerate(captioners):  # round robin, as the node does
                t0 = sync(backend.device)
                captioner.step(make_clip(pool[(index + camera) % len(pool)], index))
                latencies.append((sync(backend.device) - t0) * 1e3)
        clips_per_s = n * args.rounds / (sync(backend.device) - started)
        baseline = baseline or clips_per_s
        memory = sum(c.memory.tokens().numel() * c.memory.tokens().element_size()
                     for c in captioners)
        emit({"bench": "cameras", "size": args.size,
              "family": backend.model.config.model_type, "cameras": n,
              "clips_per_s": clips_per_s, "vs_one_camera": clips_per_s / baseline,
              "per_clip_ms": summary(latencies), "camera_memory_mb": memory / 2**20,
              "weights_mb": weights / 2**20, **environment(args.device)})


main = entry_point(parse, run)

if __name__ == "__main__":
    raise SystemExit(main())
