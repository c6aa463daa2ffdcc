"""Tiny random-weight checkpoints of the real model families, built offline for tests and demos.

``tiny-random`` is a LLaVA-OneVision (SigLIP vision tower + Qwen2 language model) and
``tiny-random-qwen2_5_vl`` a Qwen2.5-VL, both with the real model classes, tiny dimensions and
random weights from a fixed seed. Each is built once into ``$RATS_ROS_CACHE/<name>`` (default
``~/.cache/rats_ros``) and then always loaded through ``from_pretrained`` like a real checkpoint.
Their captions are meaningless: they exist to run the real code paths fast on a CPU.
"""
import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from rats_ros.errors import ModelError

log = logging.getLogger(__name__)

TINY_MODELS = {"tiny-random": "llava_onevision", "tiny-random-qwen2_5_vl": "qwen2_5_vl",
               "tiny-random-qwen3_vl": "qwen3_vl"}
BUILD_VERSION = 2  # bump when a builder changes: cached copies of other versions are rebuilt
_MARKER = "rats_ros_tiny.json"
SEED = 1234
IMAGE_SIZE = 64  # px; with patch 8 -> 8x8 patches per frame
CLIP_PIXELS = 16 * IMAGE_SIZE * IMAGE_SIZE  # Qwen3-VL's bound on a clip's pixels (frames x H x W)
PATCH = 8
TEXT_INIT_STD = 0.2  # larger than the usual 0.02 so random attention is peaked, not uniform

_seed_lock = threading.Lock()

# Video markup of each family's real chat template: where the clip's tokens go.
LLAVA_VIDEO_MARKUP = "<video>\n"
QWEN_VIDEO_MARKUP = "<|vision_start|><|video_pad|><|vision_end|>"


def chat_template(video_markup: str) -> str:
    """A Qwen-style (``<|im_start|>``) chat template; content items render in order, a video
    item as ``video_markup``.

    :returns: the Jinja template text.
    """
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
        "{% elif item['type'] == 'video' %}" + video_markup + "{% endif %}{% endfor %}"
        "{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>",
    "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
]
_CORPUS = """
A person walks into the kitchen and opens the fridge. The robot moves along the corridor.
A man is sitting at a desk, typing on a laptop while a woman talks on the phone.
The camera shows a street with cars, a red bus, people crossing and a dog on a leash.
Someone picks up a cup from the table, pours water and puts the bottle back on the shelf.
The video shows an office, a door, a window, plants, chairs, boxes and a whiteboard.
What is happening in this video? Describe the scene, the objects and the actions in detail.
Question: where did the person put the keys? Answer: on the table next to the door.
"""


def cache_root() -> Path:
    """:returns: the directory where tiny models are built (``$RATS_ROS_CACHE`` or default)."""
    return Path(os.environ.get("RATS_ROS_CACHE") or Path.home() / ".cache" / "rats_ros")


def ensure_tiny(name: str) -> Path:
    """Build the tiny checkpoint ``name`` once and return its directory.

    Builders are serialised by a lock file (threads and processes alike) and write into a private
    temporary directory that is renamed into place, so a reader never sees a partial checkpoint;
    a lost rename race (e.g. a cache without working locks) just drops the extra copy.

    :param name: one of :data:`TINY_MODELS`.
    :returns: the checkpoint directory, loadable with ``from_pretrained``.
    :raises ModelError: for an unknown name or an unwritable cache directory.
    """
    if name not in TINY_MODELS:
        raise ModelError(f"unknown tiny model {name!r}; use one of {sorted(TINY_MODELS)}")
    final = cache_root() / name
    if _is_current(final):
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(final.parent / f".{name}.lock", "w") as lock:
            # flock binds the open file, so it excludes other threads' opens as well as
            # other processes; released when the file closes
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _is_current(final):
                _build_into(name, final)
    except OSError as exc:
        raise ModelError(f"cannot build {name!r} in {final.parent}: {exc}; set RATS_ROS_CACHE "
                         "to a writable directory") from exc
    return final


def _is_current(directory: Path) -> bool:
    try:
        return json.loads((directory / _MARKER).read_text())["version"] == BUILD_VERSION
    except (OSError, ValueError, KeyError):
        return False


def _build_into(name: str, final: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    stale = final.parent / f".{name}-stale-{os.getpid()}"
    try:
        _BUILDERS[TINY_MODELS[name]](tmp)
        (tmp / _MARKER).write_text(json.dumps({"version": BUILD_VERSION, "seed": SEED}))
        if final.exists():  # an older build; a reader finding none waits on the lock
            os.rename(final, stale)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_current(final):  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)


# Qwen2's published pre-tokenizer split (transformers' ``tokenization_qwen2.PRETOKENIZE_REGEX``,
# the ``Split`` of Qwen/Qwen2-0.5B's tokenizer.json): among others, every digit on its own.
QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
               r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


def train_bpe(special_tokens=SPECIAL_TOKENS, specials_last: bool = False,
              corpus: list[str] | None = None, vocab_size: int = 512,
              qwen2_split: bool = False) -> Tokenizer:
    """A small byte-level BPE (any text encodes and decodes) trained on a fixed corpus.

    :param special_tokens: tokens that are never split.
    :param specials_last: give them the ids after the learned vocabulary, in order (as Qwen's
        ``<|endoftext|>`` 151643... follow its BPE vocabulary), instead of the first ids.
    :param corpus: lines to learn merges from (default: a few general sentences).
    :param vocab_size: size of the learned vocabulary, specials included.
    :param qwen2_split: split text as Qwen2's tokenizer does before byte level (digits one by
        one, so a number is the same tokens wherever it stands), instead of GPT-2's byte level.
    :returns: the ``tokenizers`` object.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if qwen2_split:
        bpe.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[] if specials_last else list(special_tokens),
        show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus or _CORPUS.strip().splitlines(), trainer)
    if specials_last:
        bpe.add_special_tokens(list(special_tokens))
    return bpe


def build_tokenizer(video_markup: str, bpe: Tokenizer | None = None):
    """:func:`train_bpe` as a transformers tokenizer with Qwen-style specials and template.

    :param video_markup: what the chat template writes for a video content item.
    :param bpe: the ``tokenizers`` object (default: :func:`train_bpe` on the general corpus).
    :returns: a ``PreTrainedTokenizerFast`` with a Qwen-style chat template.
    """
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=bpe or train_bpe(), eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
        chat_template=chat_template(video_markup), model_max_length=4096,
    )


def text_kwargs(vocab_size: int, eos_id: int, pad_id: int) -> dict:
    """Tiny Qwen2-style language model dimensions (8 layers of 64)."""
    return dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=8,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        initializer_range=TEXT_INIT_STD, eos_token_id=eos_id, pad_token_id=pad_id,
        bos_token_id=None, tie_word_embeddings=False,
    )


def _text_kwargs(tokenizer) -> dict:
    return text_kwargs(len(tokenizer), tokenizer.convert_tokens_to_ids("<|im_end|>"),
                       tokenizer.pad_token_id)


def siglip_kwargs() -> dict:
    """Tiny SigLIP vision tower: 64 px frames of 8 px patches (8x8 patches)."""
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=IMAGE_SIZE, patch_size=PATCH, vision_use_head=False)


def _printable_only(model, tokenizer) -> None:
    """Zero the output rows of tokens that are not printable ASCII text (stray UTF-8 bytes,
    image/video placeholders) so random greedy captions decode to readable characters; the
    end-of-turn token stays reachable."""
    keep = {tokenizer.convert_tokens_to_ids("<|im_end|>")}
    with torch.no_grad():
        for token_id in range(len(tokenizer)):
            text = tokenizer.decode([token_id])
            if token_id not in keep and not (text.isascii() and text.isprintable() and text
                                             and token_id not in tokenizer.all_special_ids):
                model.lm_head.weight[token_id] = 0.0


def _save(model, tokenizer, directory: Path, preprocessor: dict) -> None:
    _printable_only(model, tokenizer)
    model.generation_config.eos_token_id = model.config.text_config.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))


def seeded(build):
    """Build with a fixed seed without disturbing the caller's random state. The global RNG is
    shared by threads, so builds of different models in one process take turns."""
    with _seed_lock, torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return build()


def build_llava_onevision(directory: Path) -> None:
    """Write a tiny random LLaVA-OneVision checkpoint (16 tokens per frame) into ``directory``."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    tokenizer = build_tokenizer(LLAVA_VIDEO_MARKUP)
    vision = SiglipVisionConfig(**siglip_kwargs())
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=Qwen2Config(**_text_kwargs(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]],
    )
    model = seeded(lambda: LlavaOnevisionForConditionalGeneration(config))
    preprocessor = {"size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                    "rescale_factor": 1 / 255}
    _save(model, tokenizer, directory, preprocessor)


def build_qwen2_5_vl(directory: Path) -> None:
    """Write a tiny random Qwen2.5-VL checkpoint (16 tokens per frame pair at 64x64 px)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tokenizer(QWEN_VIDEO_MARKUP)
    text = _text_kwargs(tokenizer)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                               "mrope_section": [2, 3, 3]}  # sums to head_dim / 2 = 8
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=PATCH,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=32,
                  out_hidden_size=text["hidden_size"], fullatt_block_indexes=[1])
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    model = seeded(lambda: Qwen2_5_VLForConditionalGeneration(config))
    preprocessor = {"size": {"shortest_edge": 32 * 32, "longest_edge": IMAGE_SIZE * IMAGE_SIZE},
                    "patch_size": PATCH, "temporal_patch_size": 2, "merge_size": 2,
                    "image_mean": [0.48145466, 0.4578275, 0.40821073],
                    "image_std": [0.26862954, 0.26130258, 0.27577711], "rescale_factor": 1 / 255}
    _save(model, tokenizer, directory, preprocessor)


def build_qwen3_vl(directory: Path) -> None:
    """Write a tiny random Qwen3-VL checkpoint (16 px patches merged 2x2: 4 tokens per frame
    pair at 64x64 px; DeepStack features from both vision layers)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tokenizer = build_tokenizer(QWEN_VIDEO_MARKUP)
    text = _text_kwargs(tokenizer)
    text.update(head_dim=16, rope_parameters={  # interleaved M-RoPE, sections sum to 16 / 2
        "rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [2, 3, 3],
        "mrope_interleaved": True})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=text["hidden_size"],
                  num_position_embeddings=16, deepstack_visual_indexes=[0, 1])
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen3VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=False,
    )
    model = seeded(lambda: Qwen3VLForConditionalGeneration(config))
    # Qwen3-VL's video processor bounds a whole clip's pixels: 16 frames of 64x64 px at most
    preprocessor = {"size": {"shortest_edge": 32 * 32, "longest_edge": CLIP_PIXELS},
                    "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                    "rescale_factor": 1 / 255}
    _save(model, tokenizer, directory, preprocessor)


_BUILDERS = {"llava_onevision": build_llava_onevision, "qwen2_5_vl": build_qwen2_5_vl,
             "qwen3_vl": build_qwen3_vl}


def warn_random(name: str) -> None:
    """Log loudly that ``name`` has random weights."""
    log.warning("!!! model %r has RANDOM weights: its captions and answers are meaningless. "
                "Pass a real checkpoint (local directory or cached Hugging Face id) for real use.",
                name)
