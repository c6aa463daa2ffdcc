"""End to end: a bag written here, replayed by replay.py, captioned by the node, asked about.

Stream: 48 frames at 4 Hz (12 s of stream time from t = 100 s). The node samples 2 fps and makes
clips of 4 sampled frames, so the bag gives exactly 6 clips of 2 s each.
"""
import signal

import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from helpers import wait_for
from rats_ros.msg import Caption
from rats_ros.srv import AskVideo
from ros_fixtures import (  # noqa: F401
    NS,
    assert_no_traceback,
    diagnostics_values,
    ros_client,
    scene_frames,
    start_node,
    start_replay,
    time_ns,
)
from sensor_msgs.msg import Image

from rats_ros.io.bags import write_image_bag

pytestmark = pytest.mark.ros
FRAMES = scene_frames(48, fps=4.0, start_s=100.0)
CLIPS = 6


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("e2e") / "bag"
    write_image_bag(path, FRAMES, topic="/camera/image_raw", frame_id="front_camera")
    return path


@pytest.fixture(scope="module")
def topics(ros_client):  # noqa: F811
    """The node's outputs, subscribed to BEFORE the node starts.

    A volatile publisher delivers only to subscriptions it has matched. One made while the node
    runs is matched when discovery reaches the node, which took seconds on a loaded machine
    (the node captioned clips 0-5, the test received 2-5). Made before, the node learns of it
    while it loads the model, and its publishers match it as they are created.
    """
    return {"captions": ros_client.collect(Caption, "/captions"),
            "overlays": ros_client.collect(Image, "/rats_stream/selection_overlay"),
            "diagnostics": ros_client.collect(DiagnosticArray, "/diagnostics")}


@pytest.fixture(scope="module")
def node(tmp_path_factory, domain_id, model_cache, topics):
    process = start_node(tmp_path_factory.mktemp("node"), domain_id, publish_overlay=True,
                         qos_reliability="reliable", remaps={"image": "/camera/image_raw"})
    yield process
    if process.alive():
        process.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def streamed(node, topics, bag, domain_id, ros_client):  # noqa: F811
    """Replay the bag once; ask a question while it streams. :returns: what was received."""
    captions, overlays, diagnostics = (topics[k] for k in ("captions", "overlays", "diagnostics"))
    replay = start_replay(bag, domain_id, "--rate", "2", "--wait-subscribers", "1")
    wait_for(lambda: len(captions) >= 2, timeout=60)
    during = ros_client.call(AskVideo, "/ask_video", AskVideo.Request(question="What moves?"),
                             retry_after=10.0)
    seen_when_asked = len(captions)
    _, err = replay.communicate(timeout=60)
    assert replay.returncode == 0, err
    _wait_for_captions(captions, diagnostics, node, err, ros_client)
    return {"captions": captions, "overlays": overlays, "diagnostics": diagnostics,
            "during": during, "seen_when_asked": seen_when_asked}


def _wait_for_captions(captions, diagnostics, node, replay_err, client):
    """Wait for all clips' captions; on a timeout, show the node's side of the story."""
    try:
        wait_for(lambda: len(captions) >= CLIPS, timeout=60)
    except AssertionError as missing:
        last = diagnostics_values(diagnostics[-1]) if diagnostics else "none received"
        raise AssertionError(
            f"captions {[c.clip_index for c in captions]}, replay: {replay_err.strip()!r}, "
            f"client spinning: {client.spinning()}, last diagnostics: {last}; "
            f"node log:\n{node.log()[-4000:]}") from missing


def test_every_clip_is_captioned_with_consistent_stamps(streamed):
    captions = streamed["captions"]
    assert len(captions) == CLIPS
    assert [c.clip_index for c in captions] == list(range(CLIPS))
    first, last = FRAMES[0].stamp_ns, FRAMES[-1].stamp_ns
    previous_end = 0
    for caption in captions:
        start, end = time_ns(caption.start), time_ns(caption.end)
        assert first <= start <= end <= last
        assert start > previous_end
        previous_end = end
        assert time_ns(caption.header.stamp) == end
        assert caption.header.frame_id == "front_camera"
        assert caption.model == "tiny-random" and caption.frames == 4
        assert 1 <= caption.kept_tokens < caption.visual_tokens
        assert caption.processing_time > 0 and caption.text
    assert (time_ns(captions[0].start), time_ns(captions[-1].end)) == (100 * NS, 111_500_000_000)
    assert [c.memory_tokens for c in captions[:2]] == [0, captions[0].kept_tokens]


def test_question_asked_while_streaming_sees_only_captions_so_far(streamed):
    during = streamed["during"]
    assert during.success, during.message
    assert during.answer and during.processing_time > 0
    assert 1 <= len(during.evidence) <= streamed["seen_when_asked"] + 1
    indices = [c.clip_index for c in during.evidence]
    assert indices == sorted(indices)


def test_question_with_a_window_gets_evidence_inside_it(streamed, ros_client):  # noqa: F811
    captions = streamed["captions"]
    since, until = captions[2].start, captions[4].end
    response = ros_client.call(AskVideo, "/ask_video", AskVideo.Request(
        question="What happened in the middle?", since=since, until=until, max_captions=0))
    assert response.success, response.message
    assert [c.clip_index for c in response.evidence] == [2, 3, 4]
    for caption in response.evidence:
        assert time_ns(since) <= time_ns(caption.start) <= time_ns(caption.end) <= time_ns(until)
        assert caption.text == captions[caption.clip_index].text
    everything = ros_client.call(AskVideo, "/ask_video", AskVideo.Request(
        question="Summarise the video.", since=Time(), until=Time(), max_captions=2))
    assert everything.success and 1 <= len(everything.evidence) <= 2


def test_selection_overlay_and_diagnostics_after_the_stream(streamed):
    overlays = streamed["overlays"]
    wait_for(lambda: len(overlays) >= CLIPS, timeout=10)
    assert overlays[0].encoding == "rgb8" and overlays[0].width > 0 and overlays[0].height > 0
    assert len(overlays[0].data) == overlays[0].step * overlays[0].height

    def settled():
        values = diagnostics_values(streamed["diagnostics"][-1])
        return values if values.get("clips_captioned") == str(CLIPS) else None

    values = wait_for(settled, timeout=10)
    # Every sampled frame arrived (the clip stamps above are exact). A skipped in-between frame
    # can be overwritten in the subscription's 5-deep history when other processes starve the
    # node's executor for a moment (sensor-data QoS by design), so the total is a lower bound.
    assert values["sampled_frames"] == str(CLIPS * 4)
    assert len(FRAMES) - 4 <= int(values["frames_received"]) <= len(FRAMES)
    assert values["refused_total"] == "0" and values["dropped_total"] == "0"
    assert float(values["avg_processing_time"]) > 0


def test_ask_node_asks_the_running_node_from_another_process(streamed, domain_id):
    """``rats-ros ask-node`` from another process (another shell): several questions in one
    call, each answered by the node's loaded model, evidence at clock times; a question the node
    refuses is exit 1 with the node's reason, no traceback."""
    import json
    import subprocess
    import sys

    from helpers import ros_env

    command = [sys.executable, "-m", "rats_ros", "ask-node", "--json", "--timeout", "60"]
    done = subprocess.run([*command, "What moves?", "What is there?"], env=ros_env(domain_id),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["question"] for a in answers] == ["What moves?", "What is there?"]
    assert all(a["success"] and a["answer"] and a["evidence"] for a in answers)
    assert all(a["target"] is None for a in answers)  # no "where", and the bag has no poses
    assert answers[0]["evidence"][0]["start"].startswith("1970-01-01")  # the bag's t = 100 s
    refused = subprocess.run([*command, " "], env=ros_env(domain_id), capture_output=True,
                             text=True, timeout=180)
    assert refused.returncode == 1 and not json.loads(refused.stdout)["success"]
    assert_no_traceback(refused.stderr)


def test_sigterm_stops_cleanly(node, streamed):
    code = node.stop(signal.SIGTERM)
    assert code == 0, f"exit code {code}; node log:\n{node.log()[-4000:]}"
    log = node.log()
    assert_no_traceback(log)
    # the console tells the story without ros2 tools: a line per caption, one at shutdown
    for index in range(CLIPS):
        assert f"clip {index} captioned in " in log, log[-3000:]
    assert f"stopping: {CLIPS} clips captioned and stored since start" in log
    assert log.count("has RANDOM weights") == 1  # the config's default model says so, once


def test_use_sim_time_follows_the_bag_clock(tmp_path, bag, domain_id, model_cache,
                                            ros_client):  # noqa: F811
    ns = "/sim"
    captions = ros_client.collect(Caption, f"{ns}/captions")  # before the node: see topics()
    diagnostics = ros_client.collect(DiagnosticArray, "/diagnostics")
    node = start_node(tmp_path, domain_id, use_sim_time=True, qos_reliability="reliable",
                      remaps={"__ns": ns})
    try:
        # rate 2: on a loaded 2-core machine a 4x replay outran the node's image history
        # (reliable, keep-last) and lost frames; stamps and /clock are the bag's either way
        replay = start_replay(bag, domain_id, "--rate", "2", "--clock", "--remap-to",
                              f"{ns}/image", "--wait-subscribers", "1")
        _, err = replay.communicate(timeout=60)
        assert replay.returncode == 0, err
        silent_clock = len(diagnostics)  # /clock stopped with the replay
        _wait_for_captions(captions, diagnostics, node, err, ros_client)
        # diagnostics run on a steady clock: they keep coming while /clock is silent
        wait_for(lambda: len(diagnostics) >= silent_clock + 3, timeout=20)

        def sim_stamped():  # the node's clock, hence its diagnostics stamp, is the bag's time
            stamps = [time_ns(d.header.stamp) for d in diagnostics
                      if d.status and diagnostics_values(d).get("state") == "active"
                      and d.status[0].hardware_id == "cpu"]
            return [s for s in stamps if FRAMES[0].stamp_ns <= s <= FRAMES[-1].stamp_ns + NS]

        assert wait_for(sim_stamped, timeout=10)
        response = ros_client.call(AskVideo, f"{ns}/ask_video",
                                   AskVideo.Request(question="What happened?"), retry_after=10.0)
        assert response.success, response.message
    finally:
        assert node.stop(signal.SIGINT) == 0
    assert_no_traceback(node.log())
