"""Checkpoint directories in the file layout of the published LLaVA-OneVision repositories
(``llava-hf/llava-onevision-qwen2-{0.5b,7b}-ov-hf``), with tiny dimensions and random weights.

What a user's download looks like, file for file, so the loading code meets the published
layout and not only the one ``save_pretrained`` writes today. Where each fact comes from:

- The file set and how it was produced: transformers'
  ``src/transformers/models/llava_onevision/convert_llava_onevision_weights_to_hf.py`` (the
  script that made the llava-hf checkpoints): the tokenizer of ``Qwen/Qwen2-{0.5B,7B}-Instruct``
  with ``<image>`` and ``<video>`` added as special, unnormalised tokens; a
  ``LlavaOnevisionProcessor(num_image_tokens=729, vision_feature_select_strategy="full",
  chat_template=...)`` saved next to the model, hence ``processor_config.json``,
  ``chat_template.json`` (the processor's video-aware template, :data:`PROCESSOR_TEMPLATE`, copied
  from that script) and ``preprocessor_config.json``; ``tokenizer_config.json`` keeps Qwen2's own
  text-only template (:data:`QWEN2_TEXT_TEMPLATE`, as in the Qwen2-Instruct repositories), which
  concatenates ``message['content']`` as a string and so cannot render a video item.
- Token ids: ``<|endoftext|>`` 151643, ``<|im_start|>`` 151644, ``<|im_end|>`` 151645,
  ``<image>`` 151646, ``<video>`` 151647 (``image_token_index``/``video_token_index`` of the
  published ``config.json``; also listed in vLLM's request classifier for
  ``llava-onevision-qwen2-0.5b-ov-hf``). Here the byte-level BPE vocabulary is small, so the same
  tokens get small ids in the same order; ``config.json`` names them, as published.
- ``config.json`` field set: ``image_token_index``, ``video_token_index``,
  ``use_image_newline_parameter``, ``vision_aspect_ratio: anyres_max_9``,
  ``vision_feature_layer: -1``, ``vision_feature_select_strategy: full`` and a ``qwen2``
  ``text_config`` with ``rope_theta`` (written by transformers 4.45, before ``rope_parameters``).

Qwen2.5-VL (``Qwen/Qwen2.5-VL-{3B,7B}-Instruct``, :func:`write_qwen2_5_vl`): the flat
``config.json`` that transformers 4.41-4.49 wrote (text fields at the top,
``rope_scaling: {type: mrope, mrope_section: [16, 24, 24]}``, ``vision_config`` with
``fullatt_block_indexes`` and ``window_size: 112``, ``transformers_version: 4.41.2``; copies of
it in public repositories, e.g. the WALL-OSS and Qwen-Image text-encoder configs), or the nested
``text_config`` form newer transformers write (``rope_scaling: {mrope_section, rope_type:
default, type: default}``). Token ids as published: ``<|vision_start|>`` 151652,
``<|vision_end|>`` 151653, ``<|vision_pad|>`` 151654, ``<|image_pad|>`` 151655, ``<|video_pad|>``
151656, after the object/box/quad markers 151646-151651; ``generation_config.json`` lists two
end ids (``[151645, 151643]``). Both ``chat_template.json`` and ``tokenizer_config.json`` carry
the VL template (:data:`QWEN_VL_TEMPLATE`), which writes
``<|vision_start|><|video_pad|><|vision_end|>`` for a video item.

Qwen3-VL (``Qwen/Qwen3-VL-{2B,4B,8B}-Instruct``, :func:`write_qwen3_vl`): only the nested form
(``transformers_version: 4.57.0.dev0``): a ``qwen3_vl_text`` ``text_config`` with ``head_dim``
and ``rope_scaling: {mrope_interleaved: true, mrope_section: [24, 20, 20], rope_type: default}``,
``rope_theta: 5000000``; a ``vision_config`` of ``model_type: qwen3_vl`` with 16 px patches,
``num_position_embeddings: 2304`` and ``deepstack_visual_indexes: [5, 11, 17]``; the same token
ids as Qwen2.5-VL; a ``video_preprocessor_config.json`` beside ``preprocessor_config.json``
(copies of the 4B config in public repositories, e.g. a Qwen3-VL inference wrapper and a Rust
port's ``from_hf`` test), whose ``size`` bounds a whole clip's pixels (published: shortest_edge
4,096, longest_edge 25,165,824, as copied in public repositories' tests of
``Qwen3VLVideoProcessor``; the fixture: 16 frames of 64x64 px). Its ``chat_template.json`` is
longer than Qwen2.5-VL's (tools, thinking);
the fixture uses the Qwen2.5-VL template, whose rendering of a user's video item
(``<|vision_start|><|video_pad|><|vision_end|>``) Qwen3-VL's shares: not a byte copy.

An "older revision" (``video_token=False``) has no ``<video>`` in its tokenizer, as the first
llava-hf uploads had: ``config.json`` still names id 151647, which then is no token at all.
"""
from __future__ import annotations

import json
from pathlib import Path

from rats_ros.models import tiny

#: chat_template.json of the llava-hf OneVision repositories (the conversion script's template)
PROCESSOR_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{# Render all images first #}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}"
    "{% endif %}{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
#: tokenizer_config.json's template of Qwen2-Instruct: text-only (string concatenation)
QWEN2_TEXT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
QWEN2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN_VL_SPECIALS = QWEN2_SPECIALS + (
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>")
#: chat_template.json (and tokenizer_config.json) of Qwen2.5-VL-*-Instruct
QWEN_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
IMAGE_SIZE, PATCH = tiny.IMAGE_SIZE, tiny.PATCH  # 8x8 patches, pooled to 4x4 per frame


def write_llava_onevision(directory, video_token: bool = True) -> Path:
    """Write a tiny LLaVA-OneVision checkpoint in the llava-hf file layout into ``directory``.

    :param video_token: False for an older revision whose tokenizer lacks ``<video>``.
    :returns: the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    added = QWEN2_SPECIALS + (("<image>", "<video>") if video_token else ("<image>",))
    bpe = tiny.train_bpe(added, specials_last=True)
    ids = {token: bpe.token_to_id(token) for token in added}
    video_id = ids["<image>"] + 1  # what config.json names, whether or not the token exists
    # The embedding table is padded past the tokenizer (the script pads to a multiple of 64).
    _write_model(directory, bpe.get_vocab_size() + 8, ids, video_id)
    _write_tokenizer(directory, bpe, ids)
    _write_processor(directory)
    return directory


def _qwen_vocabulary():
    """The Qwen-VL specials after a small BPE vocabulary. :returns: ``(bpe, ids, text kwargs)``."""
    bpe = tiny.train_bpe(QWEN_VL_SPECIALS, specials_last=True)
    ids = {token: bpe.token_to_id(token) for token in QWEN_VL_SPECIALS}
    text = tiny.text_kwargs(bpe.get_vocab_size() + 8, ids["<|im_end|>"], ids["<|endoftext|>"])
    text.update(bos_token_id=ids["<|endoftext|>"], tie_word_embeddings=True)
    return bpe, ids, text


def _write_model(directory: Path, vocab: int, ids: dict, video_id: int) -> None:
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    text = dict(tiny.text_kwargs(vocab, ids["<|im_end|>"], ids["<|endoftext|>"]),
                tie_word_embeddings=True)  # the 0.5B ties its embeddings
    config = LlavaOnevisionConfig(
        text_config=text, vision_config=tiny.siglip_kwargs(), image_token_index=ids["<image>"],
        video_token_index=video_id, vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]])
    model = tiny.seeded(lambda: LlavaOnevisionForConditionalGeneration(config))
    model.save_pretrained(directory)
    text_config = {key: value for key, value in text.items() if key != "rope_parameters"}
    published = {
        "architectures": ["LlavaOnevisionForConditionalGeneration"],
        "image_grid_pinpoints": [[IMAGE_SIZE, IMAGE_SIZE]], "image_token_index": ids["<image>"],
        "model_type": "llava_onevision", "projector_hidden_act": "gelu",
        "text_config": {**text_config, "model_type": "qwen2", "rope_theta": 1000000.0,
                        "architectures": ["Qwen2ForCausalLM"], "torch_dtype": "bfloat16",
                        "use_sliding_window": False},
        "tie_word_embeddings": True, "torch_dtype": "float32",
        "transformers_version": "4.45.0.dev0", "use_image_newline_parameter": True,
        "video_token_index": video_id, "vision_aspect_ratio": "anyres_max_9",
        "vision_config": {**tiny.siglip_kwargs(), "model_type": "siglip_vision_model"},
        "vision_feature_layer": -1, "vision_feature_select_strategy": "full"}
    _json(directory / "config.json", published)
    _json(directory / "generation_config.json",
          {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
           "transformers_version": "4.45.0.dev0"})


def _write_tokenizer(directory: Path, bpe, ids: dict, template: str = QWEN2_TEXT_TEMPLATE,
                     processor: str = "LlavaOnevisionProcessor") -> None:
    bpe.save(str(directory / "tokenizer.json"))
    bpe.model.save(str(directory))  # vocab.json, merges.txt (the slow tokenizer's files)
    special = {"content": "", "lstrip": False, "normalized": False, "rstrip": False,
               "single_word": False, "special": True}
    _json(directory / "tokenizer_config.json", {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {**special, "content": t} for t, i in ids.items()},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": None,
        "chat_template": template, "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>", "errors": "replace", "model_max_length": 32768,
        "pad_token": "<|endoftext|>", "padding_side": "left",
        "processor_class": processor, "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "unk_token": None})
    _json(directory / "special_tokens_map.json", {
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "eos_token": {**special, "content": "<|im_end|>"},
        "pad_token": {**special, "content": "<|endoftext|>"}})
    _json(directory / "added_tokens.json", ids)


def _write_processor(directory: Path) -> None:
    _json(directory / "chat_template.json", {"chat_template": PROCESSOR_TEMPLATE})
    _json(directory / "processor_config.json", {
        "image_token": "<image>", "num_image_tokens": (IMAGE_SIZE // PATCH) ** 2,
        "processor_class": "LlavaOnevisionProcessor", "video_token": "<video>",
        "vision_feature_select_strategy": "full"})
    _json(directory / "preprocessor_config.json", {
        "do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True,
        "do_resize": True, "image_grid_pinpoints": [[IMAGE_SIZE, IMAGE_SIZE]],
        "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "LlavaOnevisionImageProcessor",
        "image_std": [0.5, 0.5, 0.5], "processor_class": "LlavaOnevisionProcessor",
        "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}})


def write_qwen2_5_vl(directory, nested: bool = False) -> Path:
    """Write a tiny Qwen2.5-VL checkpoint in the ``Qwen/Qwen2.5-VL-*-Instruct`` file layout.

    :param nested: the ``text_config`` form of newer transformers instead of the flat one.
    :returns: the directory.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe, ids, text = _qwen_vocabulary()
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=PATCH,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=32, in_chans=3,
                  out_hidden_size=text["hidden_size"], fullatt_block_indexes=[1],
                  tokens_per_second=2, hidden_act="silu", spatial_patch_size=PATCH)
    tokens = {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
              "vision_start_token_id": ids["<|vision_start|>"],
              "vision_end_token_id": ids["<|vision_end|>"],
              "vision_token_id": ids["<|vision_pad|>"]}
    mrope = [2, 3, 3]  # sums to head_dim / 2 = 8, as [16, 24, 24] does for 128
    config = Qwen2_5_VLConfig(text_config={**text, "rope_parameters": {
        "rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope}},
        vision_config=vision, **{k: v for k, v in tokens.items() if k != "vision_token_id"})
    tiny.seeded(lambda: Qwen2_5_VLForConditionalGeneration(config)).save_pretrained(directory)
    common = {"architectures": ["Qwen2_5_VLForConditionalGeneration"],
              "model_type": "qwen2_5_vl", "torch_dtype": "bfloat16", **tokens,
              "vision_config": vision}
    text_fields = {**text, "hidden_act": "silu", "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
                   "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 8,
                   "attention_dropout": 0.0}
    if nested:
        published = {**common, "transformers_version": "4.57.0", "text_config": {
            **text_fields, "model_type": "qwen2_5_vl_text", "rope_scaling": {
                "mrope_section": mrope, "rope_type": "default", "type": "default"}}}
    else:
        published = {**common, **text_fields, "transformers_version": "4.41.2",
                     "rope_scaling": {"type": "mrope", "mrope_section": mrope}}
    _json(directory / "config.json", published)
    _json(directory / "generation_config.json", {
        "bos_token_id": ids["<|endoftext|>"], "pad_token_id": ids["<|endoftext|>"],
        "do_sample": True, "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "repetition_penalty": 1.05, "temperature": 1e-06, "transformers_version": "4.49.0"})
    _write_qwen_tokenizer(directory, bpe, ids, "Qwen2_5_VLProcessor")
    _json(directory / "preprocessor_config.json", {
        "min_pixels": 32 * 32, "max_pixels": IMAGE_SIZE * IMAGE_SIZE, "patch_size": PATCH,
        "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"})
    return directory


def write_qwen3_vl(directory) -> Path:
    """Write a tiny Qwen3-VL checkpoint in the ``Qwen/Qwen3-VL-*-Instruct`` file layout.

    :returns: the directory.
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe, ids, text = _qwen_vocabulary()
    text.update(head_dim=16)
    rope = {"mrope_interleaved": True, "mrope_section": [2, 3, 3], "rope_type": "default"}
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                  out_hidden_size=text["hidden_size"], num_position_embeddings=16,
                  deepstack_visual_indexes=[0, 1], hidden_act="gelu_pytorch_tanh")
    tokens = {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
              "vision_start_token_id": ids["<|vision_start|>"],
              "vision_end_token_id": ids["<|vision_end|>"]}
    config = Qwen3VLConfig(text_config={**text, "rope_parameters": {
        **rope, "rope_theta": 5000000.0}}, vision_config=vision, tie_word_embeddings=True, **tokens)
    tiny.seeded(lambda: Qwen3VLForConditionalGeneration(config)).save_pretrained(directory)
    _json(directory / "config.json", {
        "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
        **tokens, "tie_word_embeddings": True, "transformers_version": "4.57.0.dev0",
        "text_config": {**text, "model_type": "qwen3_vl_text", "rope_scaling": rope,
                        "rope_theta": 5000000, "hidden_act": "silu", "rms_norm_eps": 1e-06,
                        "attention_bias": False, "attention_dropout": 0.0, "dtype": "bfloat16"},
        "vision_config": {**vision, "model_type": "qwen3_vl", "initializer_range": 0.02}})
    _json(directory / "generation_config.json", {
        "bos_token_id": ids["<|endoftext|>"], "pad_token_id": ids["<|endoftext|>"],
        "do_sample": True, "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "top_k": 20, "top_p": 0.8, "temperature": 0.7, "transformers_version": "4.56.0"})
    _write_qwen_tokenizer(directory, bpe, ids, "Qwen3VLProcessor")
    pixels = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
              "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    _json(directory / "preprocessor_config.json", {
        **pixels, "size": {"longest_edge": IMAGE_SIZE * IMAGE_SIZE, "shortest_edge": 32 * 32},
        "image_processor_type": "Qwen2VLImageProcessorFast", "processor_class": "Qwen3VLProcessor"})
    _json(directory / "video_preprocessor_config.json", {  # size bounds the clip's pixels
        **pixels, "size": {"longest_edge": tiny.CLIP_PIXELS, "shortest_edge": 32 * 32},
        "fps": 2, "video_processor_type": "Qwen3VLVideoProcessor",
        "processor_class": "Qwen3VLProcessor"})
    return directory


def _write_qwen_tokenizer(directory: Path, bpe, ids: dict, processor: str) -> None:
    """The Qwen-VL repositories' tokenizer files: the VL template in tokenizer_config.json and
    chat_template.json, no special_tokens_map.json or added_tokens.json."""
    _write_tokenizer(directory, bpe, ids, QWEN_VL_TEMPLATE, processor)
    (directory / "special_tokens_map.json").unlink()
    (directory / "added_tokens.json").unlink()
    _json(directory / "chat_template.json", {"chat_template": QWEN_VL_TEMPLATE})


def _json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
