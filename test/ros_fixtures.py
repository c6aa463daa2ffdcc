"""Shared pieces of the ROS tests: the test-side rclpy client, node and replay subprocesses.

Every child process runs with ``helpers.ros_env(domain_id)`` (loopback discovery, this run's
domain); the test side owns its own ``rclpy.Context``. Nothing here fakes ROS: the node is
``python -m rats_ros.ros.main`` with a real tiny model, topics and services go through Fast DDS.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import rclpy
from helpers import ros_env, wait_for
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "stream.yaml"
NS = 1_000_000_000
# Small, fast clips for tests: 2 sampled frames per second, 4 per clip (one clip per 2 s).
FAST_PARAMS = {"fps": 2.0, "clip_frames": 4, "max_caption_tokens": 8, "max_answer_tokens": 8,
               "idle_flush": 2.0, "diagnostics_period": 0.5, "max_image_side": 128,
               "input_timeout_s": 0.0}  # tests of silence set it (test_node_silence.py)


class RosClient:
    """A test-side node in its own context, spun by a background thread."""

    def __init__(self, name: str = "rats_test_client"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except rclpy.executors.ExternalShutdownException:
            pass

    def spinning(self) -> bool:
        """False when the executor thread ended (an exception in it is printed by pytest)."""
        return self._thread.is_alive()

    def collect(self, msg_type, topic: str, reliable: bool = True) -> list:
        """Subscribe and return the list the messages are appended to."""
        received = []
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def call(self, srv_type, name: str, request, timeout: float = 60.0, retry_after=None):
        """Call a service and wait for its response.

        :param retry_after: for idempotent requests: re-send when no answer came within this
            many seconds (a request sent while discovery is still settling can be lost).
        :raises AssertionError: when the service is not available or does not answer in time.
        """
        client = self.node.create_client(srv_type, name)
        deadline = time.monotonic() + timeout
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
            while True:
                future = client.call_async(request)
                done = threading.Event()
                future.add_done_callback(lambda _, event=done: event.set())
                left = deadline - time.monotonic()
                if done.wait(min(left, retry_after or left)):
                    return future.result()
                client.remove_pending_request(future)
                assert time.monotonic() < deadline, f"{name} did not answer within {timeout} s"
        finally:
            self.node.destroy_client(client)

    def lifecycle_state(self, node_name: str = "/rats_stream", timeout: float = 30.0) -> str:
        return self.call(GetState, f"{node_name}/get_state", GetState.Request(), timeout,
                         retry_after=2.0).current_state.label

    def change_state(self, transition_id: int, node_name: str = "/rats_stream",
                     timeout: float = 120.0) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return self.call(ChangeState, f"{node_name}/change_state", request, timeout).success

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=10)


class NodeProcess:
    """``python -m rats_ros.ros.main`` as a child process, output captured in files."""

    def __init__(self, workdir: Path, domain_id: int, params: dict, params_file=CONFIG,
                 name: str = "node", remaps: dict | None = None, command=None, env=None):
        """:param command: the executable (default: this checkout's ``python -m``);
        :param env: extra environment on top of :func:`helpers.ros_env`."""
        self.log_path = Path(workdir) / f"{name}.log"
        args = list(command or [sys.executable, "-m", "rats_ros.ros.main"]) + ["--ros-args"]
        if params_file:
            args += ["--params-file", str(params_file)]
        for key, value in params.items():
            args += ["-p", f"{key}:={_ros_value(value)}"]
        for source, target in (remaps or {}).items():
            args += ["-r", f"{source}:={target}"]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=workdir if command else ROOT,
                                     env=ros_env(domain_id) | (env or {}), stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def wait_log(self, text: str, timeout: float = 120.0) -> None:
        wait_for(lambda: text in self.log() or not self.alive(), timeout=timeout, interval=0.2)
        assert text in self.log(), f"{text!r} not in the node's output:\n{self.log()[-3000:]}"

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self, sig=signal.SIGINT, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit code (kill -9 after ``timeout``)."""
        if self.alive():
            self.proc.send_signal(sig)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise


def _ros_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


def start_node(workdir, domain_id, wait_active: bool = True, **params) -> NodeProcess:
    """Start the node with :data:`FAST_PARAMS` plus ``params`` and wait until it is active."""
    name, remaps, env = params.pop("name", "node"), params.pop("remaps", None), \
        params.pop("env", None)
    command = params.pop("command", None)
    merged = {**FAST_PARAMS, "store_path": str(Path(workdir) / "captions.db"), **params}
    node = NodeProcess(workdir, domain_id, merged, name=name, remaps=remaps, env=env,
                       command=command)
    if wait_active:
        node.wait_log("active: listening", timeout=180)
    return node


def start_replay(bag, domain_id, *options) -> subprocess.Popen:
    """``python -m rats_ros.ros.replay BAG OPTIONS`` as a child process."""
    return subprocess.Popen([sys.executable, "-m", "rats_ros.ros.replay", str(bag), *options],
                            cwd=ROOT, env=ros_env(domain_id), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def scene_frames(count: int, fps: float, start_s: float = 100.0, size=(96, 64), seed: int = 0):
    """``count`` frames of a moving square, ``fps`` apart, stamps from ``start_s`` seconds.

    :returns: a list of :class:`rats_ros.stream.clips.Frame`.
    """
    from rats_ros.stream.clips import Frame

    rng = np.random.default_rng(seed)
    width, height = size
    frames = []
    for i in range(count):
        image = np.full((height, width, 3), 40, dtype=np.uint8)
        x = (i * 5) % (width - 16)
        image[20:36, x:x + 16] = rng.integers(100, 255, size=3, dtype=np.uint8)
        frames.append(Frame(int((start_s + i / fps) * NS), image))
    return frames


def time_ns(stamp) -> int:
    return stamp.sec * NS + stamp.nanosec


@pytest.fixture(scope="module")
def ros_client():
    """A test-side rclpy node in its own context (module-scoped)."""
    client = RosClient()
    yield client
    client.close()


def wait_state(client: RosClient, label: str, timeout: float = 60.0) -> None:
    wait_for(lambda: client.lifecycle_state() == label, timeout=timeout, interval=0.2)


def diagnostics_values(array) -> dict:
    """Key/values of the rats_stream status in a DiagnosticArray (empty when absent)."""
    for status in array.status:
        if status.name.startswith("rats_stream"):
            return {kv.key: kv.value for kv in status.values} | {
                "_level": status.level, "_message": status.message}
    return {}


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-4000:]
