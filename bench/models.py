"""LLaVA-OneVision at real 0.5B / 7B size with random weights, and per-clip FLOP / byte floors.

Compute and memory traffic do not depend on weight values, so the benchmarks build the real
transformers model class from a config and never need a checkpoint. The configs follow the
published llava-onevision-qwen2-{0.5b,7b}-ov-hf checkpoints (Qwen2-0.5B / Qwen2-7B text models,
SigLIP-so400m-patch14-384 vision tower). The vision tower has 26 layers, not SigLIP's 27: the
HF LLaVA-OneVision conversion drops the last layer because features are taken at the penultimate
layer (``LlavaOnevisionConfig()``'s default vision config has ``num_hidden_layers=26`` and
``vision_feature_layer=-1``), so 26 is what the model computes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

TEXT_SIZES = {
    # Qwen2-0.5B: embeddings tied to lm_head, as in the published checkpoint.
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                 tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, intermediate_size=18944, vocab_size=152064,
               tie_word_embeddings=False),
}
SIGLIP_SO400M = dict(hidden_size=1152, num_hidden_layers=26, num_attention_heads=16,
                     intermediate_size=4304, patch_size=14, image_size=384, vision_use_head=False)
IMAGE_TOKEN, VIDEO_TOKEN = 151646, 151647  # LLaVA-OneVision's ids (inside both vocabularies)
FRAME_TOKENS = 196  # 27x27 patches, 2x2 bilinear pooled to 14x14


def build_config(size: str, eos_token_id: int = 151645, image_token_id: int = IMAGE_TOKEN,
                 video_token_id: int = VIDEO_TOKEN):
    """:returns: a ``LlavaOnevisionConfig`` of the named size (``"0.5b"`` or ``"7b"``); the
    special ids follow the tokenizer the backend will use."""
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    text = Qwen2Config(**TEXT_SIZES[size], rms_norm_eps=1e-6, max_position_embeddings=32768,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                       eos_token_id=eos_token_id)
    return LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**SIGLIP_SO400M), text_config=text,
        image_token_index=image_token_id, video_token_index=video_token_id,
        vision_feature_select_strategy="full", vision_feature_layer=-1,
        tie_word_embeddings=TEXT_SIZES[size]["tie_word_embeddings"],
    )


# Qwen2.5-VL-{3B,7B}-Instruct's published config.json (text part; the vision tower is shared).
QWEN25_VL_SIZES = {
    "qwen2.5-vl-3b": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16,
                          num_key_value_heads=2, intermediate_size=11008, vocab_size=151936,
                          tie_word_embeddings=True),
    "qwen2.5-vl-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                          num_key_value_heads=4, intermediate_size=18944, vocab_size=152064,
                          tie_word_embeddings=False),
}
QWEN25_VL_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                        patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                        window_size=112, fullatt_block_indexes=[7, 15, 23, 31])
QWEN25_VL_PREPROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
                          "temporal_patch_size": 2, "merge_size": 2,
                          "image_mean": [0.48145466, 0.4578275, 0.40821073],
                          "image_std": [0.26862954, 0.26130258, 0.27577711]}


def build_qwen_config(size: str, eos_token_id: int, token_ids: dict):
    """:returns: a ``Qwen2_5_VLConfig`` of the named size; ``token_ids`` are the tokenizer's
    ``image_token_id``, ``video_token_id``, ``vision_start_token_id``, ``vision_end_token_id``."""
    from transformers import Qwen2_5_VLConfig

    text = {**QWEN25_VL_SIZES[size], "rms_norm_eps": 1e-6, "max_position_embeddings": 128000,
            "eos_token_id": eos_token_id, "rope_parameters": {
                "rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}}
    vision = {**QWEN25_VL_VISION, "out_hidden_size": text["hidden_size"]}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                            tie_word_embeddings=text["tie_word_embeddings"], **token_ids)


# Qwen3-VL-{2B,4B,8B}-Instruct (nested ``text_config``, rope_theta 5e6, interleaved M-RoPE
# [24, 20, 20]). 8B: hidden 4096, 36 layers, 32/8 heads, intermediate 12288, untied, and a 27-layer
# 1152-wide vision tower with DeepStack at [8, 16, 24] (copies of the 8B config in public
# repositories: an MLX-VLM port's text-config test, a Qwen3-VL write-up quoting config.json).
# 2B / 4B: the Qwen3-1.7B / Qwen3-4B text shapes (public copies of those configs: 2048 x 28,
# 6144; 2560 x 36, 9728; tied) and the 24-layer 1024-wide tower with DeepStack at [5, 11, 17]
# (public copies of the 2B/4B vision config).
QWEN3_VL_SIZES = {
    "qwen3-vl-2b": dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16,
                        num_key_value_heads=8, head_dim=128, intermediate_size=6144,
                        vocab_size=151936, tie_word_embeddings=True),
    "qwen3-vl-4b": dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32,
                        num_key_value_heads=8, head_dim=128, intermediate_size=9728,
                        vocab_size=151936, tie_word_embeddings=True),
    "qwen3-vl-8b": dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32,
                        num_key_value_heads=8, head_dim=128, intermediate_size=12288,
                        vocab_size=151936, tie_word_embeddings=False),
}
QWEN3_VL_VISION = {
    "small": dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                  deepstack_visual_indexes=[5, 11, 17]),
    "large": dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
                  deepstack_visual_indexes=[8, 16, 24]),
}
QWEN3_VL_PREPROCESSOR = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
                         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                         "size": {"longest_edge": 25165824, "shortest_edge": 4096}}


def build_qwen3_config(size: str, eos_token_id: int, token_ids: dict):
    """:returns: a ``Qwen3VLConfig`` of the named size (see :func:`build_qwen_config`)."""
    from transformers import Qwen3VLConfig

    text = {**QWEN3_VL_SIZES[size], "rms_norm_eps": 1e-6, "max_position_embeddings": 262144,
            "eos_token_id": eos_token_id, "rope_parameters": {
                "rope_type": "default", "rope_theta": 5000000.0, "mrope_interleaved": True,
                "mrope_section": [24, 20, 20]}}
    vision = {**QWEN3_VL_VISION["large" if size == "qwen3-vl-8b" else "small"],
              "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
              "num_position_embeddings": 2304, "hidden_act": "gelu_pytorch_tanh",
              "out_hidden_size": text["hidden_size"]}
    return Qwen3VLConfig(text_config=text, vision_config=vision,
                         tie_word_embeddings=text["tie_word_embeddings"], **token_ids)


def build_model(config, device: str = "cuda", dtype=torch.bfloat16, attn: str = "sdpa"):
    """Random-weight model of ``config``'s family, initialised directly on ``device``.

    :param config: a ``LlavaOnevisionConfig`` (:func:`build_config`), ``Qwen2_5_VLConfig``
        (:func:`build_qwen_config`) or ``Qwen3VLConfig`` (:func:`build_qwen3_config`).
    :param attn: attention implementation (``"sdpa"``, ``"eager"``).
    :returns: the model in eval mode.
    """
    from transformers import (
        LlavaOnevisionForConditionalGeneration,
        Qwen2_5_VLForConditionalGeneration,
        Qwen3VLForConditionalGeneration,
    )

    model_class = {"llava_onevision": LlavaOnevisionForConditionalGeneration,
                   "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
                   "qwen3_vl": Qwen3VLForConditionalGeneration}[config.model_type]
    with torch.device(device):
        model = model_class._from_config(config, dtype=dtype, attn_implementation=attn)
    return model.eval()


def write_preprocessor_config(directory: Path) -> None:
    """Write SigLIP's preprocessor config (384 px, mean = std = 0.5) into ``directory``."""
    pre = {"size": {"height": 384, "width": 384}, "image_mean": [0.5] * 3,
           "image_std": [0.5] * 3, "rescale_factor": 1 / 255}
    (Path(directory) / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))


# ----------------------------------------------------------- floors (METHOD.md "two numbers")
@dataclass
class Counts:
    """Parameter counts of one model (elements, not bytes)."""

    vision: int
    projector: int
    llm_layers: int  # every decoder layer's weights (read once per decode step)
    embed: int
    lm_head: int  # 0 extra when tied, but still read per step: counted in `head_read`
    head_read: int


def counts(config) -> Counts:
    """:returns: parameter counts from a ``LlavaOnevisionConfig`` (no model needed)."""
    v, t = config.vision_config, config.text_config
    vh, vi = v.hidden_size, v.intermediate_size
    vision = v.num_hidden_layers * (4 * vh * vh + 2 * vh * vi)
    h, i, kv = t.hidden_size, t.intermediate_size, t.num_key_value_heads
    hd = h // t.num_attention_heads
    per_layer = 2 * h * h + 2 * h * kv * hd + 3 * h * i
    embed = t.vocab_size * h
    tied = bool(getattr(t, "tie_word_embeddings", False))
    return Counts(vision, vh * h + h * h, t.num_hidden_layers * per_layer, embed,
                  0 if tied else embed, embed)


def clip_floor(config, frames: int, prefill_tokens: int, new_tokens: int,
               matmul_flops: float, bandwidth: float, weight_bytes: int = 2) -> dict:
    """FLOP and byte floors of one clip (vision encode, prefill, decode), and their times.

    FLOPs count matrix products only (2 per multiply-add); attention is causal in prefill.
    Bytes count weights read once per phase, and per decode step all LLM weights plus the
    KV cache. The floor of a phase is ``max(flops / matmul_flops, bytes / bandwidth)``.

    :param matmul_flops: measured dense bf16 rate (FLOP/s).
    :param bandwidth: measured device memory bandwidth (bytes/s, read + write counted).
    :returns: dict of per-phase ``flops``, ``bytes``, ``floor_ms`` and the total.
    """
    c = counts(config)
    v, t = config.vision_config, config.text_config
    patches = (v.image_size // v.patch_size) ** 2
    vis_flops = frames * (2 * patches * c.vision
                          + 2 * v.num_hidden_layers * 2 * patches * patches * v.hidden_size
                          + 2 * patches * c.projector)
    vis_bytes = (c.vision + c.projector) * weight_bytes
    h, layers = t.hidden_size, t.num_hidden_layers
    kv_row = layers * 2 * t.num_key_value_heads * (h // t.num_attention_heads) * weight_bytes
    p = prefill_tokens
    pre_flops = 2 * p * c.llm_layers + 2 * layers * p * p * h + 2 * h * t.vocab_size
    pre_bytes = (c.llm_layers + c.embed) * weight_bytes + p * kv_row
    dec_flops = new_tokens * (2 * c.llm_layers + 2 * h * t.vocab_size)
    avg_ctx = p + new_tokens / 2
    step_bytes = (c.llm_layers + c.head_read) * weight_bytes + avg_ctx * kv_row
    dec_bytes = new_tokens * step_bytes
    out = {}
    for name, fl, by in (("encode", vis_flops, vis_bytes), ("prefill", pre_flops, pre_bytes),
                         ("decode", dec_flops, dec_bytes)):
        out[name] = {"flops": fl, "bytes": by, "compute_ms": 1e3 * fl / matmul_flops,
                     "memory_ms": 1e3 * by / bandwidth,
                     "floor_ms": 1e3 * max(fl / matmul_flops, by / bandwidth)}
    out["decode_step_bytes"] = step_bytes
    out["total_floor_ms"] = sum(out[k]["floor_ms"] for k in ("encode", "prefill", "decode"))
    return out


def measure_ceilings(device: str = "cuda") -> dict:
    """Measured bf16 matrix rate (FLOP/s) and copy bandwidth (bytes/s, read + write counted).

    METHOD.md: datasheet rates are leads; measure the two ceilings on the machine once.
    """
    def timed(fn, reps: int) -> float:
        for _ in range(3):
            fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3 / reps

    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    mm_s = timed(lambda: a @ b, 10)
    src = torch.randn(2**29, device=device, dtype=torch.float32)  # 2 GiB
    dst = torch.empty_like(src)
    copy_s = timed(lambda: dst.copy_(src), 10)
    torch.cuda.empty_cache()
    return {"matmul_flops": 2 * n**3 / mm_s, "copy_bytes_per_s": 2 * 2**31 / copy_s}
