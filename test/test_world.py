"""The synthetic world, its language, the training step's read-out, the committed synthetic-world
checkpoint (loaded through from_pretrained) and `rats-ros eval synthetic`."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from rats_ros.models import load_backend, tiny
from rats_ros.stream.captioner import DEFAULT_PROMPT, RecurrentCaptioner
from rats_ros.tools.cli import main
from rats_ros.world import CHECKPOINT, SYNTHETIC_WORLD, language, scene
from rats_ros.world.evaluate import EVAL_SEED_BASE
from rats_ros.world.model import build_untrained, qa_example
from rats_ros.world.render import MOTIONS, render_frames, token_labels
from rats_ros.world.train import train
from rats_ros.world.trainer import TrainConfig, Trainer


def test_worlds_are_deterministic_and_objects_start_outside():
    a, b = scene.generate(7, 12), scene.generate(7, 12)
    assert a.things == b.things and a.actions == b.actions
    assert all(action.kind in ("absent", "enter") for action in a.actions[0])
    assert len({t.colour for t in a.things}) == len(a.things)  # colours name objects
    first = next(scene.frames(a, 64))
    assert first.image.shape == (64, 64, 3)


def test_captions_parse_back_into_their_facts_and_answers_follow_from_them():
    for seed in range(30):
        world = scene.generate(seed, 20)
        for clip in range(world.clips):
            facts = language.clip_facts(world, clip)
            assert language.parse(language.caption(facts)) == facts
        entered = {f.thing: c for c in reversed(range(world.clips))
                   for f in language.clip_facts(world, c) if f.action == "enter"}
        for q in language.questions(world):
            if q.kind == "first_appearance":
                thing = q.text.split("the ")[1].split(" first")[0]
                seconds = entered[thing] * language.CLIP_SECONDS
                assert q.answer == f"the {thing} first appeared at {seconds:.1f}s"
            if q.kind == "shape":
                colour = q.text.split("the ")[1].split()[0]
                assert q.answer in {f"a {t.name}" for t in world.things if t.colour == colour}
    score = language.CaptionScore()
    facts = language.clip_facts(scene.generate(3, 6), 5)
    score.add(facts, facts)
    assert score.present == score.facts and score.memory == score.memory_facts
    assert score.right == score.stated == len(facts)


def test_memory_qualifiers_need_the_past():
    world = scene.generate(3, 24)
    kinds = {(f.action, f.qualifier) for c in range(world.clips)
             for f in language.clip_facts(world, c)}
    assert ("enter", "first") in kinds and ("still", "stops") in kinds
    assert language.parse("the red square keeps moving left. nonsense.") == [
        language.Fact("red square", "move", "left", "keeps")]


def test_the_world_tokenizer_splits_numbers_as_qwen2_does(tmp_path):
    """A time is the same digit tokens in a caption line and in an answer, so answering can
    copy it; the split is transformers' own Qwen2 pre-tokenizer pattern."""
    assert tiny.QWEN2_SPLIT == PRETOKENIZE_REGEX
    build_untrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    line, answer = tokenizer.tokenize("[256.0s-286.0s]"), tokenizer.tokenize("at 256.0s")
    assert line[1:4] == ["2", "5", "6"] and answer[-6:-3] == ["2", "5", "6"]


def test_the_gpu_renderer_draws_the_pixels_and_labels_of_the_numpy_one():
    worlds = [scene.generate(s, 4) for s in (1, 2)]
    floors = torch.stack([torch.from_numpy(scene.background(w.seed, 128)) for w in worlds])
    frames, owner = render_frames(worlds, 1, floors)
    for b, world in enumerate(worlds):
        np.testing.assert_array_equal(frames[b].numpy(), scene.clip_pixels(world, 1))
        np.testing.assert_array_equal(owner[b, 3].numpy(), scene.masks(world, 1, 3, 128))
    classes = token_labels(worlds, 1, owner, 4)  # (3, B, T * 16)
    assert classes.shape == (3, 2, scene.CLIP_FRAMES * 16)
    assert 0 < (classes[0] > 0).float().mean() < 1
    # every object token carries its object's colour, shape and what it does in clip 1
    assert torch.equal(classes[0] > 0, classes[1] > 0) and torch.equal(classes[0] > 0,
                                                                        classes[2] > 0)
    for b, world in enumerate(worlds):
        for k, thing in enumerate(world.things):
            action = world.actions[1][k]
            ours = classes[0, b] == 1 + list(scene.COLOURS).index(thing.colour)
            if ours.any():
                expected = 1 + MOTIONS.index(action.direction or action.kind)
                assert set(classes[2, b][ours].tolist()) == {expected}


def test_training_reads_out_what_the_captioner_reads_out(tmp_path):
    """The teacher-forced step's read-out (eager attention, batched) equals the backend's
    read-out of greedy captioning over the same tokens, so training memories are the method's."""
    trainer = Trainer(TrainConfig(steps=1), tmp_path / "copy", "cpu")
    trainer.backend.model.eval()
    backend = load_backend(str(tmp_path / "copy"))
    pixels = scene.clip_pixels(scene.generate(5, 4), 2)
    with torch.no_grad():
        visual = backend.encode_clip(pixels)
        memory = torch.randn(8, backend.hidden_size) * 0.05
        out = backend.caption(memory, visual, DEFAULT_PROMPT, 10, readout=True)
        fed = out.token_ids[:-1]  # every generated token but the last is fed back
        encode = trainer.backend._encode
        trainer.backend._encode = lambda text: list(fed) if text == "fed" else encode(text)
        _, kept, scores = trainer.caption_step(torch.from_numpy(pixels)[None], ["fed"],
                                               memory[None])
    torch.testing.assert_close(scores[0], out.scores, rtol=1e-4, atol=1e-7)
    assert kept.shape == (1, 16, backend.hidden_size)


def test_a_few_training_steps_write_a_checkpoint_the_backend_loads(tmp_path):
    config = TrainConfig(steps=3, streams=2, stream_clips=3, qa_batch=2, warmup=1)
    summary = train(config, tmp_path / "out", "cpu", log=lambda line: None)
    assert summary["config"]["steps"] == 3 and np.isfinite(summary["final_caption_loss"])
    backend = load_backend(str(tmp_path / "out"))
    world = scene.generate(EVAL_SEED_BASE, 1)
    caption = RecurrentCaptioner(backend).step(next(scene.clips(world)))
    assert caption.visual_tokens == 256 and caption.kept_tokens == 16
    prompt = qa_example(world, 1, language.Question("Which?", "x", "k"))
    assert prompt.endswith("Question: Which?\nAnswer:") and "[0.0s-30.0s]" in prompt


def test_the_committed_model_loads_by_name_and_sees_who_is_there():
    weights = CHECKPOINT / "model.safetensors"
    assert weights.stat().st_size <= 4 * 1024 * 1024
    assert json.loads((CHECKPOINT / "config.json").read_text())["dtype"] == "float16"
    backend = load_backend(SYNTHETIC_WORLD)
    world = scene.generate(EVAL_SEED_BASE + 1, 4)
    captioner, score = RecurrentCaptioner(backend), language.CaptionScore()
    for clip in scene.clips(world):
        out = captioner.step(clip)
        score.add(language.clip_facts(world, out.clip_index), language.parse(out.text))
    assert score.stated > 0 and score.colours >= 0.9 * score.facts  # measured: all of them


def test_eval_synthetic_prints_one_json_object_per_configuration(capsys):
    code = main(["eval", "synthetic", "--minutes", "1.6", "--selections", "attention,uniform",
                 "--recurrence", "on", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["selection"], r["recurrence"]) for r in rows] == [("attention", True),
                                                                 ("uniform", True)]
    for row in rows:
        assert row["clips"] == 3 and row["questions"] > 0 and row["model"] == SYNTHETIC_WORLD
        assert 0 <= row["kept_on_objects"] <= 1 and 0 <= row["qa"] <= 1
    # attention keeps the tokens that show objects (measured 0.99 vs 0.35 over 30 clips)
    assert rows[0]["kept_on_objects"] > rows[1]["kept_on_objects"]


@pytest.mark.parametrize("argv, message", [
    (["--minutes", "0.1"], "minutes must give"),
    (["--selections", "best"], "selections must be"),
    (["--recurrence", "maybe"], "--recurrence must be"),
    (["--model", "/nonexistent/model"], "not found"),
])
def test_eval_refuses_bad_options_in_one_line(capsys, argv, message):
    code = main(["eval", "synthetic", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_the_checkpoint_directory_is_in_the_package():
    assert Path(CHECKPOINT).parent.name == "world"
    names = {p.name for p in CHECKPOINT.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json"} <= names


def _world_video(path: Path, world) -> None:
    """The world as an MJPG video at 0.5 fps (one frame per sample)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 0.5, (128, 128))
    for frame in scene.frames(world):
        writer.write(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    writer.release()


def test_eval_rvs_answers_each_question_at_its_time_from_earlier_captions(tmp_path, capsys):
    """An RVS-format stream (ReKV's annotation fields) of a synthetic world: predictions in the
    judge's fields, each answered only from clips that ended by its end_time."""
    world = scene.generate(EVAL_SEED_BASE + 7, 4)  # 4 clips of 32 s: ends at 30, 62, 94, 126 s
    _world_video(tmp_path / "w7.avi", world)
    asked = language.questions(world)
    talks = [{"question": asked[0].text, "answer": asked[0].answer, "end_time": 70.0,
              "answer_type": asked[0].kind},
             {"question": "Which object entered first?", "answer": "?", "end_time": 10.0},
             {"question": asked[1].text, "answer": asked[1].answer, "end_time": 500.0}]
    annotations = tmp_path / "ann.json"
    annotations.write_text(json.dumps([{"video_id": "w7", "conversations": talks}]))
    code = main(["eval", "rvs", str(annotations), "--video-root", str(tmp_path), "--model",
                 SYNTHETIC_WORLD, "--out", str(tmp_path / "pred.jsonl")])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert [r["end_time"] for r in rows] == [10.0, 70.0, 500.0]  # in stream order
    assert all({"id", "question", "answer", "pred", "answer_type"} <= set(r) for r in rows)
    early, middle, late = rows
    assert early["pred"] == "" and early["evidence"] == 0 and "no captions" in early["error"]
    assert middle["evidence"] == 2 and middle["evidence_end_s"] <= 70.0 and middle["pred"]
    assert late["evidence"] == 4 and late["answer"] == asked[1].answer


def test_eval_rvs_refuses_malformed_annotations_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"video_id": "x", "conversations": [{"question": "q"}]}]))
    code = main(["eval", "rvs", str(bad), "--model", SYNTHETIC_WORLD])
    err = capsys.readouterr().err
    assert code == 2 and "end_time >= 0" in err and "Traceback" not in err
    bad.write_text(json.dumps([{"video_id": "x", "conversations": []}]))
    code = main(["eval", "rvs", str(bad), "--model", SYNTHETIC_WORLD, "--video-root",
                 str(tmp_path), "--out", str(tmp_path / "p.jsonl")])
    assert code == 2 and "no video for 'x'" in capsys.readouterr().err
