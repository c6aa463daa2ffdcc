"""Per-clip latency and memory: ours vs the stock transformers path vs full context.

One clip = 16 frames of 384 px (bench sizes), a caption of exactly ``--tokens`` tokens (EOS is
ignored in timing mode), attention read-out and top-k selection. Two memory states: ``empty``
(first clip of a stream) and ``full`` (steady state: 16 clips in the FIFO memory).

Variants (each one JSON line per memory state, medians over ``--repeats`` clips):

- ``ours``: the captioner with the fast path (static KV cache, in-step read-out, CUDA graph);
- ``fast_nograph``: the same decode step without the CUDA graph (what the graph buys);
- ``ours_torch_step``: ``ours`` with the decode step in torch ops instead of the fused Triton
  kernels (``rats_ros.models.fast.fused``: what the fused step buys); ``ours_torch_rope`` (Qwen
  families): ``ours`` with the vision RoPE in torch ops instead of the Triton kernel
  (``rats_ros.models.fast.vision_rope``); ``ours_stock_siglip`` (LLaVA-OV): ``ours`` with
  SigLIP's stock MLP and SDPA kernel order (``rats_ros.models.fast.siglip``);
- ``plain``: the backend's plain loop (SDPA + registered read-out attention, dynamic cache);
- ``stock``: stock transformers calls: HF video processor on the CPU, eager attention,
  ``generate(output_attentions=True)``, scores from the returned attention maps;
- ``full``: full context: no selection, every token of the last 16 clips fed to the LLM
  (memory up to 16 x 3,136 tokens), decoded with the fast path (the baseline's best case);
- ``ours_stock_vision`` / ``plain_stock_vision`` (Qwen families): as ``ours`` / ``plain`` with
  transformers' own vision attention (one attention per window or frame) and ``Conv3d`` patch
  embedding instead of the batched segment attention and the patch product
  (``rats_ros.models.fast.vision``); ``ours`` with one part undone: ``ours_conv3d`` (the
  ``Conv3d``), ``ours_unpadded`` (the MLP's own width), ``ours_unfused`` (transformers'
  attention module and RMSNorm, with our segment attention), ``ours_grouped`` (the grouped SDPA
  instead of the varlen flash kernel on CUDA).
"""
from __future__ import annotations

import time

import models
import torch
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
    sync,
    write_json,
)

from rats_ros.errors import ModelError
from rats_ros.models import readout as ro
from rats_ros.models.base import FastConfig
from rats_ros.models.fast import decode as fast_decode
from rats_ros.models.fast import vision as fast_vision
from rats_ros.models.preprocess import resize_normalize, upload
from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner
from rats_ros.stream.selection import keep_count

VARIANTS = ("ours", "fast_nograph", "plain", "stock", "full", "ours_cudnn", "full_cudnn",
            "ours_stock_vision", "plain_stock_vision", "ours_conv3d", "ours_unpadded",
            "ours_unfused", "ours_grouped", "ours_torch_step", "ours_torch_rope",
            "ours_stock_siglip")
PHASES = ("encode", "prefill", "decode", "select")
VISION_UNDO = {  # fast_vision.PARTS each Qwen vision variant undoes (None: all)
    "_stock_vision": None, "_conv3d": ("projection",), "_unpadded": ("mlp",),
    "_unfused": ("attention_module", "norm"), "_grouped": ()}


def set_decoder(backend, variant: str) -> None:
    """Point the backend at the decode path (and vision parts) of ``variant``."""
    varlen = not variant.endswith(("_stock_vision", "_grouped"))
    config = FastConfig(decode=variant != "plain", varlen_vision=varlen,
                        vision_rope=variant != "ours_torch_rope",
                        siglip=variant != "ours_stock_siglip")
    backend.use_fast(config)  # a Qwen tower: ours again, with its switches
    backend.fast.clear()  # drop the last variant's static buffers before measuring
    if backend.model.config.model_type in ("qwen2_5_vl", "qwen3_vl"):
        for suffix, undo in VISION_UNDO.items():  # one part of ours undone
            if variant.endswith(suffix):
                fast_vision.stock(backend.model, fast_vision.PARTS if undo is None else undo)
                variant = variant.removesuffix(suffix)
    if variant == "plain":
        return
    graph = variant != "fast_nograph" and backend.device.type == "cuda"
    backend.fast.caption = fast_decode.FastDecoder(
        backend.model, backend.readout_layers, use_cuda_graph=graph,
        prefill_attention="cudnn" if variant.endswith("_cudnn") else "flash",
        fused_step=False if variant == "ours_torch_step" else None)


def captioner_for(backend, variant: str, state: str, tokens: int, visual):
    """A captioner whose memory is empty or already full (steady state)."""
    full_context = variant.startswith("full")
    cfg = CaptionerConfig(max_new_tokens=tokens, selection="all" if full_context else "attention",
                          keep_ratio=1.0 if full_context else 1 / 16)
    cap = RecurrentCaptioner(backend, cfg)
    if state == "full":
        k = visual.shape[0] if full_context else keep_count(visual.shape[0], cfg.keep_ratio)
        for i in range(cfg.memory_clips):
            cap.memory.append(visual.roll(i, 0)[:k].clone())  # (k, D) projector outputs
    return cap


FIRST_BUILD_MS: list[float] = []  # the process's first decoder build: tiles timed, Triton cold


def run_captioner(backend, variant, state, pool, tokens, warmup, repeats):
    t0 = time.perf_counter()
    set_decoder(backend, variant)  # the fused step times its tiles here (fast/tiles.py)
    build_ms = 1e3 * (time.perf_counter() - t0)
    FIRST_BUILD_MS.append(build_ms)
    device = backend.device
    visual = backend.encode_clip(pool[0]).tokens
    cap = captioner_for(backend, variant, state, tokens, visual)
    rows = []
    for i in range(warmup + repeats):
        if state == "empty":
            cap.memory.clear()
        clip = make_clip(pool[i % len(pool)], i)
        reset_peak(device)
        out = cap.step(clip)
        if i >= warmup:
            rows.append({**{p: 1e3 * out.timings.get(p, 0.0) for p in PHASES},
                         "total": 1e3 * out.processing_time, "tokens": len(out.token_ids),
                         "prompt_tokens": out.memory_tokens + out.visual_tokens,
                         "decoder_build_ms": build_ms,
                         "first_decoder_build_ms": FIRST_BUILD_MS[0], **memory_mb(device)})
    return rows


def stock_processor():
    """The HF video processor (needs torchvision), or None where it is not installed."""
    try:
        from transformers import LlavaOnevisionVideoProcessor

        return LlavaOnevisionVideoProcessor()
    except ImportError:
        return None


def stock_clip(backend, processor, pixels, memory, tokens, k):
    """One clip through stock transformers calls; :returns: per-phase ms."""
    model, device = backend.model, backend.device
    t0 = sync(device)
    if processor is not None:
        pv = processor(videos=[pixels], return_tensors="pt")["pixel_values_videos"]
        pv = pv.to(device, backend.dtype)
    else:  # no torchvision (CPU smoke): the backend's torch preprocessing
        pv = resize_normalize(upload(pixels, device), backend.image_size, backend.image_size,
                              backend.norm, backend.dtype)[None]
    visual = model.model.get_video_features(pixel_values_videos=pv).pooler_output[0, :-1]
    t1 = sync(device)
    inputs = backend.build_inputs(memory, visual, "Describe what's happening in this video.")
    embeds, start = inputs.embeds, inputs.key_start
    out = model.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2],
                         dtype=torch.long, device=device), max_new_tokens=tokens,
                         min_new_tokens=tokens, do_sample=False, output_attentions=True,
                         return_dict_in_generate=True, pad_token_id=0)
    t2 = sync(device)
    n, layers = visual.shape[0], backend.readout_layers
    sums = torch.zeros(n, device=device)
    for step in out.attentions:  # prefill + tokens-1 decode steps, each (1, H, q, kv) per layer
        for layer in layers:
            sums += step[layer][0, :, -1, start:start + n].float().mean(0)
    scores = sums / (len(out.attentions) * len(layers))
    kept = torch.topk(scores, k).indices.sort().values
    kept.tolist()
    t3 = sync(device)
    return {"encode": 1e3 * (t1 - t0), "prefill+decode": 1e3 * (t2 - t1),
            "select": 1e3 * (t3 - t2), "total": 1e3 * (t3 - t0),
            "tokens": out.sequences.shape[1], "prompt_tokens": embeds.shape[1]}


def stock_prefill_ms(backend, memory, visual) -> float:
    """Stock generate of one token: the prefill's share of the stock path."""
    embeds = backend.build_inputs(memory, visual, "Describe what's happening in this video.").embeds
    t0 = sync(backend.device)
    backend.model.generate(inputs_embeds=embeds, max_new_tokens=1, do_sample=False,
                           output_attentions=True, return_dict_in_generate=True, pad_token_id=0)
    return 1e3 * (sync(backend.device) - t0)


def run_stock(backend, state, pool, tokens, warmup, repeats):
    processor, device = stock_processor(), backend.device
    model = backend.model
    model.set_attn_implementation({"text_config": "eager"})  # what output_attentions needs
    try:
        visual = backend.encode_clip(pool[0]).tokens
        k = keep_count(visual.shape[0], 1 / 16)
        memory = (torch.cat([visual.roll(i, 0)[:k] for i in range(16)]) if state == "full"
                  else visual[:0])
        rows = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                reset_peak(device)
                row = stock_clip(backend, processor, pool[i % len(pool)], memory, tokens, k)
                if i >= warmup:
                    rows.append({**row, **memory_mb(device)})
            prefill = stock_prefill_ms(backend, memory, visual)
        for row in rows:
            row["prefill"] = prefill
            row["decode"] = row["prefill+decode"] - prefill
        return rows, "hf-video-processor" if processor is not None else "torch"
    finally:
        ro.install(model)


def kernel_profile(fn, label: str) -> dict:
    """CUDA kernels launched by one call of ``fn``: count, summed device time, the top few."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    total = sum(e.device_time for e in kernels)  # us
    by_name: dict = {}
    for e in kernels:
        by_name[e.name] = by_name.get(e.name, 0.0) + e.device_time
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:10]
    return {"phase": label, "kernels": len(kernels), "device_ms": total / 1e3,
            "top": [[name[:80], round(us / 1e3, 3)] for name, us in top]}


def profile_phases(backend, pool) -> list[dict]:
    """Kernel counts of a clip encode and of one eager decode step (what the graph replays),
    fused and in torch ops."""
    out = [kernel_profile(lambda: backend.encode_clip(pool[0]), "encode")]
    dec = fast_decode.FastDecoder(backend.model, backend.readout_layers, use_cuda_graph=False)
    visual = backend.encode_clip(pool[0]).tokens
    k = keep_count(visual.shape[0], 1 / 16)
    memory = torch.cat([visual.roll(i, 0)[:k] for i in range(16)])  # steady state (16k, D)
    inputs = backend.build_inputs(memory, visual, "Describe what's happening in this video.")
    embeds, start = inputs.embeds, inputs.key_start
    dec.run(embeds[0], 2, (), (start, start + visual.shape[0]))
    st = dec._state
    out.append(kernel_profile(lambda: dec._decode_step(st, st.capacity), "decode_step"))
    if dec.fused_step:  # the same step in torch ops (what the fused kernels replace)
        dec.fused_step = False
        out.append(kernel_profile(lambda: dec._decode_step(st, st.capacity), "decode_step_torch"))
        dec.fused_step = True
    out.append(kernel_profile(lambda: dec.run(embeds[0], 1, (), (start, start + visual.shape[0])),
                              "prefill"))
    return out


def aggregate(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))]
    med = {k: summary([r[k] for r in rows])["p50"] for k in keys}
    med["peak_mb"] = max(r.get("peak_mb", 0.0) for r in rows)
    med["clips_per_s"] = 1e3 / med["total"] if med["total"] else 0.0
    if med.get("decode"):
        med["decode_tokens_per_s"] = 1e3 * (med["tokens"] - 1) / med["decode"]
    return med


def bench(args) -> list[dict]:
    emit = Emitter(args.out)
    backend = load_bench_backend(args.size, args.device, args.dtype)
    backend.eos_ids = set()  # timing mode: every caption is exactly --tokens long
    pool = frame_pool(3, args.side, args.frames, width=args.width)
    env = environment(args.device)
    env["weights_mb"] = memory_mb(args.device)["allocated_mb"]
    ceilings = None
    if backend.device.type == "cuda":
        ceilings = emit({"bench": "ceilings", **models.measure_ceilings(args.device), **env})
    records = []
    if backend.device.type == "cuda" and args.profile:
        with torch.inference_mode():
            for prof in profile_phases(backend, pool):
                emit({"bench": "profile", "size": args.size, **prof, **env})
    # one throw-away round so clocks, allocator and kernel choices settle before timing
    run_captioner(backend, "ours", args.states[0], pool, args.tokens, args.warmup, 0)
    for state in args.states:
        for variant in args.variants:
            started = time.perf_counter()
            record = {"bench": "clip", "size": args.size, "variant": variant, "memory": state,
                      "family": backend.model.config.model_type, "width": args.width or args.side,
                      "frames": args.frames, "side": args.side, "caption_tokens": args.tokens,
                      **env}
            try:
                if variant == "stock":
                    rows, pre = run_stock(backend, state, pool, args.tokens, args.warmup,
                                          args.repeats)
                    record["stock_preprocess"] = pre
                else:
                    rows = run_captioner(backend, variant, state, pool, args.tokens,
                                         args.warmup, args.repeats)
                record.update(status="ok", **{f"{k}_ms" if k in (*PHASES, "total") else k: v
                                              for k, v in aggregate(rows).items()})
                record["rows"] = rows
                if ceilings is not None and backend.model.config.model_type == "llava_onevision":
                    floor = models.clip_floor(backend.model.config, args.frames,
                                              int(record["prompt_tokens"]) + 20, args.tokens,
                                              ceilings["matmul_flops"],
                                              ceilings["copy_bytes_per_s"])
                    record["floor_ms"] = {k: v["floor_ms"] for k, v in floor.items()
                                          if isinstance(v, dict)}
                    record["floor_ms"]["total"] = floor["total_floor_ms"]
            except (torch.OutOfMemoryError, ModelError) as exc:
                record.update(status="oom" if "out of memory" in str(exc).lower() else "error",
                              error=str(exc)[:300])
            finally:
                if backend.device.type == "cuda":
                    torch.cuda.empty_cache()
            record["wall_s"] = time.perf_counter() - started
            emit({k: v for k, v in record.items() if k != "rows"})
            records.append(record)
    write_json(args.json, records)
    return records


def parse(argv=None):
    ap = model_parser(__doc__)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--states", nargs="+", default=["empty", "full"], choices=("empty", "full"))
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=384, help="frame height (and width), px")
    ap.add_argument("--width", type=int, default=None, help="frame width when not --side")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="CUDA kernel counts per phase")
    return parse_args(ap, argv, tokens=4, side=64, warmup=1, repeats=1)


main = entry_point(parse, bench)


if __name__ == "__main__":
    raise SystemExit(main())
