"""Several cameras on one model: clips/s and per-clip latency for N cameras, against N = 1.

One backend, one ``RecurrentCaptioner`` (own FIFO memory, own clip indices) per camera. Two
modes, each against its own N = 1 in the same run: ``round_robin`` (cameras served one clip at
a time) and ``batched`` (one clip of every camera per round through ``step_many``: clips of one
shape encoded in one forward where the family can (LLaVA-OV), the prompts prefilled in one pass
and the captions decoded together by ``fast.batch``). Each camera
contributes ``--rounds`` clips. Per-clip latency in ``batched`` is the round's time (every clip
of the round waits for the batch). Each line also gives the memory cost of the cameras (their
token memories when full) against the model's weights, which all cameras share, and the GPU
memory allocated after each round once the memories are full (``--rounds 112``: one hour per
camera at 0.5 fps; flat is the goal). ``batched_torch_step`` is ``batched`` with the batched
decoder's torch step instead of the fused Triton step (``FastConfig.fused_batch``), and
``batched_encode_apart`` ``batched`` with each clip encoded alone (``FastConfig.encode_together``):
the baselines of the fused batched step and of the towers' batched encode, in the same run.
"""
from __future__ import annotations

import time
from dataclasses import replace

from bench_clip import kernel_profile
from common import (
    Emitter,
    entry_point,
    environment,
    frame_pool,
    load_bench_backend,
    make_clip,
    memory_mb,
    model_parser,
    parse_args,
    summary,
    sync,
)

from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner, step_many

WARM_ROUNDS = 4  # untimed rounds per N and mode first (a fresh capacity captures new graphs)


def parse(argv=None):
    ap = model_parser(__doc__)
    ap.add_argument("--cameras", default="1,2,4,8", help="camera counts, comma-separated")
    ap.add_argument("--rounds", type=int, default=6, help="clips per camera")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--tokens", type=int, default=40, help="caption length (EOS ignored)")
    ap.add_argument("--profile", action="store_true",
                    help="CUDA kernels of one more round at each N (batched modes)")
    ap.add_argument("--prepare", action="store_true",
                    help="build the decoders first, as a node's configure does (prepare_s)")
    ap.add_argument("--modes", nargs="+", default=["round_robin", "batched"],
                    choices=("round_robin", "batched", "batched_torch_step",
                             "batched_encode_apart"))
    return parse_args(ap, argv, cameras="1,2,4", rounds=2, frames=4, side=64, tokens=4)


def one_round(mode: str, captioners, clips, phases: dict | None = None) -> list[float]:
    """:returns: per-clip latencies (ms) of one clip per camera; a batched round adds its
    phases (ms: the encodes, the packed prefill, the batched decode, and the rest: uploads,
    prompts, selections, memories) to ``phases``."""
    if mode != "round_robin":
        t0 = sync(captioners[0].backend.device)
        captions = step_many(captioners, clips)
        total = (sync(captioners[0].backend.device) - t0) * 1e3
        if phases is not None:
            t = captions[0].timings  # encode and decode: the round's; prefill: a clip's share
            parts = {"encode": t["encode"] * 1e3, "prefill": t["prefill"] * 1e3 * len(clips),
                     "decode": t["decode"] * 1e3}
            parts["rest"] = total - sum(parts.values())
            for name, ms in parts.items():
                phases.setdefault(name, []).append(ms)
        return [total] * len(clips)
    latencies = []
    for captioner, clip in zip(captioners, clips, strict=True):  # round robin
        t0 = sync(captioner.backend.device)
        captioner.step(clip)
        latencies.append((sync(captioner.backend.device) - t0) * 1e3)
    return latencies


def use_mode(backend, mode: str) -> None:
    """Switch the batched step and the encode to ``mode``'s; the next batched decoder takes it."""
    backend.use_fast(replace(backend.fast.config, fused_batch=mode != "batched_torch_step",
                             encode_together=mode != "batched_encode_apart"))
    backend.fast.batch = None  # built again, with this mode's step


def run(args) -> None:
    emit = Emitter(args.out)
    backend = load_bench_backend(args.size, args.device, args.dtype)
    backend.eos_ids = set()  # fixed-length captions: the same work per clip at every N
    weights = sum(p.numel() * p.element_size() for p in backend.model.parameters())
    pool = frame_pool(4, args.side, args.frames)
    config = CaptionerConfig(max_new_tokens=args.tokens)
    counts = [int(c) for c in args.cameras.split(",")]
    prepare_s = None
    if args.prepare:  # as a node's configure: before any clip, the first mode's decoders
        use_mode(backend, args.modes[0])
        prepare_s = backend.prepare(max(counts))
    started = time.perf_counter()
    RecurrentCaptioner(backend, config).step(make_clip(pool[0], 0))  # warm-up
    first_clip_ms = (time.perf_counter() - started) * 1e3  # one camera's first: its tiles, too
    for mode in args.modes:
        baseline = None
        if not (args.prepare and mode == args.modes[0]):
            use_mode(backend, mode)
        first_round = {}  # N -> ms of its first round: graphs captured (tiles too, unprepared)
        for n in counts:  # warm-up of each N: buffers,
            warm = [RecurrentCaptioner(backend, config) for _ in range(n)]  # graphs and tiles
            for index in range(min(args.rounds, WARM_ROUNDS)):  # as memories grow
                rounds = one_round(mode, warm, [make_clip(pool[(index + camera) % len(pool)],
                                                          index) for camera in range(n)])
                first_round.setdefault(n, rounds[0])
        for n in counts:
            captioners = [RecurrentCaptioner(backend, config) for _ in range(n)]
            latencies, allocated, phases = [], [], {}
            started = sync(backend.device)
            for index in range(args.rounds):
                clips = [make_clip(pool[(index + camera) % len(pool)], index)
                         for camera in range(n)]
                latencies += one_round(mode, captioners, clips, phases)
                if index >= config.memory_clips:  # memories full: steady state
                    allocated.append(memory_mb(backend.device)["allocated_mb"])
            clips_per_s = n * args.rounds / (sync(backend.device) - started)
            baseline = baseline or clips_per_s
            memory = sum(c.memory.tokens().numel() * c.memory.tokens().element_size()
                         for c in captioners)
            emit({"bench": "cameras", "mode": mode, "size": args.size,
                  "family": backend.model.config.model_type, "cameras": n,
                  "clips_per_s": clips_per_s, "vs_one_camera": clips_per_s / baseline,
                  "per_clip_ms": summary(latencies), "camera_memory_mb": memory / 2**20,
                  "round_phases_ms_p50": {k: summary(v)["p50"] for k, v in phases.items()},
                  "first_round_ms": first_round.get(n), "first_clip_ms": first_clip_ms,
                  "prepare_s": prepare_s if mode == args.modes[0] else None,
                  "batch_tiles": getattr(backend.fast.batch, "tiles", None),
                  "weights_mb": weights / 2**20, "steady_allocated_mb_min_max":
                      [min(allocated), max(allocated)] if allocated else None,
                  **environment(args.device)})
            if args.profile and mode != "round_robin" and backend.device.type == "cuda":
                clips = [make_clip(pool[camera % len(pool)], args.rounds) for camera in range(n)]
                emit({"bench": "profile", "size": args.size, "mode": mode, "cameras": n,
                      **kernel_profile(lambda m=mode, c=captioners, k=clips: one_round(m, c, k),
                                       "camera_round"), **environment(args.device)})


main = entry_point(parse, run)

if __name__ == "__main__":
    raise SystemExit(main())
