"""The captioner thread with several cameras captioned together (``batch_cameras``): a clip that
fails inside a batch is retried alone and reports its own error, while the batch's other clips
are captioned, stored and published as usual; /diagnostics stays ERROR until the failed camera
captions again (another camera's caption does not clear it).

The node's intake refuses frames no model can take, so no fault of one camera's clip reaches a
batch through DDS; here the real worker's clip queues get such a clip directly (a 250:1 frame,
which Qwen2.5-VL's resize refuses as its reference processor does), beside good clips of the
other cameras. Everything else is real: the parts a node's configure builds (tiny Qwen2.5-VL
checkpoint, SQLite stores, captioners), the worker's threads, an rclpy logger.
"""
import numpy as np
import pytest
import rclpy.logging
from diagnostic_msgs.msg import DiagnosticStatus
from helpers import wait_for

from rats_ros.ros import params as node_params
from rats_ros.ros.diagnostics import StreamStats, level_and_message
from rats_ros.ros.parts import Parts
from rats_ros.ros.worker import Worker
from rats_ros.stream.clips import Clip, Frame
from rats_ros.stream.queues import DropOldestQueue

_NS = 1_000_000_000


def _clip(height: int, width: int, start_s: int, seed: int) -> Clip:
    rng = np.random.default_rng(seed)
    return Clip([Frame((start_s + 2 * i) * _NS,
                       rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
                 for i in range(4)])


@pytest.fixture
def worker(tmp_path, model_cache):
    defaults = {s.name: s.default for s in node_params.SPECS}
    params = node_params.NodeParams(**{
        **defaults, "model": "tiny-random-qwen2_5_vl", "cameras": ("front", "left", "rear"),
        "store_path": str(tmp_path / "captions.db"), "embedder": "model", "clip_frames": 4,
        "max_caption_tokens": 6, "batch_cameras": True})
    parts = Parts(params, writer="test_worker_batch")
    published, stats = [], StreamStats()
    running = Worker(parts, params, DropOldestQueue(16), stats,
                     rclpy.logging.get_logger("test_worker_batch"), publish=published.append)
    running.published = published
    yield running
    running.stop()
    parts.close()


def test_a_clip_that_fails_in_a_batch_is_retried_alone_and_the_others_are_captioned(worker):
    good, bad = _clip(56, 56, 0, 1), _clip(2000, 8, 0, 2)  # 250:1 is beyond Qwen's 200:1
    worker.clips["front"].put(good)
    worker.clips["left"].put(bad)
    worker.clips["rear"].put(_clip(56, 56, 0, 3))
    worker.start()
    assert wait_for(lambda: len(worker.published) == 2, timeout=60)
    snap = worker.stats.snapshot()
    assert sorted(c.camera for c in worker.published) == ["front", "rear"]
    # /diagnostics stays ERROR although rear's caption came after left's failure
    level, message = level_and_message(snap, clip_duration_s=8.0, queue_full=False)
    assert level == DiagnosticStatus.ERROR and message == snap["error"]
    assert "captioning a clip of camera left failed" in message and "aspect ratio" in message
    assert snap["dropped"] == {"model_error": 1}
    assert snap["cameras"]["left"] == {"dropped": 1}
    assert snap["clips"] == 2
    # the failed camera's captioner was left as it was: its next good clip is its first caption
    worker.clips["left"].put(_clip(56, 56, 8, 4))
    assert wait_for(lambda: len(worker.published) == 3, timeout=60)
    left = worker.published[-1]
    assert left.camera == "left" and left.clip_index == 0 and left.memory_tokens == 0
    assert worker.stats.snapshot()["error"] == ""  # left's own caption ends its ERROR
