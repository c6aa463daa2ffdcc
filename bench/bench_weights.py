"""Weight-only int8 / int4 against native bf16 on the fast path: speed, memory and agreement.

For each model size, the same random weights in three formats (native, then deep copies
quantized to int8 and int4), on the same clips with a full memory of 16 clips:

- per clip: prefill and decode time of exactly ``--tokens`` tokens (EOS ignored), decode
  tokens/s, bytes of the LLM projections, peak GPU memory;
- agreement with native: kept-set overlap (top-k of the read-out) and caption token agreement
  per clip, and over a stream of ``--stream-clips`` clips through the real recurrent captioner
  (memory fed back, so differences compound);
- the same agreement for the trained ``synthetic-world`` model (``--world``), where the
  distributions are not the flat ones of random weights;
- ``--kernels``: one projection of 7B size (gate/up 3584 -> 2 x 18944, down 18944 -> 3584) per
  format at 1 row (a decode step) and at a prefill's rows, through the format's kernel and
  through the dense product on the dequantized matrix (what ``quant`` picks above
  ``KERNEL_ROWS`` rows on CUDA).
"""
from __future__ import annotations

import copy
import time

import torch
from bench_overlap import inputs, kept, use_model
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
    reset_peak,
    summary,
)

from rats_ros.models import load_backend
from rats_ros.models.base import FastConfig
from rats_ros.models.fast import quant
from rats_ros.models.fast.decode import FastDecoder
from rats_ros.stream.captioner import DEFAULT_PROMPT, CaptionerConfig, RecurrentCaptioner

FORMATS = ("native", "int8", "int4")


def set_weights(backend, original, fmt: str):
    """Point ``backend`` at ``original`` (native) or a quantized deep copy of it."""
    model = original if fmt == "native" else copy.deepcopy(original)
    use_model(backend, model)
    backend.weights = fmt
    backend.use_fast(FastConfig(decode=True))
    backend.fast.clear()
    backend.fast.caption = FastDecoder(model, backend.readout_layers, weights=fmt)
    return model


def timed(backend, visuals, memories, tokens: int, repeats: int) -> dict:
    decoder, eos = backend.fast.caption, sorted(backend.eos_ids)
    rows = []
    for _ in range(repeats):
        for visual, memory in zip(visuals, memories, strict=True):
            inputs = backend.build_inputs(memory, visual, DEFAULT_PROMPT)
            out = decoder.run(inputs.embeds[0], tokens, eos, inputs.span, ignore_eos=True)
            rows.append((out.prefill_ns / 1e6, out.decode_ns / 1e6))
    prefill, decode = summary([r[0] for r in rows]), summary([r[1] for r in rows])
    return {"prefill_ms": prefill, "decode_ms": decode,
            "decode_tok_s": (tokens - 1) / (decode["p50"] / 1e3)}


def captions(backend, visuals, memories, tokens: int) -> list:
    return [backend.caption(m, v, DEFAULT_PROMPT, tokens, readout=True)
            for v, m in zip(visuals, memories, strict=True)]


def stream(backend, pool, clips: int) -> list:
    captioner = RecurrentCaptioner(backend, CaptionerConfig(max_new_tokens=40))
    return [captioner.step(make_clip(pool[i % len(pool)], i)) for i in range(clips)]


def agreement(reference: list, outputs: list, k: int | None = None) -> dict:
    # token agreement: same token at the same position, over the reference caption's length
    tokens = [sum(a == b for a, b in zip(r.token_ids, o.token_ids, strict=False))
              / max(len(r.token_ids), 1) for r, o in zip(reference, outputs, strict=True)]
    if k is not None:
        overlap = [len(kept(r.scores, k) & kept(o.scores, k)) / k
                   for r, o in zip(reference, outputs, strict=True)]
    else:
        overlap = [len(set(r.kept_indices) & set(o.kept_indices)) / max(len(r.kept_indices), 1)
                   for r, o in zip(reference, outputs, strict=True)]
    return {"kept_overlap": sum(overlap) / len(overlap), "token_agreement": sum(tokens) /
            len(tokens), "same_captions": sum(r.token_ids == o.token_ids for r, o in
                                              zip(reference, outputs, strict=True))}


def bench_size(args, size: str, emit, env) -> None:
    backend = load_bench_backend(size, args.device, args.dtype)
    qwen = size.startswith("qwen")
    pool = frame_pool(args.clips, 480 if qwen else 384, args.frames, width=640 if qwen else None)
    visuals, memories, k = inputs(backend, pool, 16)
    visuals = [v.to(backend.dtype) for v in visuals]
    memories = [m.to(backend.dtype) for m in memories]
    original, reference = backend.model, {}
    for fmt in ("native", *args.formats):
        reset_peak(args.device)
        started = time.perf_counter()
        model = set_weights(backend, original, fmt)
        quantize_s = time.perf_counter() - started
        record = {"bench": "weights", "size": size, "weights": fmt, "k": k,
                  "visual_tokens": int(visuals[0].shape[0]),
                  "memory_tokens": int(memories[0].shape[0]), "quantize_s": quantize_s,
                  "projection_mb": sum(p.nbytes for p in backend.fast.caption.packed) / 2**20,
                  **timed(backend, visuals, memories, args.tokens, args.repeats)}
        emit({**record, "part": "speed", **memory_mb(args.device), **env})  # kept if cut short
        per_clip = captions(backend, visuals, memories, args.tokens)
        streamed = stream(backend, pool, args.stream_clips)
        record.update(memory_mb(args.device))
        if fmt == "native":
            reference = {"clips": per_clip, "stream": streamed}
        else:
            record["clips_agreement"] = agreement(reference["clips"], per_clip, k)
            record["stream_agreement"] = agreement(reference["stream"], streamed)
            record["stream_clips"] = args.stream_clips
            kernels = {type(m).__name__ + ":" + getattr(m, "kernel", "tinygemm")
                       for layer in backend.fast.caption.packed for m in (layer.qkv, layer.o)}
            record["kernels"] = sorted(kernels)
        emit({**record, **env})
        if fmt != "native":
            del model
            torch.cuda.empty_cache()


def bench_world(args, emit, env) -> None:
    """The trained synthetic-world model: agreement of int8 / int4 with native over a world."""
    from rats_ros.world import SYNTHETIC_WORLD, scene
    from rats_ros.world.evaluate import EVAL_SEED_BASE

    clips = list(scene.clips(scene.generate(EVAL_SEED_BASE + 11, args.world_clips)))
    runs = {}
    for fmt in FORMATS:
        backend = load_backend(SYNTHETIC_WORLD, args.device, args.dtype, weights=fmt)
        backend.use_fast(FastConfig(decode=True))
        captioner = RecurrentCaptioner(backend, CaptionerConfig())
        runs[fmt] = [captioner.step(clip) for clip in clips]
        if fmt != "native":
            emit({"bench": "weights", "size": SYNTHETIC_WORLD, "weights": fmt,
                  "stream_clips": len(clips),
                  "stream_agreement": agreement(runs["native"], runs[fmt]), **env})


def cuda_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` on CUDA (events; one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def bench_kernels(args, emit, env) -> None:
    """One 7B-size projection per format, 1 row and ``--prefill-rows`` rows, kernel vs dense."""
    for name, (out, inner) in {"gate_up": (2 * 18944, 3584), "down": (3584, 18944)}.items():
        weight = torch.randn(out, inner, device=args.device, dtype=torch.bfloat16) * 0.02
        for fmt in FORMATS:
            matrix = quant.matrix(weight, None, fmt)
            for rows in (1, args.prefill_rows):
                x = torch.randn(rows, inner, device=args.device, dtype=torch.bfloat16)
                record = {"bench": "weights_kernel", "matrix": name, "shape": [out, inner],
                          "weights": fmt, "rows": rows, "nbytes": matrix.nbytes}
                if fmt == "native":
                    record["dense_ms"] = cuda_ms(lambda m=matrix, x=x: m(x), 20)
                else:
                    reps = 20 if rows == 1 else 3  # the kernels are slow on many rows
                    record["kernel_ms"] = cuda_ms(lambda m=matrix, x=x: m.kernel_product(x), reps)
                    record["dense_ms"] = cuda_ms(
                        lambda m=matrix, x=x: torch.nn.functional.linear(
                            x, m.dequantized(x.dtype)), 20)
                emit({**record, **env})
            del matrix
        del weight
        torch.cuda.empty_cache()


def run(args) -> None:
    emit, env = Emitter(args.out), environment(args.device)
    if args.kernels:
        bench_kernels(args, emit, env)
    for size in args.sizes:
        bench_size(args, size, emit, env)
    if args.world_clips:
        bench_world(args, emit, env)


def parse(argv=None):
    ap = model_parser(__doc__)
    ap.add_argument("--sizes", nargs="*", default=["7b", "qwen2.5-vl-7b"])
    ap.add_argument("--clips", type=int, default=4, help="distinct clips (per-clip figures)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stream-clips", type=int, default=112, help="1 h at 0.5 fps, 16 frames")
    ap.add_argument("--world-clips", type=int, default=30)
    ap.add_argument("--formats", nargs="+", default=["int8", "int4"], choices=FORMATS[1:],
                    help="formats compared with native")
    ap.add_argument("--kernels", action="store_true", help="per-projection kernel times (CUDA)")
    ap.add_argument("--prefill-rows", type=int, default=3300, help="rows of --kernels' prefill")
    return parse_args(ap, argv, sizes=["tiny"], clips=2, repeats=1, stream_clips=3,
                      world_clips=3, tokens=6)


main = entry_point(parse, run)


if __name__ == "__main__":
    raise SystemExit(main())
