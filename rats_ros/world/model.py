"""The ``synthetic-world`` model: a small LLaVA-OneVision (SigLIP + Qwen2) with a tokenizer learned
on the world's language, so the production backend, read-out and fast path run it unchanged.

:func:`build_untrained` writes the architecture with fresh weights (what :mod:`.train` starts
from); the trained weights are committed in ``rats_ros/world/synthetic_world/`` and found by name
through :func:`rats_ros.world.checkpoint_dir`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rats_ros.models import tiny
from rats_ros.recall.qa import DEFAULT_INSTRUCTION, answer_prompt
from rats_ros.recall.retrieval import format_caption
from rats_ros.records import CaptionRecord
from rats_ros.world import language, scene

IMAGE_SIZE, PATCH = 64, 8  # 8x8 patches, pooled 2x2: 16 tokens per frame
#: the answerer's prompt the model is trained on (:func:`qa_example`): spans in seconds from the
#: first caption, no notes on a temporal question's matches (QAConfig fields)
TRAINED_PROMPT = {"time_format": "stream", "temporal": False}
_NS = 1_000_000_000


def stored_captions(world: scene.World, clips: int) -> list[CaptionRecord]:
    """The true captions of the first ``clips`` clips as records, stamped as the stream is."""
    step = round(scene.FRAME_INTERVAL_S * _NS)
    out = []
    for c in range(clips):
        start = scene.START_NS + c * scene.CLIP_FRAMES * step
        out.append(CaptionRecord(c, start, start + (scene.CLIP_FRAMES - 1) * step,
                                 language.caption(language.clip_facts(world, c)),
                                 scene.CLIP_FRAMES, 0, 0, 0, 0.0))
    return out


def qa_example(world: scene.World, clips: int, question: language.Question) -> str:
    """The answerer's user message for ``question`` over the true captions (as QuestionAnswerer
    builds it), so training sees exactly the prompts of inference."""
    captions = stored_captions(world, clips)
    lines = [format_caption(c, captions[0].start_ns) for c in captions]
    return answer_prompt(DEFAULT_INSTRUCTION, question.text, lines)


def qa_examples(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """``count`` questions for training, each on a fresh world of 2 to 40 clips (short
    histories make it easy to learn where to look), over its true captions."""
    out = []
    while len(out) < count:
        clips = int(rng.integers(2, 41))
        world = scene.generate(int(rng.integers(0, 10**9)), clips)
        asked = language.questions(world)
        if asked:
            question = asked[int(rng.integers(len(asked)))]
            out.append((qa_example(world, clips, question), question.answer))
    return out


def corpus(worlds: int = 200, clips: int = 24) -> list[str]:
    """Text the tokenizer learns its merges from: captions, questions, answers, prompts."""
    lines = []
    for seed in range(worlds):
        world = scene.generate(10_000_000 + seed, clips)
        lines += [c.text for c in stored_captions(world, clips)]
        asked = language.questions(world)
        for q in asked:
            lines += [q.text, q.answer]
        if seed < 20:
            lines += qa_example(world, clips, asked[0]).splitlines()
    return lines


def build_untrained(directory: Path, seed: int = 0) -> None:
    """Write the architecture with freshly initialised weights into ``directory``."""
    import torch
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    tokenizer = tiny.build_tokenizer(tiny.LLAVA_VIDEO_MARKUP,
                                     tiny.train_bpe(corpus=corpus(), vocab_size=512,
                                                    qwen2_split=True))
    ids = tokenizer.convert_tokens_to_ids
    text = Qwen2Config(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384,
                       num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=4096, eos_token_id=ids("<|im_end|>"),
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                       tie_word_embeddings=False)
    vision = SiglipVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                                num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH,
                                vision_use_head=False)
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=ids("<image>"),
        video_token_index=ids("<video>"), vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(config)
    model.generation_config.eos_token_id = text.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    preprocessor = {"size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                    "rescale_factor": 1 / 255}
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
