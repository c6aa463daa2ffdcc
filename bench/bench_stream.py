"""A simulated stream: per-clip latency, GPU memory over time, caption store size.

``--hours`` of video sampled at 0.5 fps (1 h = 1,800 frames = 112 clips of 16 frames) go
through the real loop: ``RecurrentCaptioner.step`` -> model-token embedding -> ``CaptionStore.add``
(SQLite on disk). Every clip records its latency, allocated and peak device memory after the
step, and the store's size on disk. ``--variant full`` runs the full-context baseline instead
(no selection: every token of the last 16 clips), usually for fewer clips.
"""
from __future__ import annotations

import os
import tempfile
import time

from common import (
    FPS,
    Emitter,
    entry_point,
    environment,
    frame_pool,
    load_bench_backend,
    make_clip,
    memory_mb,
    model_parser,
    parse_args,
    reset_peak,
    summary,
    write_json,
)

from rats_ros.models.base import FastConfig
from rats_ros.models.fast import decode as fast_decode
from rats_ros.recall.embedders import ModelEmbedder
from rats_ros.recall.store import CaptionStore
from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner


def store_bytes(path: str) -> int:
    """Size of the SQLite file and its WAL side files."""
    return sum(os.path.getsize(p) for p in (path, path + "-wal", path + "-shm")
               if os.path.exists(p))


def stream(args) -> dict:
    backend = load_bench_backend(args.size, args.device, args.dtype)
    backend.eos_ids = set()  # timing mode: fixed-length captions
    backend.use_fast(FastConfig(decode=not args.plain))
    backend.fast.clear()
    if backend.device.type == "cpu":  # smoke: exercise the fast path's eager step on CPU
        backend.fast.caption = fast_decode.FastDecoder(backend.model, backend.readout_layers)
    full = args.variant == "full"
    cfg = CaptionerConfig(max_new_tokens=args.tokens, selection="all" if full else "attention",
                          keep_ratio=1.0 if full else 1 / 16)
    captioner = RecurrentCaptioner(backend, cfg)
    embedder = ModelEmbedder(backend)
    clips = args.clips or int(round(args.hours * 3600 * FPS / args.frames))
    pool = frame_pool(4, args.side, args.frames)
    workdir = tempfile.mkdtemp(prefix="rats-bench-stream-")
    path = os.path.join(workdir, "captions.db")
    store = CaptionStore(path, stream_id="bench", synchronous="NORMAL")
    weights_mb = memory_mb(args.device)["allocated_mb"]
    rows, started = [], time.perf_counter()
    try:
        for i in range(clips):
            reset_peak(args.device)
            out = captioner.step(make_clip(pool[i % len(pool)], i))
            t0 = time.perf_counter()
            store.add(out, embedder.embed([out.text])[0], embedder.name)
            store_ms = 1e3 * (time.perf_counter() - t0)
            rows.append({"clip": i, "total_ms": 1e3 * out.processing_time, "store_ms": store_ms,
                         **{f"{k}_ms": 1e3 * v for k, v in out.timings.items()},
                         "prompt_tokens": out.memory_tokens + out.visual_tokens,
                         "store_bytes": store_bytes(path), **memory_mb(args.device)})
    finally:
        store.close()
    wall = time.perf_counter() - started
    steady = rows[min(len(rows) - 1, cfg.memory_clips):]  # after the memory has filled
    allocated = [r["allocated_mb"] for r in steady]
    peaks = [r["peak_mb"] for r in steady]
    record = {
        "bench": "stream", "size": args.size, "family": backend.model.config.model_type,
        "variant": "plain" if args.plain else args.variant,
        "clips": clips, "stream_hours": clips * args.frames / FPS / 3600,
        "caption_tokens": args.tokens, "wall_s": wall, "weights_mb": weights_mb,
        "clip_ms": summary([r["total_ms"] for r in rows]),
        "steady_clip_ms": summary([r["total_ms"] for r in steady]),
        "store_ms": summary([r["store_ms"] for r in rows]),
        "steady_allocated_mb_min_max": [min(allocated), max(allocated)],
        "steady_peak_mb_min_max": [min(peaks), max(peaks)],
        "peak_mb": max(r["peak_mb"] for r in rows),
        "store_bytes_final": rows[-1]["store_bytes"],
        "store_bytes_per_clip": rows[-1]["store_bytes"] / clips, **environment(args.device)}
    Emitter(args.out)(record)
    write_json(args.json, {"summary": record, "rows": rows})
    return record


def parse(argv=None):
    ap = model_parser(__doc__)
    ap.add_argument("--variant", choices=("ours", "full"), default="ours")
    ap.add_argument("--plain", action="store_true", help="the backend's plain decode loop")
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--clips", type=int, default=0, help="overrides --hours")
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=384)
    return parse_args(ap, argv, clips=4, tokens=4, side=64)


main = entry_point(parse, stream)


if __name__ == "__main__":
    raise SystemExit(main())
