"""synthetic-world: per-clip time by phase, recurrent memory on against off, in the same run.

Streams an unseen synthetic world (:mod:`rats_ros.world`) through the real captioner with the
committed ``synthetic-world`` model and reports per-clip encode / prefill / decode / select
times (ms, p50 over the clips after the memory is full) with recurrence on and off, and their
ratio: what the memory of 16 clips costs this model. CPU figures unless ``--device cuda``.
"""
from __future__ import annotations

import argparse

from common import Emitter, entry_point, environment, summary

from rats_ros.models import load_backend
from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner
from rats_ros.world import SYNTHETIC_WORLD, scene
from rats_ros.world.evaluate import EVAL_SEED_BASE

PHASES = ("encode", "prefill", "decode", "select")


def measure(backend, recurrence: bool, clips: int, skip: int) -> dict:
    """Caption ``clips`` clips of one world; :returns: per-phase and total ms summaries."""
    world = scene.generate(EVAL_SEED_BASE + 11, clips)
    captioner = RecurrentCaptioner(backend, CaptionerConfig(recurrence=recurrence))
    rows = []
    for index, clip in enumerate(scene.clips(world)):
        out = captioner.step(clip)
        if index >= skip:
            rows.append({**{p: out.timings.get(p, 0.0) * 1e3 for p in PHASES},
                         "total": out.processing_time * 1e3, "memory": out.memory_tokens,
                         "words": len(out.text.split())})
    return {key: summary([r[key] for r in rows]) for key in (*PHASES, "total", "memory", "words")}


def run(args) -> None:
    emit = Emitter(args.out)
    backend = load_backend(SYNTHETIC_WORLD, args.device, args.dtype)
    weights_mb = sum(p.numel() * p.element_size() for p in backend.model.parameters()) / 2**20
    results = {flag: measure(backend, flag, args.clips, args.skip) for flag in (True, False)}
    for flag, result in results.items():
        emit({"bench": "world", "recurrence": flag, "clips": args.clips - args.skip,
              "weights_mb": weights_mb, **{f"{k}_ms": v for k, v in result.items()
                                           if k in (*PHASES, "total")},
              "memory_tokens": result["memory"]["p50"], "caption_words": result["words"]["p50"],
              **environment(args.device)})
    on, off = results[True]["total"]["p50"], results[False]["total"]["p50"]
    emit({"bench": "world", "recurrence": "on/off", "total_p50": on / off,
          "prefill_p50": results[True]["prefill"]["p50"] / results[False]["prefill"]["p50"]})


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=40, help="clips captioned per setting")
    ap.add_argument("--skip", type=int, default=16, help="first clips left out (memory filling)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", help="append JSON lines here")
    ap.add_argument("--smoke", action="store_true", help="a few clips (CI)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.clips, args.skip = 6, 2
    return args


main = entry_point(parse, run)


if __name__ == "__main__":
    raise SystemExit(main())
