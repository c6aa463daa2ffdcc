"""rats-ros CLI: caption a real bag and video with the tiny model, store, ask, and error exits."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rats_ros.io.bags import list_image_topics, write_image_bag
from rats_ros.io.sample_scene import sample_scene, write_sample_bag
from rats_ros.recall.store import CaptionStore
from rats_ros.tools.cli import main

ROOT = Path(__file__).resolve().parents[1]
S = 1_000_000_000
START = 1_700_000_000  # sample_scene's first stamp, seconds
FAST = ["--model", "tiny-random", "--max-new-tokens", "6", "--fps", "0.5", "--clip-frames", "4"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def captioned(tmp_path_factory, model_cache):
    """A 24 s sample bag (2 fps) captioned at 0.5 fps, 4 frames per clip, into a store."""
    tmp = tmp_path_factory.mktemp("cli")
    bag, store, out = tmp / "bag", tmp / "captions.db", tmp / "captions.jsonl"
    write_sample_bag(bag, seconds=24.0, fps=2.0, size=(96, 72), storage="mcap")
    code = main(["caption", str(bag), *FAST, "--store", str(store), "--out", str(out)])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return tmp, bag, store, records


def test_caption_writes_one_consistent_json_line_per_clip(captioned):
    _, _, store, records = captioned
    assert [r["clip_index"] for r in records] == [0, 1, 2]
    assert [(r["start"], r["end"]) for r in records] == [
        (START + 0.0, START + 6.0), (START + 8.0, START + 14.0), (START + 16.0, START + 22.0)]
    keys = {"clip_index", "start", "end", "text", "frames", "visual_tokens", "kept_tokens",
            "memory_tokens", "processing_time"}
    for index, record in enumerate(records):
        assert set(record) == keys
        assert record["frames"] == 4 and isinstance(record["text"], str)
        assert record["kept_tokens"] == max(1, round(record["visual_tokens"] / 16))
        assert record["memory_tokens"] == index * record["kept_tokens"]  # FIFO grows per clip
        assert record["processing_time"] > 0
    with CaptionStore(store) as db:
        rows = db.query()
        assert [(r.clip_index, r.start_ns, r.end_ns, r.text) for r in rows] == [
            (r["clip_index"], round(r["start"] * S), round(r["end"] * S), r["text"])
            for r in records]
        assert all(r.model == "tiny-random" for r in rows)
        embedded = db.rows_after(0, 10)
        assert all(r.embedding is not None and r.embedder.startswith("sentence:")
                   for r in embedded)


def test_ask_json_answers_with_evidence_from_the_window(captioned, capsys):
    _, _, store, records = captioned
    code, out, _ = run_cli(capsys, "ask", "--store", store, "--json", "--max-new-tokens", "4",
                           "what moved?")
    answer = json.loads(out)
    assert code == 0 and answer["success"] is True and answer["message"] == ""
    assert isinstance(answer["answer"], str) and answer["processing_time"] > 0
    by_index = {r["clip_index"]: r for r in records}
    keys = ("clip_index", "start", "end", "text")
    assert answer["evidence"] and all(
        {k: e[k] for k in keys} == {k: by_index[e["clip_index"]][k] for k in keys}
        and set(e) == {*keys, "when"} for e in answer["evidence"])
    code, out, _ = run_cli(capsys, "ask", "--store", store, "--json", "--max-new-tokens", "4",
                           "--since", START + 7, "--until", START + 15, "what moved?")
    assert code == 0
    assert [e["clip_index"] for e in json.loads(out)["evidence"]] == [1]


def test_second_run_continues_clip_indices_on_a_video_without_recurrence(captioned, capsys):
    tmp, _, store, _ = captioned
    video = tmp / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 2.0, (96, 72))
    for frame in sample_scene(seconds=10.0, fps=2.0, size=(96, 72)):
        writer.write(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    writer.release()
    code, out, _ = run_cli(capsys, "caption", video, *FAST, "--store", store,
                           "--no-recurrence", "--embedder", "none", "--selection", "uniform")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [r["clip_index"] for r in records] == [3, 4]  # continues after the stored clips
    assert [(r["start"], r["end"], r["frames"]) for r in records] == [(0.0, 6.0, 4),
                                                                       (8.0, 8.0, 1)]
    assert all(r["memory_tokens"] == 0 for r in records)
    with CaptionStore(store) as db:
        assert db.count() == 5


def test_input_errors_exit_2_with_a_message(tmp_path, capsys):
    code, out, err = run_cli(capsys, "caption", tmp_path / "missing", *FAST)
    assert (code, out) == (2, "") and "does not exist" in err
    write_image_bag(tmp_path / "empty", [])
    code, _, err = run_cli(capsys, "caption", tmp_path / "empty", *FAST)
    assert code == 2 and "has no messages" in err
    write_sample_bag(tmp_path / "corrupt", seconds=4.0)
    (data,) = (tmp_path / "corrupt").glob("*.db3")
    data.write_bytes(b"\0garbage" * 512)
    code, _, err = run_cli(capsys, "caption", tmp_path / "corrupt", *FAST)
    assert code == 2 and "InputError" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "caption", tmp_path / "corrupt", *FAST[:-4], "--fps", "0",
                           "--clip-frames", "4")
    assert code == 2 and "fps must be" in err


def test_a_missing_checkpoint_is_refused_with_exit_2(tmp_path, capsys):
    write_sample_bag(tmp_path / "bag", seconds=2.0, size=(32, 24))
    code, _, err = run_cli(capsys, "caption", tmp_path / "bag", "--model",
                           tmp_path / "no-such-checkpoint")
    assert code == 2 and "ModelError" in err and "not found" in err


def test_ask_errors_still_print_json_and_exit_non_zero(captioned, tmp_path, capsys):
    _, _, store, _ = captioned
    code, out, _ = run_cli(capsys, "ask", "--store", store, "--json", "--since", START + 20,
                           "--until", START + 10, "anything?")
    answer = json.loads(out)
    assert code == 2 and answer["success"] is False and "inverted" in answer["message"]
    assert answer["answer"] == "" and answer["evidence"] == []
    code, out, _ = run_cli(capsys, "ask", "--store", tmp_path / "none.db", "--json", "hi?")
    assert code == 2 and "does not exist" in json.loads(out)["message"]
    code, out, err = run_cli(capsys, "ask", "--store", store, "--since", START + 100, "hi?")
    assert code == 2 and out == "" and "no captions in the window" in err


def test_sample_bag_console_script_and_replay_dispatch(tmp_path, capsys):
    script = Path(sys.executable).parent / "rats-ros"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "rats_ros"]
    done = subprocess.run([*command, "sample-bag", str(tmp_path / "bag"), "--scene", "shapes",
                           "--seconds", "3", "--fps", "4", "--storage", "mcap", "--compressed"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert list_image_topics(tmp_path / "bag") == [
        ("/camera/image_raw", "sensor_msgs/msg/CompressedImage", 12)]
    code, _, err = run_cli(capsys, "sample-bag", tmp_path / "bag")  # exists already
    assert code == 2 and "cannot write bag" in err
    shutil.rmtree(tmp_path / "bag")
    code, _, err = run_cli(capsys, "replay", tmp_path / "bag")  # handed to rats_ros.ros.replay
    assert code != 0 and "does not exist" in err


def test_a_bag_of_undecodable_depth_images_exits_2_with_the_reason(tmp_path, capsys):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    Image, Header, Time = (store.types[t] for t in (
        "sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    with Writer(tmp_path / "depth", version=9) as writer:
        connection = writer.add_connection("/depth", "sensor_msgs/msg/Image", typestore=store)
        for i in range(4):
            msg = Image(header=Header(stamp=Time(sec=100 + i, nanosec=0), frame_id="d"),
                        height=8, width=8, encoding="16UC1", is_bigendian=0, step=16,
                        data=np.zeros(128, np.uint8))
            writer.write(connection, (100 + i) * S, store.serialize_cdr(msg, msg.__msgtype__))
    code, out, err = run_cli(capsys, "caption", tmp_path / "depth", *FAST, "--quiet")
    assert (code, out) == (2, "") and "no clip could be made" in err and "16UC1" in err


@pytest.mark.parametrize("window", [["--since", "nan"], ["--until", "inf"], ["--since", "1e300"],
                                    ["--until", "-1"], ["--since", "yesterday"],
                                    ["--now", "2 parsecs"], ["--timezone", "Mars/Olympus"]])
def test_ask_refuses_non_finite_or_absurd_times_with_exit_2(captioned, window, capsys):
    _, _, store, _ = captioned
    code, out, err = run_cli(capsys, "ask", "what?", "--store", store, *window)
    assert (code, out) == (2, "") and ("seconds" in err or "IANA" in err), err
    assert "Traceback" not in err


def test_ask_takes_durations_and_iso_times_and_prints_clock_times(captioned, capsys):
    """The sample bag's stamps are 2023-11-14 (epoch 1.7e9): asked a day later, the evidence
    reads as clock times with their age."""
    _, _, store, _ = captioned
    now = "2023-11-15T22:13:20+00:00"  # one day after the bag's first stamp
    code, out, err = run_cli(capsys, "ask", "What happened?", "--store", store, "--json",
                             "--max-new-tokens", "2", "--now", now, "--since", "2d",
                             "--timezone", "UTC")
    assert code == 0, err
    evidence = json.loads(out)["evidence"]
    assert evidence and evidence[0]["when"].startswith("2023-11-14 22:13:")
    assert evidence[0]["when"].endswith("UTC (23 h 59 min ago)")
    code, out, err = run_cli(capsys, "ask", "What happened?", "--store", store, "--json",
                             "--max-new-tokens", "2", "--now", now, "--since", "2h")
    assert code == 2 and "no captions in the window" in json.loads(out)["message"]


def test_caption_checks_out_before_loading_the_model(tmp_path, capsys):
    write_sample_bag(tmp_path / "bag", seconds=2.0, size=(32, 24))
    code, _, err = run_cli(capsys, "caption", tmp_path / "bag", "--model", "no-such-model",
                           "--out", tmp_path)
    assert code == 2 and "--out" in err and "ModelError" not in err


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root (CI runs as root)")
def test_ask_answers_from_a_store_on_a_read_only_mount(captioned, tmp_path, capsys):
    """Before: "unable to open database file" (the store was opened for writing)."""
    _, _, store, _ = captioned
    source, readonly = tmp_path / "source", tmp_path / "readonly"
    source.mkdir()
    readonly.mkdir()
    shutil.copy(store, source / "captions.db")
    subprocess.run(["mount", "--bind", str(source), str(readonly)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(readonly)], check=True)
        with pytest.raises(OSError):
            (readonly / "probe").write_text("")  # really read-only
        code, out, err = run_cli(capsys, "ask", "What happened?", "--store",
                                 readonly / "captions.db", "--max-new-tokens", "4", "--json")
        answer = json.loads(out)
        assert code == 0 and answer["success"] and answer["evidence"], err
    finally:
        subprocess.run(["umount", str(readonly)], check=True)


def test_a_bag_of_two_cameras_and_odometry_captions_each_camera_with_poses(tmp_path, capsys,
                                                                          model_cache):
    """Every image topic is its own camera (own stream and clip indices), each caption gets the
    odometry pose nearest its clip's end, and ask filters by camera and by place."""
    from rats_ros.io.bag_streams import write_camera_bag
    from rats_ros.stream.poses import Pose

    def frames(seed):
        return [f for f in sample_scene(seconds=16.0, fps=1.0, size=(96, 72), seed=seed)]

    poses = [Pose(START * S + i * S // 4, x=i / 4, y=0.0, z=0.0, frame="odom")
             for i in range(4 * 16)]
    bag, store = tmp_path / "bag", tmp_path / "captions.db"
    write_camera_bag(bag, {"/front/image_raw": frames(1), "/rear/image_raw": frames(2)}, poses)
    code, out, err = run_cli(capsys, "caption", bag, *FAST, "--pose-topic", "/odom",
                             "--store", store, "--quiet")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted((r["camera"], r["clip_index"]) for r in records) == [
        ("front", 0), ("front", 1), ("rear", 0), ("rear", 1)]
    for record in records:  # x = seconds since the first stamp, in odom
        assert record["pose"]["frame"] == "odom"
        assert record["pose"]["x"] == pytest.approx(record["end"] - START, abs=0.25)
    with CaptionStore(store, "default", read_streams=("default/front", "default/rear")) as db:
        assert db.count() == 4
    code, out, err = run_cli(capsys, "ask", "What is there?", "--store", store, "--json",
                             "--cameras", "rear", "--max-new-tokens", "4")
    answer = json.loads(out)
    assert code == 0 and answer["success"], err
    assert {e["camera"] for e in answer["evidence"]} == {"rear"}
    first_end = min(r["end"] for r in records) - START
    code, out, err = run_cli(capsys, "ask", "Where?", "--store", store, "--json", "--near",
                             f"{first_end},0", "--radius", "1", "--max-new-tokens", "4")
    answer = json.loads(out)
    assert code == 0 and answer["success"], err
    assert len(answer["evidence"]) == 2  # clip 0 of each camera
    assert all(abs(e["pose"]["x"] - first_end) <= 1 for e in answer["evidence"])
    assert answer["target"]["pose"]["frame"] == "odom"  # "Where?": a pose of the evidence
    assert answer["target"]["pose"] in [e["pose"] for e in answer["evidence"]]
    with pytest.raises(SystemExit) as refused:
        main(["ask", "Where?", "--store", str(store), "--near", "nan,0"])
    assert refused.value.code == 2 and "X,Y or X,Y,Z" in capsys.readouterr().err


def test_one_exit_code_rule_across_commands(tmp_path, capsys):
    """Bad input or settings are exit 2 for every command, and the message names the
    command's own option, not a node parameter."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a store, not a bag\n")
    code, _, err = run_cli(capsys, "ask", "--store", notes, "what?")
    assert code == 2 and "not a caption store" in err and "store_path" not in err
    code, _, err = run_cli(capsys, "caption", notes, "--model", "tiny-random")
    assert code == 2 and "neither a rosbag2 bag nor a video" in err
    code, _, err = run_cli(capsys, "replay", notes)
    assert code == 2 and "Traceback" not in err


def test_the_default_sample_bag_is_a_world_the_bundled_model_captions(tmp_path, capsys):
    """``rats-ros sample-bag`` writes what the demo replays: synthetic-world captions it in its
    own grammar (object, action), not word salad; --help gives every default."""
    from rats_ros.world import language

    code, out, _ = run_cli(capsys, "sample-bag", tmp_path / "bag", "--clips", "2")
    assert code == 0 and "32 frames" in out
    code, out, _ = run_cli(capsys, "caption", tmp_path / "bag", "--model", "synthetic-world",
                           "--quiet")
    assert code == 0
    captions = [json.loads(line)["text"] for line in out.splitlines()]
    assert len(captions) == 2
    for text in captions:  # every sentence parses as a fact of the world's grammar
        assert language.parse(text), text
    with pytest.raises(SystemExit):
        main(["sample-bag", "--help"])
    assert "(default: world)" in capsys.readouterr().out


@pytest.mark.parametrize("command, shown", [
    (["caption"], "Frames sampled per second of stream time (header stamps); the paper uses "
                  "0.5 or 1. (default: 0.5)"),
    (["ask"], "Token budget of the captions given to the LLM for one answer (paper: 10K). "
              "(default: 10000)"),
    (["check-model"], "(default: 480)"), (["eval", "synthetic"], "(default: 16"),
    (["sample-bag"], "(default: world)"), (["export-onnx"], "(default: 16)")])
def test_every_command_help_gives_descriptions_and_defaults(capsys, command, shown):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0 and shown in text, text


def test_doctor_says_what_is_usable_and_what_installs_the_rest(capsys):
    code, out, _ = run_cli(capsys, "doctor", "--json")
    parts = {c["part"]: c for c in map(json.loads, out.splitlines())}
    assert code == 0  # torch, transformers and ROS 2 are here
    assert parts["transformers"]["state"] == "ok" and parts["ROS 2 (rclpy, msgs)"]["state"] == "ok"
    expected = "ok" if __import__("torch").cuda.is_available() else "off"
    assert parts["torch / CUDA"]["state"] == expected
    assert "CPUExecutionProvider" in parts["onnxruntime"]["detail"]
    hidden = subprocess.run([sys.executable, "-c", (
        "import sys; sys.modules['psycopg'] = None; sys.modules['onnxruntime'] = None\n"
        "from rats_ros.tools.cli import main; sys.exit(main(['doctor']))")],
        capture_output=True, text=True, timeout=120)
    assert hidden.returncode == 0, hidden.stderr  # optional parts missing: reported, exit 0
    assert "psycopg                missing" in hidden.stdout
    assert "pip install 'psycopg[binary]'" in hidden.stdout
    assert "pip install onnxruntime" in hidden.stdout


def test_cli_options_that_are_node_parameters_take_the_nodes_default_and_choices():
    """One definition: a CLI option that means a node parameter is built from its Spec."""
    from rats_ros.settings import SPECS_BY_NAME
    from rats_ros.tools.cli import build_parser

    shared = {"caption": {"fps": "fps", "clip_frames": "clip_frames", "keep_ratio": "keep_ratio",
                          "memory_clips": "memory_clips", "selection": "selection",
                          "max_new_tokens": "max_caption_tokens", "max_side": "max_image_side",
                          "device": "device", "dtype": "dtype", "engine": "engine",
                          "weights": "weights", "stream_id": "stream_id"},
              "ask": {"embedder": "embedder", "context_tokens": "context_tokens",
                      "max_new_tokens": "max_answer_tokens", "time_format": "time_format",
                      "timezone": "timezone", "device": "device", "engine_dir": "engine_dir"}}
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for command, options in shared.items():
        actions = {a.dest: a for a in subparsers.choices[command]._actions}
        for dest, name in options.items():
            spec = SPECS_BY_NAME[name]
            assert actions[dest].default == spec.default, (command, dest)
            if (command, dest) != ("caption", "embedder"):  # caption's adds "none"
                assert tuple(actions[dest].choices or ()) == spec.choices, (command, dest)
