"""The ONNX engine against torch: per-clip time by phase and agreement, in the same run.

Each model is exported with ``rats-ros export-onnx`` (float32, traced on the CPU) and the same
clips are captioned through the real captioner twice, once per engine, with the recurrent memory
in front. Reported: export seconds and file sizes, per-clip encode / prefill / decode p50 (ms)
per engine and their ratio onnx/torch, and agreement: clips whose caption tokens and whose kept
indices are identical. CPU only here (ONNX Runtime's CPU provider; its CUDA build is not in
this project's environment).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import (
    Emitter,
    entry_point,
    environment,
    frame_pool,
    load_bench_backend,
    make_clip,
    summary,
)

from rats_ros.models import load_backend
from rats_ros.models.onnx.engine import OnnxEngine
from rats_ros.models.onnx.export import timed_export
from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner
from rats_ros.stream.clips import Clip, Frame
from rats_ros.world import SYNTHETIC_WORLD, scene
from rats_ros.world.evaluate import EVAL_SEED_BASE

PHASES = ("encode", "prefill", "decode")
MODELS = (SYNTHETIC_WORLD, "tiny-random", "tiny-random-qwen2_5_vl", "tiny-random-qwen3_vl")


def stream(name: str, count: int) -> list[Clip]:
    """The synthetic world's clips for its model; random 16-frame 96x128 clips otherwise."""
    if name == SYNTHETIC_WORLD:
        return list(scene.clips(scene.generate(EVAL_SEED_BASE + 11, count)))
    rng = np.random.default_rng(0)
    return [Clip([Frame((c * 16 + i) * 2_000_000_000,
                        rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)) for i in range(16)])
            for c in range(count)]


def caption_all(backend, clips, skip: int) -> tuple[list, dict]:
    """:returns: per-clip (tokens, kept) and per-phase ms summaries after ``skip`` clips."""
    captioner = RecurrentCaptioner(backend, CaptionerConfig(max_new_tokens=24))
    outputs, rows = [], []
    for index, clip in enumerate(clips):
        out = captioner.step(clip)
        outputs.append((out.token_ids, out.kept_indices))
        if index >= skip:
            rows.append({p: out.timings.get(p, 0.0) * 1e3 for p in PHASES}
                        | {"total": out.processing_time * 1e3})
    return outputs, {k: summary([r[k] for r in rows]) for k in (*PHASES, "total")}


def comparison(torch_run: tuple, onnx_run: tuple) -> dict:
    """:returns: onnx/torch p50 ratios per phase and the share of clips with the same tokens
    and the same kept indices, from two :func:`caption_all` results."""
    (torch_out, torch_ms), (onnx_out, onnx_ms) = torch_run, onnx_run
    pairs = list(zip(torch_out, onnx_out, strict=True))
    return {**{f"{k}_p50": onnx_ms[k]["p50"] / torch_ms[k]["p50"] for k in (*PHASES, "total")},
            "same_tokens": sum(a[0] == b[0] for a, b in pairs) / len(pairs),
            "same_kept": sum(a[1] == b[1] for a, b in pairs) / len(pairs)}


def real_size(args, emit) -> None:
    """A bench-size model (random weights at the real dimensions, float32 on the CPU): the torch
    path first, then the same backend with the export attached as its engine."""
    for size in args.sizes:
        backend = load_bench_backend(size, "cpu", "float32")
        clips = [make_clip(p, i) for i, p in enumerate(frame_pool(args.real_clips, 384,
                                                                  args.real_frames))]
        torch_run = caption_all(backend, clips, 1)
        with tempfile.TemporaryDirectory(prefix="rats-onnx-") as out:
            manifest, seconds = timed_export(backend, Path(out), args.real_frames, 384, 384)
            sizes = {p.name: round(p.stat().st_size / 2**20, 1) for p in Path(out).iterdir()}
            backend.engine = OnnxEngine(Path(out), backend)
            onnx_run = caption_all(backend, clips, 1)
        emit({"bench": "engine", "model": f"random-{size}", "engine": "onnx/torch",
              "frames": args.real_frames, "visual_tokens": manifest.visual_tokens,
              "export_s": round(seconds, 1), "files_mb": sizes,
              **comparison(torch_run, onnx_run), **environment("cpu")})


def run(args) -> None:
    emit = Emitter(args.out)
    real_size(args, emit)
    for name in args.models:
        clips = stream(name, args.clips)
        frames, height, width = clips[0].pixels().shape[:3]
        reference = load_backend(name)
        with tempfile.TemporaryDirectory(prefix="rats-onnx-") as out:
            manifest, seconds = timed_export(reference, Path(out), frames, height, width)
            sizes = {p.name: p.stat().st_size / 2**20 for p in Path(out).glob("*.onnx")}
            engine = load_backend(name, engine="onnx", engine_dir=out)
            runs = {e: caption_all(b, clips, args.skip)
                    for e, b in (("torch", reference), ("onnx", engine))}
        for engine_name, (_, phases) in runs.items():
            emit({"bench": "engine", "model": name, "engine": engine_name,
                  "clips": args.clips - args.skip, "visual_tokens": manifest.visual_tokens,
                  **{f"{k}_ms": v for k, v in phases.items()}, **environment("cpu")})
        emit({"bench": "engine", "model": name, "engine": "onnx/torch",
              "export_s": round(seconds, 1), "onnx_mb": {k: round(v, 2) for k, v in sizes.items()},
              **comparison(runs["torch"], runs["onnx"])})


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--sizes", nargs="*", default=[], help="bench sizes (e.g. 0.5b): random "
                    "weights at real dimensions, exported and compared too")
    ap.add_argument("--real-clips", type=int, default=3)
    ap.add_argument("--real-frames", type=int, default=2, help="frames per real-size clip")
    ap.add_argument("--clips", type=int, default=24, help="clips captioned per engine")
    ap.add_argument("--skip", type=int, default=16, help="first clips left out (memory filling)")
    ap.add_argument("--out", help="append JSON lines here")
    ap.add_argument("--smoke", action="store_true", help="tiny-random, a few clips (CI)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.models, args.clips, args.skip = ["tiny-random"], 4, 1
    return args


main = entry_point(parse, run)


if __name__ == "__main__":
    raise SystemExit(main())
