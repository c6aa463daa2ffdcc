"""Backends on the tiny random checkpoints: loading, preprocessing, layout, errors, round trip."""
import json
import threading

import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
    Qwen2VLImageProcessorPil,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
    smart_resize as hf_smart_resize,
)
from transformers.models.qwen3_vl.video_processing_qwen3_vl import (
    smart_resize as hf_qwen3_smart_resize,
)

from rats_ros.errors import ConfigError, FrameError, ModelError
from rats_ros.models import BackendConfig, load_backend
from rats_ros.models.preprocess import qwen_patchify, resize_normalize, smart_resize, upload

PROMPT = "Describe what's happening in this video."
TINY = ["tiny-random", "tiny-random-qwen2_5_vl", "tiny-random-qwen3_vl"]




def frames(seed=0, t=16, h=48, w=64):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=TINY)
def backend(request, model_cache):
    return load_backend(request.param)


def test_tiny_sizes_and_encode_shapes(backend):
    n = backend.num_visual_tokens(16, 48, 64)
    visual = backend.encode_clip(frames())
    assert visual.tokens.shape == (n, backend.hidden_size)
    groups, rows, cols = backend.token_grid(16, 48, 64)
    assert groups * rows * cols == n
    if backend.name == "tiny-random":
        assert (backend.tokens_per_frame, n, groups) == (16, 256, 16)
    elif backend.name == "tiny-random-qwen2_5_vl":  # 48x64 -> 48x64 px, 8 px patches merged 2x2
        assert (backend.frames_per_group, n, groups, rows, cols) == (2, 96, 8, 3, 4)
    else:  # Qwen3-VL: 16 px patches merged 2x2 -> 32 px per token, 48x64 -> 64x64 px
        assert (backend.frames_per_group, n, groups, rows, cols) == (2, 32, 8, 2, 2)
        assert visual.deepstack.shape == (2, *visual.tokens.shape)
    if backend.name != "tiny-random-qwen3_vl":
        assert visual.deepstack is None
    assert backend.readout_layers == [0, 2, 3, 5] and backend.num_layers == 8


def test_odd_frame_count_and_other_sizes(backend):
    visual = backend.encode_clip(frames(t=5, h=40, w=30))
    assert visual.count == backend.num_visual_tokens(5, 40, 30)


def test_llava_visual_tokens_are_pooled_projector_outputs(model_cache):
    """encode_clip equals the model's own video features minus the trailing image_newline."""
    backend = load_backend("tiny-random")
    pixels = frames(t=3)
    with torch.no_grad():
        x = resize_normalize(upload(pixels, "cpu"), 64, 64, backend.norm, torch.float32)
        ref = backend.model.model.get_video_features(pixel_values_videos=x[None]).pooler_output
    assert torch.equal(backend.encode_clip(pixels).tokens, ref[0, :-1])
    assert torch.equal(ref[0, -1], backend.model.model.image_newline)


def test_prompt_layout_llava_appends_newline_after_clip(model_cache):
    backend = load_backend("tiny-random")
    visual, memory = backend.encode_clip(frames(t=2)), torch.randn(5, backend.hidden_size)
    prefix, suffix = backend.prompt_layout(PROMPT)
    inputs = backend.build_inputs(memory, visual, PROMPT)
    embeds, key_start = inputs.embeds, inputs.key_start
    p, n = prefix.numel(), visual.count
    assert inputs.span == (key_start, key_start + n) and inputs.deepstack is None
    assert key_start == p + 5
    assert embeds.shape[1] == p + 5 + n + 1 + suffix.numel()
    assert torch.equal(embeds[0, p:p + 5], memory)
    assert torch.equal(embeds[0, key_start:key_start + n], visual.tokens)
    assert torch.equal(embeds[0, key_start + n], backend.model.model.image_newline)
    text = backend.tokenizer.decode(prefix.tolist() + suffix.tolist())
    assert text == f"<|im_start|>user\n\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"


def test_prompt_layout_qwen_wraps_clip_in_vision_tokens(model_cache):
    backend = load_backend("tiny-random-qwen2_5_vl")
    prefix, suffix = backend.prompt_layout(PROMPT)
    assert prefix[-1] == backend.vision_start and suffix[0] == backend.vision_end
    visual = backend.encode_clip(frames(t=2))
    inputs = backend.build_inputs(torch.empty(0, 0), visual, PROMPT)
    assert inputs.key_start == prefix.numel()
    assert inputs.embeds.shape[1] == prefix.numel() + visual.count + suffix.numel()


def test_qwen_patchify_matches_reference_processor_layout():
    """Spatial/channel layout against the HF (PIL) image patchify, temporal order by hand."""
    image = torch.randn(3, 32, 48)
    ours, grid = qwen_patchify(image[None].expand(2, -1, -1, -1), 8, 2, 2)
    ref, gh, gw = Qwen2VLImageProcessorPil.patchify(None, image.numpy(), 8, 2, 2)
    assert grid == (1, gh, gw) == (1, 4, 6)
    assert np.array_equal(ours.numpy(), ref)
    video = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 3, 16, 16)
    flat, grid = qwen_patchify(video, 8, 2, 2)  # 3 frames: the last is repeated
    assert grid == (2, 2, 2)
    per_t = flat.view(8, 3, 2, 64)  # (patches, C, temporal, p*p)
    assert per_t[:4, :, 0].eq(0).all() and per_t[:4, :, 1].eq(1).all()
    assert per_t[4:, :, 0].eq(2).all() and per_t[4:, :, 1].eq(2).all()


@pytest.mark.parametrize("hw", [(48, 64), (480, 640), (30, 5000), (10, 1900), (1080, 1920)])
def test_smart_resize_matches_reference(hw):
    assert smart_resize(*hw, 28, 128 * 28 * 28, 768 * 28 * 28) == hf_smart_resize(
        *hw, factor=28, min_pixels=128 * 28 * 28, max_pixels=768 * 28 * 28)


@pytest.mark.parametrize("frames", [2, 15, 16, 64])
@pytest.mark.parametrize("hw", [(20, 40), (48, 64), (480, 640), (1080, 1920), (2160, 3840)])
@pytest.mark.parametrize("bounds", [(4096, 25165824), (32 * 32, 64 * 64)])  # published; tiny
def test_qwen3_clip_budget_resize_matches_reference(frames, hw, bounds):
    """Qwen3-VL's video processor bounds the whole clip's pixels (frames x H x W)."""
    assert smart_resize(*hw, 32, *bounds, frames=frames, temporal=2) == hf_qwen3_smart_resize(
        frames, *hw, temporal_factor=2, factor=32, min_pixels=bounds[0], max_pixels=bounds[1])


def test_normalisation_reads_checkpoint_constants(backend):
    white = torch.full((1, 3, 8, 8), 255.0)
    out = resize_normalize(white, 8, 8, backend.norm, torch.float32)
    expected = (1 - torch.tensor(backend.norm.mean)) / torch.tensor(backend.norm.std)
    assert torch.allclose(out[0, :, 0, 0], expected)
    pre = json.loads((backend.directory / "preprocessor_config.json").read_text())
    assert list(backend.norm.mean) == pre["image_mean"]


def test_bad_pixels_raise_frame_error(backend):
    with pytest.raises(FrameError, match="uint8"):
        backend.encode_clip(np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(FrameError, match="T >= 1"):
        backend.encode_clip(np.zeros((0, 8, 8, 3), dtype=np.uint8))


def test_text_helpers(backend):
    answer = backend.generate("What happened in the kitchen?", 6)
    assert isinstance(answer, str)
    assert answer == backend.generate("What happened in the kitchen?", 6)
    assert backend.count_tokens("a person walks") == len(
        backend.tokenizer("a person walks", add_special_tokens=False)["input_ids"])
    rows = backend.embed_text(["a person walks", "", "robot"])
    assert rows.shape == (3, backend.hidden_size) and rows.dtype == np.float32
    assert not rows[1].any() and rows[0].any()
    ids = backend.tokenizer("robot", add_special_tokens=False)["input_ids"]
    table = backend.model.get_input_embeddings().weight.detach()
    assert np.allclose(rows[2], table[ids].mean(0).numpy())


def test_from_pretrained_round_trip(backend, tmp_path):
    """save_pretrained -> load_backend(directory) gives identical tokens, captions, scores."""
    backend.model.save_pretrained(tmp_path)
    backend.tokenizer.save_pretrained(tmp_path)
    for name in ("preprocessor_config.json", "generation_config.json"):
        (tmp_path / name).write_bytes((backend.directory / name).read_bytes())
    copy = load_backend(str(tmp_path))
    assert type(copy) is type(backend)
    pixels, memory = frames(3), torch.randn(7, backend.hidden_size)
    visual = backend.encode_clip(pixels)
    assert torch.equal(copy.encode_clip(pixels).tokens, visual.tokens)
    a = backend.caption(memory, visual, PROMPT, 10, True)
    b = copy.caption(memory, visual, PROMPT, 10, True)
    assert a.token_ids == b.token_ids and a.text == b.text
    assert torch.equal(a.scores, b.scores)


def test_missing_path_and_unknown_type_raise_model_error(model_cache, tmp_path):
    with pytest.raises(ModelError, match="local checkpoint directory"):
        load_backend(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="not found locally"):
        load_backend("nobody/not-a-cached-model")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="'bert', which is not supported.*llava_onevision"):
        load_backend(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="config.json is missing"):
        load_backend(str(empty))


def test_bad_config_raises_config_error():
    with pytest.raises(ConfigError, match="dtype"):
        BackendConfig(model="tiny-random", dtype="float64")
    with pytest.raises(ConfigError, match="device"):
        BackendConfig(model="tiny-random", device="tpu")
    with pytest.raises(ConfigError, match="readout_layers"):
        BackendConfig(model="tiny-random", readout_layers=0)
    assert BackendConfig(model="x", readout_layers=[1, 2]).readout_layers == (1, 2)


def test_explicit_readout_layers(model_cache):
    assert load_backend("tiny-random", readout_layers=(1, 7)).readout_layers == [1, 7]
    with pytest.raises(ModelError, match="beyond the model's 8 layers"):
        load_backend("tiny-random", readout_layers=(8,))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_gpu_raises_model_error(model_cache):
    with pytest.raises(ModelError, match="CUDA is not available"):
        load_backend("tiny-random", device="cuda")


def test_tiny_build_is_atomic_concurrent_and_deterministic(tmp_path, monkeypatch):
    """Two threads building into an empty cache get one complete checkpoint, byte-identical to
    a build in another cache (fixed seed, deterministic tokenizer training)."""
    from rats_ros.models import tiny

    results, errors = [], []

    def build():
        try:
            results.append(tiny.ensure_tiny("tiny-random-qwen2_5_vl"))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(exc)

    monkeypatch.setenv("RATS_ROS_CACHE", str(tmp_path / "a"))
    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results[0] == results[1] == tmp_path / "a" / "tiny-random-qwen2_5_vl"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        ".tiny-random-qwen2_5_vl.lock", "tiny-random-qwen2_5_vl"]  # no temporary left over
    monkeypatch.setenv("RATS_ROS_CACHE", str(tmp_path / "b"))
    other = tiny.ensure_tiny("tiny-random-qwen2_5_vl")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (other / name).read_bytes() == (results[0] / name).read_bytes()
    (other / "rats_ros_tiny.json").write_text('{"version": 0}')  # an older builder's copy
    assert tiny.ensure_tiny("tiny-random-qwen2_5_vl") == other
    assert json.loads((other / "rats_ros_tiny.json").read_text())["version"] == tiny.BUILD_VERSION
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        ".tiny-random-qwen2_5_vl.lock", "tiny-random-qwen2_5_vl"]


def test_hugging_face_id_resolves_from_the_local_cache_only(backend, tmp_path, monkeypatch):
    """A checkpoint laid out as in the HF hub cache loads by its id, offline."""
    import huggingface_hub.constants

    snapshot = tmp_path / "models--rats--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for path in backend.directory.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (tmp_path / "models--rats--tiny" / "refs").mkdir()
    (tmp_path / "models--rats--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    loaded = load_backend("rats/tiny")
    assert loaded.directory == snapshot and type(loaded) is type(backend)
