"""Faults found by a hostile tryout, reproduced with real node processes over DDS on loopback:
lifecycle transitions while a question is answered, many questions at once, a broken checkpoint.
"""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from helpers import png_bomb, wait_for
from lifecycle_msgs.msg import Transition
from rats_ros.msg import Caption
from rats_ros.srv import AskVideo
from rclpy.qos import QoSProfile
from ros_fixtures import (  # noqa: F401
    FAST_PARAMS,
    assert_no_traceback,
    diagnostics_values,
    ros_client,
    scene_frames,
    start_node,
    start_replay,
)
from safetensors.torch import load_file, save_file
from sensor_msgs.msg import CompressedImage

from rats_ros.io.bags import write_image_bag
from rats_ros.io.images import encode_compressed
from rats_ros.models import load_backend, resolve_model
from rats_ros.testing import published

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "bag"
    write_image_bag(path, scene_frames(24, fps=4.0, start_s=100.0))
    return path


@pytest.fixture(scope="module")
def endless_model(tmp_path_factory):
    """``tiny-random`` whose language-model head can never pick an end token (their rows are
    zero: logit 0 against ~500 random logits), so every answer runs to ``max_answer_tokens``.
    A long answer in flight is then certain, not a matter of where random weights emit EOS
    (CI once finished a 400-token budget within a second)."""
    path = tmp_path_factory.mktemp("endless") / "model"
    shutil.copytree(resolve_model("tiny-random"), path)
    backend = load_backend(str(path))
    end_ids = sorted(backend.eos_ids)
    weights = load_file(path / "model.safetensors")
    weights["language_model.lm_head.weight"][end_ids] = 0.0
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    assert end_ids and not (load_file(path / "model.safetensors")
                            ["language_model.lm_head.weight"][end_ids].any())
    return path


def captioned_node(tmp_path, bag, domain_id, ros_client, **params):  # noqa: F811
    """A node that has stored at least two captions (so questions run the model)."""
    captions = ros_client.collect(Caption, "/captions")
    node = start_node(tmp_path, domain_id, qos_reliability="reliable",
                      remaps={"image": "/camera/image_raw"}, **params)
    replay = start_replay(bag, domain_id, "--topic", "/camera/image_raw", "--rate", "4",
                          "--wait-subscribers", "1")
    wait_for(lambda: len(captions) >= 2, timeout=90)
    replay.communicate(timeout=60)
    return node


def ask_async(ros_client, question: str, client=None):  # noqa: F811
    """Send one request without waiting. :returns: an Event set on the response, and a box."""
    client = client or ros_client.node.create_client(AskVideo, "/ask_video")
    assert client.wait_for_service(timeout_sec=30)
    done, box = threading.Event(), {}

    def finish(future):
        box["response"] = future.result()
        done.set()

    client.call_async(AskVideo.Request(question=question)).add_done_callback(finish)
    return done, box


def test_every_one_of_40_simultaneous_questions_gets_a_response(tmp_path, bag, domain_id,
                                                                ros_client):  # noqa: F811
    node = captioned_node(tmp_path, bag, domain_id, ros_client, question_queue_size=4,
                          max_answer_tokens=24)
    try:
        # One client, its response history deep enough for the burst, matched with the
        # service both ways (a first call answered) before the burst.
        client = ros_client.node.create_client(AskVideo, "/ask_video",
                                               qos_profile=QoSProfile(depth=100))
        assert wait_for(lambda: ask_async(ros_client, "Ready?", client)[0].wait(5), timeout=60)
        pending = [ask_async(ros_client, f"What happened, question {i}?", client)
                   for i in range(40)]
        wait_for(lambda: all(done.is_set() for done, _ in pending), timeout=240)
        responses = [box["response"] for _, box in pending]
        answered = [r for r in responses if r.success]
        busy = [r for r in responses if not r.success]
        assert len(answered) + len(busy) == 40 and answered
        assert all(r.message.startswith("busy") for r in busy), {r.message for r in busy}
        assert node.alive()
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    assert_no_traceback(node.log())


@pytest.mark.parametrize("transition", ["deactivate", "shutdown"])
def test_a_transition_while_a_question_is_answered_answers_it_and_stays_clean(
        tmp_path, bag, endless_model, domain_id, ros_client, transition):  # noqa: F811
    """The hostile tryout: the transition 1 s into a long answer killed the node (exit 1,
    InvalidHandle in send_response) and the client never got a response."""
    node = captioned_node(tmp_path, bag, domain_id, ros_client, model=str(endless_model),
                          max_answer_tokens=1500)
    try:
        done, box = ask_async(ros_client, "Describe everything that happened, in detail.")
        assert not done.wait(1.0)  # still answering
        transition_id = {"deactivate": Transition.TRANSITION_DEACTIVATE,
                         "shutdown": Transition.TRANSITION_ACTIVE_SHUTDOWN}[transition]
        assert ros_client.change_state(transition_id)
        assert done.wait(120), "the question in flight got no response"
        assert isinstance(box["response"].success, bool)
        if transition == "deactivate":
            assert ros_client.lifecycle_state() == "inactive" and node.alive()
            late = ros_client.call(AskVideo, "/ask_video", AskVideo.Request(question="Now?"))
            assert not late.success and "inactive, not active" in late.message
            assert ros_client.change_state(Transition.TRANSITION_ACTIVATE)
            assert ros_client.call(AskVideo, "/ask_video",
                                   AskVideo.Request(question="And now?")).success
        else:
            assert node.wait_exit(60) == 0, node.log()[-3000:]  # shutdown ends the process
    finally:
        if node.alive():
            assert node.stop(signal.SIGINT) == 0, node.log()[-3000:]
    assert_no_traceback(node.log())


@pytest.mark.parametrize("case", ["template-raises", "store-path-under-a-file"])
def test_a_refused_configure_is_error_on_diagnostics(
        tmp_path, domain_id, ros_client, case):  # noqa: F811
    """A checkpoint whose template raises, or a store_path that cannot be created (before: OK
    on /diagnostics for a bad store_path)."""
    model = published.write_llava_onevision(tmp_path / "model")
    params, says = {"model": str(model)}, ("chat_template.json", "not supported")
    if case == "template-raises":
        (model / "chat_template.json").write_text(json.dumps(
            {"chat_template": "{{ raise_exception('video content is not supported') }}"}))
    else:
        (tmp_path / "a-file").write_text("not a directory")
        params["store_path"] = str(tmp_path / "a-file" / "captions.db")
        says = ("StoreError", "writable location")
    diagnostics = ros_client.collect(DiagnosticArray, "/diagnostics")
    node = start_node(tmp_path, domain_id, wait_active=False, autostart=False, **params)
    try:
        node.wait_log("waiting for lifecycle transitions", timeout=60)
        assert not ros_client.change_state(Transition.TRANSITION_CONFIGURE)
        status = wait_for(lambda: next((s for d in diagnostics[-3:] for s in d.status
                                        if s.level == DiagnosticStatus.ERROR), None), timeout=30)
        assert all(words in status.message for words in says), status.message
        assert ros_client.lifecycle_state() == "unconfigured"
    finally:
        assert node.stop() == 0
    assert "configure failed" in node.log()
    assert_no_traceback(node.log())


def test_a_second_writer_on_the_same_stream_is_refused_naming_the_first(tmp_path, domain_id,
                                                                         ros_client):  # noqa: F811
    """Two cameras' nodes started with the same store_path and the default stream_id: before,
    both numbered clips from 0 and every other caption was dropped with diagnostics OK."""
    store = str(tmp_path / "shared.db")
    first = start_node(tmp_path, domain_id, name="first", store_path=store,
                       remaps={"__ns": "/front"})
    try:
        second = start_node(tmp_path, domain_id, name="second", store_path=store,
                            wait_active=False, remaps={"__ns": "/rear"})
        assert second.wait_exit(120) == 1
        log = second.log()
        assert f"already being written by node /front/rats_stream (pid {first.proc.pid})" in log
        assert "stream_id" in log
        assert_no_traceback(log)
        third = start_node(tmp_path, domain_id, name="third", store_path=store,
                           stream_id="rear", remaps={"__ns": "/rear"})
        assert third.stop() == 0  # its own stream: accepted
    finally:
        assert first.stop() == 0


def test_hostile_frames_are_refused_by_reason_and_cost_no_memory(tmp_path, domain_id,
                                                                 ros_client):  # noqa: F811
    """A PNG bomb (20000 x 20000 px in ~1 MB: +2.3 GB of RSS before), a zero stamp (replaced by
    wall-clock time before), a 1000 x 4 frame (a "model failure" before), frames that all carry
    one stamp (no caption and no warning before): each refused, counted by reason, WARN."""
    node = start_node(tmp_path, domain_id, image_transport="compressed",
                      qos_reliability="reliable", remaps={"__ns": "/hostile"})
    diagnostics = ros_client.collect(DiagnosticArray, "/diagnostics")
    pub = ros_client.node.create_publisher(CompressedImage, "/hostile/image/compressed",
                                           QoSProfile(depth=20))
    wait_for(lambda: pub.get_subscription_count() >= 1, timeout=30)
    frame = encode_compressed(np.full((48, 64, 3), 120, np.uint8), "jpeg")
    sliver = encode_compressed(np.full((4, 1000, 3), 120, np.uint8), "jpeg")

    def message(data, fmt="jpeg", sec=100):
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp.sec = sec
        return msg

    def refused(reason):
        values = diagnostics_values(diagnostics[-1]) if diagnostics else {}
        return int(values.get(f"refused.{reason}", 0))

    rss_before = node.rss()
    try:  # one at a time: the image subscription keeps the last 5 (sensor-data QoS)
        for msg, reason, count in [(message(png_bomb(20000, 20000), "png"), "too_many_pixels", 1),
                                   (message(frame, sec=0), "zero_stamp", 1),
                                   (message(sliver, sec=101), "unusable_size", 1),
                                   (message(frame, sec=102), "repeated_stamp", 0)]:
            pub.publish(msg)
            wait_for(lambda reason=reason, count=count: refused(reason) == count
                     and (count or diagnostics_values(diagnostics[-1]).get("frames_received")
                          == "1"), timeout=30)
        for _ in range(4):
            pub.publish(message(frame, sec=102))
            time.sleep(0.2)
        wait_for(lambda: refused("repeated_stamp") == 4, timeout=30)
        values = diagnostics_values(diagnostics[-1])
        assert values["_level"] == DiagnosticStatus.WARN
        assert node.rss() - rss_before < 300 * 2**20
        log = node.log()
        for words in ("exceeds 50000000 pixels", "header stamp is zero", "under 16 px",
                      "the previous frame's header stamp"):
            assert words in log, words
    finally:
        assert node.stop() == 0
    assert_no_traceback(node.log())


def _fill(path) -> None:
    """Write ``path`` until its file system has no byte left."""
    with open(path, "wb", buffering=0) as filler:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    filler.write(b"\0" * size)
            except OSError:  # ENOSPC: next, smaller writes fill the rest
                continue


def _error_says(diagnostics, words):
    return next((s for d in diagnostics[-3:] for s in d.status
                 if s.level == DiagnosticStatus.ERROR and words in s.message), None)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
def test_a_full_disk_holds_captions_and_stores_them_in_order_when_space_returns(
        tmp_path, bag, domain_id, ros_client):  # noqa: F811
    """While the disk is full no caption is discarded and /diagnostics is not OK; once space
    returns every held caption is stored, in order."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        captions = ros_client.collect(Caption, "/captions")
        diagnostics = ros_client.collect(DiagnosticArray, "/diagnostics")
        node = start_node(tmp_path, domain_id, store_path=str(disk / "captions.db"),
                          qos_reliability="reliable", remaps={"image": "/camera/image_raw"})
        try:
            _fill(disk / "filler")
            replay = start_replay(bag, domain_id, "--rate", "4", "--wait-subscribers", "1")
            status = wait_for(lambda: _error_says(diagnostics, "refuses writes"), timeout=90)
            assert "held in memory" in status.message and captions == []
            replay.communicate(timeout=60)
            (disk / "filler").unlink()  # space returns
            wait_for(lambda: len(captions) >= 3, timeout=60)
            assert [c.clip_index for c in captions] == list(range(len(captions)))
            ok = wait_for(lambda: diagnostics[-1].status[0].level == DiagnosticStatus.OK,
                          timeout=30)
            assert ok
            assert diagnostics_values(diagnostics[-1]).get("dropped_total") == "0"
        finally:
            assert node.stop() == 0, node.log()[-3000:]
        assert_no_traceback(node.log())
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_store_deleted_under_the_node_is_error_and_nothing_more_is_published(
        tmp_path, bag, domain_id, ros_client):  # noqa: F811
    """A store file unlinked under the node: /diagnostics reports ERROR, nothing more is
    published as stored, and clip indices never repeat after a restart."""
    captions = ros_client.collect(Caption, "/captions")
    diagnostics = ros_client.collect(DiagnosticArray, "/diagnostics")
    node = start_node(tmp_path, domain_id, qos_reliability="reliable",
                      remaps={"image": "/camera/image_raw"})
    try:
        replay = start_replay(bag, domain_id, "--rate", "2", "--wait-subscribers", "1")
        wait_for(lambda: captions, timeout=90)
        (tmp_path / "captions.db").unlink()
        published = len(captions)
        status = wait_for(lambda: _error_says(diagnostics, "deleted or replaced"), timeout=90)
        replay.communicate(timeout=60)
        assert len(captions) <= published + 1  # at most the clip that was being stored
        assert "restart the node" in status.message
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    assert_no_traceback(node.log())


def _address_space(pid: int) -> int:
    """The process's virtual memory size in bytes (VmSize)."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


def _frames_received(diagnostics) -> int:
    return next(int(kv.value) for kv in diagnostics[-1].status[0].values
                if kv.key == "frames_received")


def _settled_frames(diagnostics, quiet_s: float = 2.0) -> int:
    """The node's frame count once it has not moved for ``quiet_s`` (/diagnostics come once a
    second, so the newest message may predate the last frames and their caption)."""
    seen = {"count": _frames_received(diagnostics), "since": time.monotonic()}

    def quiet() -> bool:
        now = _frames_received(diagnostics)
        if now != seen["count"]:
            seen.update(count=now, since=time.monotonic())
        return time.monotonic() - seen["since"] >= quiet_s

    wait_for(quiet, timeout=60)
    return seen["count"]


def _silent_since(diagnostics, seconds: float):
    """The newest status, if it WARNs that the camera topic brought nothing for ``seconds``."""
    values = diagnostics_values(diagnostics[-1]) if diagnostics else {}
    quiet = float(values.get("seconds_since_message", 0))
    if values.get("_level") == DiagnosticStatus.WARN and "no image message" in \
            values.get("_message", "") and quiet >= seconds:
        return values
    return None


def _within(condition, timeout: float) -> bool:
    try:
        return bool(wait_for(condition, timeout=timeout))
    except AssertionError:
        return False


def test_a_memory_shortage_mid_stream_is_reported_and_captioning_goes_on(
        tmp_path, bag, domain_id, ros_client):  # noqa: F811
    """A real memory shortage: the running node's address space is capped (prlimit) at what it
    uses, so its next allocation fails. Which allocation fails first is the allocator's choice:
    torch's or numpy's (reported as ``out of memory``, the node goes on with the next clip once
    memory returns) or oneDNN's (an unexpected error: FATAL, exit 1 for a restart, which
    continues the stream). Either way: never silent, no traceback, no repeated clip index, and
    no captioner thread ends while the node stays active. (The model's own out-of-memory path is
    tested deterministically in test_memory_shortage.py.) In some runs
    the DDS layer's receive allocations fail first and no frame reaches the node: it must then
    say on /diagnostics that its camera topic has been silent for the whole replay
    (``input_timeout_s``), and it is replaced, as a supervisor reading /diagnostics would. Large
    blocks are mapped anew for each allocation (``MALLOC_MMAP_THRESHOLD_``), so a caption cannot
    run on in memory freed by the last one; if one still does (nothing failed: checked from the
    captions), the node is replaced and the cap tried again."""
    captions = ros_client.collect(Caption, "/captions")
    diagnostics = ros_client.collect(DiagnosticArray, "/diagnostics")
    # large blocks always mapped anew (glibc): a caption cannot run on in freed memory, so the
    # cap bites a caption's allocations, or the DDS layer's first
    params = dict(qos_reliability="reliable", remaps={"image": "/camera/image_raw"},
                  clip_frames=4, input_timeout_s=2.0, env={"MALLOC_MMAP_THRESHOLD_": "65536"})
    node = start_node(tmp_path, domain_id, **params)
    outcomes = []
    try:
        for _ in range(3):
            before = len(captions)
            replay = start_replay(bag, domain_id, "--rate", "4", "--wait-subscribers", "1")
            wait_for(lambda seen=before: len(captions) > seen, timeout=90)
            replay.communicate(timeout=60)
            received = _settled_frames(diagnostics)
            subprocess.run(["prlimit", f"--pid={node.proc.pid}",
                            f"--as={_address_space(node.proc.pid)}"], check=True)
            capped_captions, started = len(captions), time.monotonic()
            replay = start_replay(bag, domain_id, "--rate", "4", "--wait-subscribers", "0")
            replay.communicate(timeout=60)
            replayed_s = time.monotonic() - started
            if _within(lambda capped=node: _error_says(diagnostics, "out of memory")
                       or not capped.alive(), 60):
                outcomes.append("reported")
                break
            captioned = _within(lambda n=capped_captions: len(captions) > n, 10)
            assert captioned or _frames_received(diagnostics) == received, node.log()[-3000:]
            if not captioned:  # no frame reached the node: it must say its camera is silent
                silent = _within(lambda s=replayed_s: _silent_since(diagnostics, s), 30)
                assert silent, f"a deaf node said nothing: {node.log()[-3000:]}"
                outcomes.append("deaf, reported as a silent camera")
            else:
                outcomes.append("captioned in reused memory")
            node.proc.kill()  # deaf or unbitten under its cap (which cannot be lifted again)
            node.proc.wait(timeout=30)
            node = start_node(tmp_path, domain_id, **params)
            if not captioned:
                break  # reported; the replaced node goes on below
        else:
            pytest.fail(f"in 3 tries the cap never bit the node: {outcomes}")
        if outcomes[-1] == "reported" and node.alive():  # memory returns, the process goes on
            subprocess.run(["prlimit", f"--pid={node.proc.pid}", "--as=unlimited"], check=True)
            assert "smaller model" in _error_says(diagnostics, "out of memory").message
        elif outcomes[-1] == "reported":  # exited for a restart, saying why
            code = node.wait_exit()
            if code == -signal.SIGABRT:  # a C++ library (DDS, oneDNN) could not allocate or
                # start a thread and terminated the process: non-zero, and its reason printed
                assert "terminate called after throwing" in node.log(), node.log()[-3000:]
            else:
                assert code == 1, node.log()[-3000:]
                assert "[FATAL]" in node.log() and "exiting with code 1" in node.log()
            assert_no_traceback(node.log())
            node = start_node(tmp_path, domain_id, **params)
        # else: the deaf node was replaced above, as a supervisor reading /diagnostics would
        before = len(captions)
        replay = start_replay(bag, domain_id, "--rate", "4", "--wait-subscribers", "1")
        try:
            wait_for(lambda: len(captions) > before, timeout=90)
            replay.communicate(timeout=60)
            indices = [c.clip_index for c in captions]
            assert len(set(indices)) == len(indices) and indices == sorted(indices)
        finally:
            assert node.stop() == 0, node.log()[-3000:]
    except BaseException:  # a failed step must not leave a capped node behind: later tests
        node.proc.kill()   # share this run's ROS domain and would talk to it
        raise
    assert_no_traceback(node.log())
