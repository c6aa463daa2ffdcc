"""Kept-set agreement: the GPU paths against the fp32 plain path, on the same inputs.

For one model size (random weights) and several clips, each with a full memory of 16 clips in
front: the fp32 plain path (the read-out that equals an eager ``output_attentions`` reference
exactly on the CPU, test/test_readout.py) is the reference; ``variant`` is the path compared with
it on the same weights: ``fp32_fast`` (the fast path's static KV cache, CUDA-graph decode and
in-graph read-out, in fp32), ``bf16_plain`` (the weights cast to bf16, plain path: bf16 rounding
alone) and ``bf16_fast`` (what the node runs on a GPU). Each keeps the top 1/16;
``overlap`` = |kept_reference & kept_variant| / k. Read-out scores average over the
last prompt position and every generated token, so captions that diverge change the scores:
``prompt_only`` (one new token: the read-out of the prompt alone) isolates the arithmetic.

Flatness decides what overlap to expect: ``gap`` is the fp32 distance between the k-th and the
(k+1)-th score relative to the k-th; below bf16's relative rounding (2^-8 = 0.0039) a swap at the
boundary is arithmetic, not a different choice. ``near_ties`` counts fp32 scores within 2^-8 of
the k-th; ``deviation`` is how far the variant moved the top scores (median relative error).
``--size synthetic-world`` is the trained model (:mod:`rats_ros.world`) on clips of an unseen
world, where attention is not flat as with random weights: its kept set is a choice.
Usage: ``python bench/bench_overlap.py --size 0.5b --clips 8`` (``--smoke``: tiny, CPU).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Emitter,
    entry_point,
    environment,
    frame_pool,
    load_bench_backend,
    model_parser,
    parse_args,
    write_json,
)

from rats_ros.models.base import FastConfig
from rats_ros.stream.captioner import DEFAULT_PROMPT  # noqa: E402
from rats_ros.stream.selection import keep_count  # noqa: E402
from rats_ros.world import SYNTHETIC_WORLD, scene  # noqa: E402
from rats_ros.world.evaluate import EVAL_SEED_BASE  # noqa: E402

BF16_EPS = 2.0 ** -8


def kept(scores: torch.Tensor, k: int) -> set[int]:
    return set(torch.topk(scores.float(), k).indices.tolist())


def flatness(scores: torch.Tensor, k: int) -> dict:
    """Relative gap at the k-th fp32 score and the count of scores within bf16 rounding of it."""
    ordered = torch.sort(scores.float(), descending=True).values
    kth = float(ordered[k - 1])
    gap = (kth - float(ordered[k])) / max(abs(kth), 1e-30)
    near = int(((ordered - kth).abs() <= BF16_EPS * abs(kth)).sum()) - 1
    return {"gap": gap, "near_ties": near}


def deviation(ref: torch.Tensor, got: torch.Tensor, k: int) -> float:
    """Median relative error of ``got`` against ``ref`` over the reference's top ``2k`` tokens:
    a swap at the boundary is expected where this exceeds ``gap`` (the arithmetic, weights'
    rounding included, moves scores more than they are apart)."""
    top = torch.topk(ref.float(), min(2 * k, ref.numel())).indices
    return float(((got.float()[top] - ref.float()[top]).abs() / ref.float()[top].abs()
                  .clamp_min(1e-30)).median())


def inputs(backend, pool, memory_clips: int):
    """Visual tokens of each clip and a full memory (other clips' first k tokens) in fp32."""
    visuals = [backend.encode_clip(p).tokens.float() for p in pool]  # each (N, D)
    k = keep_count(visuals[0].shape[0], 1 / 16)
    memories = [torch.cat([visuals[(i + j + 1) % len(visuals)][:k]
                           for j in range(memory_clips)]) for i in range(len(visuals))]
    return visuals, memories, k


def scores_of(backend, visuals, memories, tokens: int):
    """:returns: per clip ``(scores (N,) float32 on the CPU, token ids)``."""
    rows = []
    for visual, memory in zip(visuals, memories, strict=True):
        out = backend.caption(memory, visual, DEFAULT_PROMPT, tokens, readout=True)
        rows.append((out.scores.float().cpu(), out.token_ids))
    return rows


def use_model(backend, model) -> None:
    """Point the backend at ``model`` (same architecture), with no fast decoder built yet."""
    backend.model = model
    backend.fast.clear()
    backend.language_model = model.model.language_model
    backend.embed_tokens = model.get_input_embeddings()


def variants(backend, cuda: bool):
    """The paths compared with the fp32 plain path, each set up on the backend in turn:
    fp32 fast (the fast path's own arithmetic) on a copy of the weights, since the fast path
    packs them in place; then the weights cast to bf16: bf16 plain (bf16 rounding alone) and
    bf16 fast (what the node runs on a GPU)."""
    original = backend.model
    if cuda:
        use_model(backend, copy.deepcopy(original))
        backend.use_fast(FastConfig(decode=True))
        yield "fp32_fast"
        use_model(backend, original)
        torch.cuda.empty_cache()
    original.to(torch.bfloat16)  # the same weights, rounded
    backend.dtype = torch.bfloat16
    backend.use_fast(FastConfig(decode=False))
    yield "bf16_plain"
    if cuda:
        backend.use_fast(FastConfig(decode=True))
        backend.fast.clear()
        yield "bf16_fast"


def bench(args) -> list[dict]:
    emit, env = Emitter(args.out), environment(args.device)
    backend = load_bench_backend(args.size, args.device, dtype="float32")
    backend.use_fast(FastConfig(decode=False))  # fp32 plain path: the reference
    if args.size == SYNTHETIC_WORLD:  # consecutive clips of a world it was not trained on
        world = scene.generate(EVAL_SEED_BASE + 7, args.clips)
        pool = [scene.clip_pixels(world, c) for c in range(args.clips)]
    else:
        pool = frame_pool(args.clips, args.side, args.frames)
    visuals, memories, k = inputs(backend, pool, args.memory_clips)
    lengths = {"prompt_only": 1, "caption": args.tokens}
    reference = {label: scores_of(backend, visuals, memories, n) for label, n in lengths.items()}
    records = []
    for variant in variants(backend, args.device.startswith("cuda")):
        for label, n in lengths.items():
            rows = zip(reference[label], scores_of(backend, visuals, memories, n), strict=True)
            for i, ((ref, ref_ids), (got, got_ids)) in enumerate(rows):
                same = sum(a == b for a, b in zip(ref_ids, got_ids, strict=False))
                records.append(emit({
                    "bench": "overlap", "size": args.size,
                    "family": backend.model.config.model_type, "variant": variant,
                    "readout": label, "clip": i, "k": k,
                    "visual_tokens": int(ref.numel()), "memory_tokens": int(memories[i].shape[0]),
                    "overlap": len(kept(ref, k) & kept(got, k)) / k, **flatness(ref, k),
                    "deviation": deviation(ref, got, k),
                    "token_agreement": same / max(len(ref_ids), 1), **env}))
    write_json(args.json, records)
    return records


def parse(argv=None):
    ap = model_parser(__doc__)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--tokens", type=int, default=40, help="caption length of 'caption' rows")
    ap.add_argument("--memory-clips", type=int, default=16)
    return parse_args(ap, argv, clips=2, frames=4, side=64, tokens=4, memory_clips=2)


main = entry_point(parse, bench)


if __name__ == "__main__":
    raise SystemExit(main())
