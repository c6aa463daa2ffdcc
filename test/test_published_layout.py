"""Checkpoints in the published llava-hf file layout (rats_ros.testing.published), and broken
ones: the prompt as the family's own processor builds it, and refusals that name the file."""
import json

import numpy as np
import pytest
from transformers import AutoTokenizer, LlavaOnevisionProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen3_vl.video_processing_qwen3_vl import (
    smart_resize as hf_qwen3_smart_resize,
)

from rats_ros.errors import ModelError
from rats_ros.io.sample_scene import write_sample_bag
from rats_ros.models import load_backend
from rats_ros.testing import published
from rats_ros.tools.cli import main

PROMPT = "Describe what's happening in this video."


@pytest.fixture(scope="module")
def llava_hf(tmp_path_factory):
    """A tiny checkpoint in the llava-hf layout (current revision)."""
    return published.write_llava_onevision(tmp_path_factory.mktemp("llava-hf"))


def broken(tmp_path, name: str, **files):
    """A llava-hf layout checkpoint with some files replaced (text) or removed (None)."""
    directory = published.write_llava_onevision(tmp_path / name)
    for file, text in files.items():
        path = directory / file.replace("__", ".")
        path.unlink() if text is None else path.write_text(text)
    return directory


def test_the_fixture_ships_the_published_file_set(llava_hf):
    assert sorted(p.name for p in llava_hf.iterdir()) == [
        "added_tokens.json", "chat_template.json", "config.json", "generation_config.json",
        "merges.txt", "model.safetensors", "preprocessor_config.json", "processor_config.json",
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"]
    config = json.loads((llava_hf / "config.json").read_text())
    assert {"image_token_index", "video_token_index", "vision_aspect_ratio"} <= set(config)
    tokenizer_template = json.loads((llava_hf / "tokenizer_config.json").read_text())
    assert "message['content'] +" in tokenizer_template["chat_template"]  # text-only


def test_processor_template_wins_and_the_prompt_equals_the_processors(llava_hf):
    """The ids our layout feeds the LLM equal what LlavaOnevisionProcessor builds: the
    processor's template rendered, its video token expanded by the processor's own count
    (frames x pooled patches + newline), then tokenized.

    A LlavaOnevisionProcessor instance needs its video processor, which needs torchvision, and
    torchvision's PyPI builds do not load next to the pinned CPU torch (``operator
    torchvision::nms does not exist``, torchvision 0.28.0 with torch 2.13.0+cpu). So the
    processor's own counting method runs on an instance made without ``__init__`` holding
    processor_config.json's ``num_image_tokens``, and the template is rendered by the
    tokenizer's Jinja renderer (the one ``ProcessorMixin.apply_chat_template`` uses too)."""
    backend = load_backend(str(llava_hf))
    assert backend.template_source.endswith("chat_template.json")
    tokenizer = AutoTokenizer.from_pretrained(llava_hf)
    template = json.loads((llava_hf / "chat_template.json").read_text())["chat_template"]
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}],
        chat_template=template, tokenize=False, add_generation_prompt=True)
    processor = LlavaOnevisionProcessor.__new__(LlavaOnevisionProcessor)
    processor.num_image_tokens = json.loads(
        (llava_hf / "processor_config.json").read_text())["num_image_tokens"]
    count = processor._get_num_multimodal_tokens(video_sizes=[(4, 48, 64)])["num_video_tokens"][0]
    expected = tokenizer(text.replace("<video>", "<video>" * count),
                         add_special_tokens=False)["input_ids"]
    frames = np.random.default_rng(0).integers(0, 255, (4, 48, 64, 3), dtype=np.uint8)
    visual = backend.encode_clip(frames)  # (N, D)
    prefix, suffix = backend.prompt_layout(PROMPT)
    trailer = backend._clip_trailer().shape[0]  # image_newline
    video_id = backend.model.config.video_token_id
    ours = prefix.tolist() + [video_id] * (visual.count + trailer) + suffix.tolist()
    assert ours == expected
    assert visual.count + trailer == count == 4 * 16 + 1


def test_cli_captions_and_answers_with_a_published_layout(llava_hf, tmp_path, capsys):
    write_sample_bag(tmp_path / "bag", seconds=8.0, fps=2.0, size=(64, 48))
    store = tmp_path / "captions.db"
    code = main(["caption", str(tmp_path / "bag"), "--model", str(llava_hf), "--fps", "1",
                 "--clip-frames", "4", "--max-new-tokens", "4", "--store", str(store)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(out.splitlines()) == 2 and "Traceback" not in err
    code = main(["ask", "What happened?", "--store", str(store), "--max-new-tokens", "4",
                 "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 0 and answer["success"] and len(answer["evidence"]) == 2


@pytest.mark.parametrize("case,files,says", [
    ("template-raises", {"chat_template__json": json.dumps(
        {"chat_template": "{{ raise_exception('This template does not support video') }}"})},
     "chat_template.json cannot render"),
    ("text-only-template", {"chat_template__json": None}, "tokenizer_config.json cannot render"),
    ("no-tokenizer", {"tokenizer__json": None, "vocab__json": None, "merges__txt": None},
     "tokenizer"),
    ("unreadable-template", {"chat_template__json": "{not json"}, "chat_template.json"),
])
def test_broken_checkpoints_are_refused_at_load_naming_the_file(tmp_path, case, files, says):
    with pytest.raises(ModelError) as refused:
        load_backend(str(broken(tmp_path, case, **files)))
    assert says in str(refused.value)


def test_an_older_revision_without_the_video_token_is_refused(tmp_path):
    old = published.write_llava_onevision(tmp_path / "old", video_token=False)
    with pytest.raises(ModelError, match="predates video support"):
        load_backend(str(old))


def test_a_truncated_weights_file_is_refused(tmp_path):
    directory = published.write_llava_onevision(tmp_path / "truncated")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match="download"):
        load_backend(str(directory))


def test_cli_refuses_a_broken_checkpoint_with_exit_2_and_no_traceback(tmp_path, capsys):
    write_sample_bag(tmp_path / "bag", seconds=4.0, fps=2.0, size=(64, 48))
    model = broken(tmp_path, "raises", chat_template__json=json.dumps(
        {"chat_template": "{{ raise_exception('no video here') }}"}))
    code = main(["caption", str(tmp_path / "bag"), "--model", str(model)])
    _, err = capsys.readouterr()
    assert code == 2 and "chat_template.json" in err and "no video here" in err
    assert "Traceback" not in err


def test_check_model_prints_the_prompt_tokens_and_memory_estimate(llava_hf, capsys):
    code = main(["check-model", str(llava_hf), "--frames", "4", "--height", "48", "--width",
                 "64", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["family"] == "llava_onevision" and summary["tokens_per_frame"] == 16
    # the processor's count is visual tokens + the image_newline; a Caption's visual_tokens
    # (and the demo's kept/visual) count the visual ones alone
    assert (summary["visual_tokens"], summary["clip_trailer_tokens"]) == (4 * 16, 1)
    assert "<video x 64><clip trailer>" in summary["prompt"]
    assert "<|im_start|>assistant" in summary["prompt"]
    assert summary["estimate_mib"] >= summary["weights_mib"] > 0
    assert len(summary["readout_layers"]) == 4


def test_check_model_refuses_a_broken_checkpoint_with_exit_2(tmp_path, capsys):
    model = broken(tmp_path, "no-template", chat_template__json=None)
    assert main(["check-model", str(model)]) == 2
    assert "tokenizer_config.json cannot render" in capsys.readouterr().err


@pytest.mark.parametrize("nested", [False, True], ids=["flat-config", "nested-text-config"])
def test_qwen2_5_vl_published_layouts_load_and_caption(tmp_path, nested):
    directory = published.write_qwen2_5_vl(tmp_path / "qwen", nested=nested)
    backend = load_backend(str(directory))
    assert backend.template_source.endswith("chat_template.json")
    config = json.loads((directory / "config.json").read_text())
    assert ("text_config" in config) == nested
    prefix, suffix = backend.prompt_layout(PROMPT)
    tokenizer = backend.tokenizer
    assert tokenizer.convert_ids_to_tokens(prefix.tolist()[-1]) == "<|vision_start|>"
    assert tokenizer.convert_ids_to_tokens(suffix.tolist()[0]) == "<|vision_end|>"
    ends = json.loads((directory / "generation_config.json").read_text())["eos_token_id"]
    assert set(ends) <= backend.eos_ids  # both of the published end ids stop a caption
    frames = np.random.default_rng(0).integers(0, 255, (4, 48, 64, 3), dtype=np.uint8)
    visual = backend.encode_clip(frames)
    out = backend.caption(visual.tokens[:0], visual, PROMPT, 6, readout=True)
    assert out.scores.shape == (visual.count,) and out.token_ids


def test_qwen3_vl_published_layout_loads_and_captions_with_deepstack(tmp_path, capsys):
    directory = published.write_qwen3_vl(tmp_path / "qwen3")
    assert (directory / "video_preprocessor_config.json").is_file()
    backend = load_backend(str(directory))
    assert type(backend).__name__ == "Qwen3VLBackend"
    assert backend.model.config.text_config.rope_parameters["mrope_interleaved"]
    frames = np.random.default_rng(0).integers(0, 255, (4, 48, 64, 3), dtype=np.uint8)
    visual = backend.encode_clip(frames)
    assert len(visual.deepstack) == 2  # deepstack_visual_indexes [0, 1]
    out = backend.caption(visual.tokens[:0], visual, PROMPT, 6, readout=True)
    assert out.scores.shape == (visual.count,)
    assert main(["check-model", str(directory), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "qwen3_vl"


@pytest.mark.parametrize("nested", [False, True])
def test_qwen2_5_vl_prompt_equals_the_processors(tmp_path, nested):
    """Our Qwen2.5-VL prompt ids equal Qwen2_5_VLProcessor's: the published template rendered,
    ``<|video_pad|>`` expanded by the processor's own count, then tokenized.

    Its video processor needs torchvision (not loadable beside the pinned CPU torch, as above),
    so the count comes from the same counting the processor's ``_get_num_multimodal_tokens``
    does, on the image processor it ships with (``Qwen2VLImageProcessorPil``, built from the
    fixture's ``preprocessor_config.json``): patches of one frame pair, ``temporal_patch_size``
    frames per pair, ``merge_size**2`` patches per token."""
    directory = published.write_qwen2_5_vl(tmp_path / "qwen", nested=nested)
    backend = load_backend(str(directory))
    settings = json.loads((directory / "preprocessor_config.json").read_text())
    image_processor = Qwen2VLImageProcessorPil(**settings)
    frames = np.random.default_rng(0).integers(0, 255, (4, 48, 64, 3), dtype=np.uint8)
    patches = image_processor.get_number_of_image_patches(48, 64, {})  # one frame pair
    count = 4 // settings["temporal_patch_size"] * patches // settings["merge_size"] ** 2
    tokenizer = AutoTokenizer.from_pretrained(directory)
    template = json.loads((directory / "chat_template.json").read_text())["chat_template"]
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}],
        chat_template=template, tokenize=False, add_generation_prompt=True)
    expected = tokenizer(text.replace("<|video_pad|>", "<|video_pad|>" * count),
                         add_special_tokens=False)["input_ids"]
    visual = backend.encode_clip(frames)  # (N, D)
    prefix, suffix = backend.prompt_layout(PROMPT)
    video_id = backend.model.config.video_token_id
    assert prefix.tolist() + [video_id] * visual.count + suffix.tolist() == expected
    assert visual.count == count


def test_qwen3_vl_visual_tokens_equal_the_video_processors_count(tmp_path):
    """Qwen3-VL's video processor sizes a clip by the pixels of all its frames (its
    ``smart_resize`` over frames x H x W, bounds from video_preprocessor_config.json); our clip
    has as many visual tokens. (The prompt itself differs by design: no per-frame-group
    timestamp text, docs/METHOD_NOTES.md.) The count is the processor's arithmetic on its own
    ``smart_resize``: its class needs torchvision, as above."""
    directory = published.write_qwen3_vl(tmp_path / "qwen3")
    backend = load_backend(str(directory))
    video = json.loads((directory / "video_preprocessor_config.json").read_text())
    factor = video["patch_size"] * video["merge_size"]
    for frames, height, width in ((4, 48, 64), (16, 48, 64), (16, 120, 90), (6, 20, 40)):
        h, w = hf_qwen3_smart_resize(frames, height, width, video["temporal_patch_size"], factor,
                                     video["size"]["shortest_edge"],
                                     video["size"]["longest_edge"])
        count = -(-frames // video["temporal_patch_size"]) * (h // factor) * (w // factor)
        pixels = np.zeros((frames, height, width, 3), dtype=np.uint8)
        assert backend.num_visual_tokens(frames, height, width) == count
        assert backend.encode_clip(pixels).count == count
