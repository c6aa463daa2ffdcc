"""The ONNX engine: each family's tiny checkpoint exported by ``rats-ros export-onnx`` and run by
ONNX Runtime behind the backend seam gives the torch path's tokens, read-out scores and kept
indices, with memory in front, and its answers; misuse is refused with what to do."""
import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from helpers import wait_for
from lifecycle_msgs.msg import Transition
from rats_ros.msg import Caption
from rats_ros.srv import AskVideo
from ros_fixtures import (  # noqa: F401
    assert_no_traceback,
    ros_client,
    scene_frames,
    start_node,
    start_replay,
)

from rats_ros.errors import ConfigError, ModelError
from rats_ros.io.bags import write_image_bag
from rats_ros.io.sample_scene import write_sample_bag
from rats_ros.models import BackendConfig, load_backend
from rats_ros.models.onnx.manifest import LANGUAGE_INPUTS, LANGUAGE_OUTPUTS, Manifest
from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner
from rats_ros.stream.clips import Clip, Frame
from rats_ros.tools.cli import main

FAMILIES = ["tiny-random", "tiny-random-qwen2_5_vl", "tiny-random-qwen3_vl"]
FRAMES, HEIGHT, WIDTH = 4, 64, 96  # the clip shape every export here is traced for
SECOND = 1_000_000_000


@pytest.fixture(scope="module")
def exports(tmp_path_factory, model_cache):
    """``export(name)``: the export directory of a tiny family, written once through the CLI
    (an export takes ~30 s here)."""
    done = {}

    def export(name: str):
        if name not in done:
            out = tmp_path_factory.mktemp("onnx") / name
            assert main(["export-onnx", name, str(out), "--frames", str(FRAMES),
                         "--height", str(HEIGHT), "--width", str(WIDTH)]) == 0
            done[name] = out
        return done[name]
    return export


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request, exports):
    """``(model name, export directory)``."""
    return request.param, exports(request.param)


def clips(count: int, seed: int = 0) -> list[Clip]:
    rng = np.random.default_rng(seed)
    return [Clip([Frame((100 + 2 * (c * FRAMES + i)) * SECOND,
                        rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
                  for i in range(FRAMES)]) for c in range(count)]


def test_the_manifest_says_what_the_graphs_take_and_give(exported):
    name, out = exported
    manifest = Manifest.read(out)
    backend = load_backend(name)
    assert manifest.readout_layers == list(backend.readout_layers)
    assert manifest.clip_shape == [FRAMES, HEIGHT, WIDTH]
    assert manifest.visual_tokens == backend.num_visual_tokens(FRAMES, HEIGHT, WIDTH)
    assert manifest.deepstack_layers == (2 if name.endswith("qwen3_vl") else 0)
    language = onnx.load(str(out / manifest.language_file), load_external_data=False)
    assert [i.name for i in language.graph.input] == list(LANGUAGE_INPUTS)
    assert [o.name for o in language.graph.output] == list(LANGUAGE_OUTPUTS)
    vision = onnx.load(str(out / manifest.vision_file), load_external_data=False)
    dims = [d.dim_value for d in vision.graph.input[0].type.tensor_type.shape.dim]
    assert dims == manifest.vision_input


def test_a_stream_captioned_by_onnx_runtime_equals_torch(exported):
    """Four clips with the recurrent memory in front: same tokens, same kept indices; and the
    read-out scores of a caption with memory agree to float32 rounding."""
    name, out = exported
    reference = load_backend(name)
    engine = load_backend(name, engine="onnx", engine_dir=str(out))
    assert engine.engine is not None and reference.engine is None
    weights = [sum(p.numel() for p in b.model.parameters()) for b in (engine, reference)]
    assert weights[0] < weights[1] / 2  # the layers the engine runs were released from torch
    config = CaptionerConfig(max_new_tokens=12, keep_ratio=0.25)
    a, b = RecurrentCaptioner(reference, config), RecurrentCaptioner(engine, config)
    for clip in clips(4):
        mine, theirs = b.step(clip), a.step(clip)
        assert mine.token_ids == theirs.token_ids and mine.text == theirs.text
        assert mine.kept_indices == theirs.kept_indices
        assert mine.memory_tokens == theirs.memory_tokens
    assert a.memory.num_tokens > 0
    pixels = clips(1, seed=5)[0].pixels()
    visual = reference.encode_clip(pixels)
    mine_visual = engine.encode_clip(pixels)
    torch.testing.assert_close(mine_visual.tokens, visual.tokens, rtol=1e-4, atol=1e-5)
    assert (mine_visual.deepstack is None) == (visual.deepstack is None)
    if visual.deepstack is not None:
        torch.testing.assert_close(mine_visual.deepstack, visual.deepstack, rtol=1e-4, atol=1e-5)
    memory = a.memory.tokens()
    theirs = reference.caption(memory, visual, "Describe.", 10, readout=True)
    mine = engine.caption(memory, visual, "Describe.", 10, readout=True)
    assert mine.token_ids == theirs.token_ids
    torch.testing.assert_close(mine.scores, theirs.scores, rtol=1e-4, atol=1e-7)


def test_answers_equal_torch(exported):
    name, out = exported
    reference = load_backend(name)
    engine = load_backend(name, engine="onnx", engine_dir=str(out))
    for question in ("What happened first?", "Where did the red square go?"):
        assert engine.generate(question, 24) == reference.generate(question, 24)


def test_a_clip_of_another_shape_is_refused_with_what_to_do(exported):
    name, out = exported
    engine = load_backend(name, engine="onnx", engine_dir=str(out))
    pixels = np.zeros((FRAMES + 2, HEIGHT * 2, WIDTH * 2, 3), np.uint8)
    with pytest.raises(ModelError, match="export again with --frames/--height/--width"):
        engine.encode_clip(pixels)


def test_an_export_of_another_checkpoint_or_none_is_refused(tmp_path, exports):
    with pytest.raises(ModelError, match="rats-ros export-onnx MODEL DIR"):
        load_backend("tiny-random", engine="onnx", engine_dir=str(tmp_path))
    out = tmp_path / "qwen"
    shutil.copytree(exports("tiny-random-qwen2_5_vl"), out)
    with pytest.raises(ModelError, match="not of the checkpoint"):
        load_backend("tiny-random", engine="onnx", engine_dir=str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ModelError, match="export again"):
        load_backend("tiny-random-qwen2_5_vl", engine="onnx", engine_dir=str(out))
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "language.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="ONNX Runtime cannot load"):
        load_backend("tiny-random-qwen2_5_vl", engine="onnx", engine_dir=str(out))


@pytest.mark.parametrize("kwargs, says", [
    ({"engine": "tensorrt"}, "not supported"), ({"engine": "onnx"}, "needs engine_dir")])
def test_engine_options_are_checked(kwargs, says):
    with pytest.raises(ConfigError, match=says):
        BackendConfig(model="tiny-random", **kwargs)


def test_the_cli_captions_a_bag_with_engine_onnx_as_with_torch(tmp_path, capsys, exports):
    out = exports("tiny-random")
    write_sample_bag(tmp_path / "bag", seconds=24.0, fps=2.0, size=(WIDTH, HEIGHT))
    runs = {}
    for engine in ("torch", "onnx"):
        capsys.readouterr()
        code = main(["caption", str(tmp_path / "bag"), "--model", "tiny-random", "--quiet",
                     "--clip-frames", str(FRAMES), "--max-new-tokens", "8", "--engine", engine,
                     "--engine-dir", str(out)])
        assert code == 0
        runs[engine] = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert len(runs["onnx"]) == 3 and runs["onnx"] == runs["torch"]


@pytest.mark.ros
def test_a_node_whose_clips_do_not_fit_the_export_refuses_to_configure(
        tmp_path, domain_id, ros_client, exports):  # noqa: F811
    diagnostics = ros_client.collect(DiagnosticArray, "/diagnostics")
    node = start_node(tmp_path, domain_id, wait_active=False, autostart=False, engine="onnx",
                      engine_dir=str(exports("tiny-random")), clip_frames=FRAMES + 4)
    try:
        node.wait_log("waiting for lifecycle transitions", timeout=60)
        assert not ros_client.change_state(Transition.TRANSITION_CONFIGURE)
        status = wait_for(lambda: next((s for d in diagnostics[-3:] for s in d.status
                                        if s.level == DiagnosticStatus.ERROR), None), timeout=30)
        assert f"export again with --frames {FRAMES + 4}" in status.message, status.message
    finally:
        assert node.stop() == 0
    assert_no_traceback(node.log())


@pytest.mark.ros
def test_the_node_captions_and_answers_with_engine_onnx(tmp_path, domain_id, ros_client,  # noqa: F811
                                                        exports):
    out = exports("tiny-random")
    write_image_bag(tmp_path / "bag", scene_frames(24, fps=4.0, size=(WIDTH, HEIGHT)))
    captions = ros_client.collect(Caption, "/captions")
    node = start_node(tmp_path, domain_id, qos_reliability="reliable", engine="onnx",
                      engine_dir=str(out), clip_frames=FRAMES,
                      remaps={"image": "/camera/image_raw"})
    try:
        node.wait_log("model summary", timeout=5)
        assert f"engine: onnx ({out})" in node.log()
        replay = start_replay(tmp_path / "bag", domain_id, "--topic", "/camera/image_raw",
                              "--rate", "4", "--wait-subscribers", "1")
        assert wait_for(lambda: len(captions) >= 2, timeout=90), node.log()[-2000:]
        replay.communicate(timeout=60)
        answer = ros_client.call(AskVideo, "/ask_video", AskVideo.Request(question="What?"))
        assert answer.success and answer.evidence
    finally:
        assert node.stop() == 0, node.log()[-3000:]
