"""The ``rats_stream`` lifecycle node: wiring of the core modules to ROS 2, nothing more.

- construction: parameters declared (:mod:`rats_ros.node_params`), ``/diagnostics`` timer.
- configure: parameters validated, model loaded, store opened, captioner and QA built
  (:class:`~rats_ros.node_worker.Parts`); a failure is logged and the transition FAILS, the
  node stays unconfigured.
- activate: subscription (``image`` or ``image/compressed``, relative, sensor-data QoS),
  ``captions`` and ``~/selection_overlay`` publishers, ``ask_video`` service and two threads
  (:class:`~rats_ros.node_worker.Worker`): the sampler (frame queue -> ClipAssembler -> clip
  queue) and the captioner (clip queue -> RecurrentCaptioner.step -> CaptionStore.add,
  committed -> publish). The image callback only decodes and queues; the model never runs in a
  callback.
- deactivate/cleanup/shutdown: threads joined, entities destroyed, store closed.

``autostart`` (default true) configures and activates at startup; if that fails, :func:`main`
exits with code 1 after logging why (a launch ``respawn`` or systemd restart then sees it).
SIGINT/SIGTERM stop the node cleanly with exit code 0.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

from rats_ros import node_params
from rats_ros.clips import Frame
from rats_ros.diagnostics import StreamStats, diagnostic_array
from rats_ros.errors import ConfigError, FrameError, ModelError, RatsError
from rats_ros.images import SUPPORTED_ENCODINGS, decode_compressed, decode_raw
from rats_ros.msg import Caption
from rats_ros.node_worker import DropOldestQueue, Parts, Worker, caption_msg, time_to_ns
from rats_ros.srv import AskVideo

NODE_NAME = "rats_stream"
_WARN_EVERY_S = 5.0
_NS = 1_000_000_000


class StreamNode(LifecycleNode):
    """The managed node. Construction only declares parameters; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        try:
            node_params.declare(self)
        except ConfigError:
            self.destroy_node()
            raise
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = StreamStats()
        self.params = None     # NodeParams, set by configure
        self.parts = None      # model, store, captioner, QA, set by configure
        self.worker = None     # sampler + captioner threads, while active
        self.frames = DropOldestQueue(1)
        self._subscription = self._service = None  # created at activate
        self._publishers = []
        self._frame_id = ""
        self._last_warning: dict[str, float] = {}
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = self.get_parameter("diagnostics_period").value
        self._diag_timer = self.create_timer(period, self._publish_diagnostics,
                                             callback_group=MutuallyExclusiveCallbackGroup())

    # -- lifecycle --------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.params = node_params.read(self)
            self.get_logger().info(f"loading model {self.params.model} on {self.params.device}")
            self.parts = Parts(self.params)
        except RatsError as error:
            if isinstance(error, ModelError):
                self.stats.fail_model(str(error))
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        except Exception:  # a bug: rclpy would turn it into ERROR silently, so log it first
            self.get_logger().error(f"configure failed:\n{traceback.format_exc()}")
            raise
        self.stats.clear_model_error()
        self.frames = DropOldestQueue(self.params.queue_size)
        self._diag_timer.timer_period_ns = int(self.params.diagnostics_period * _NS)
        self.get_logger().info(
            f"configured: model {self.parts.model_name}, store {self.parts.store_path} "
            f"(stream {self.params.stream_id!r}, next clip index {self.parts.start_index})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        params = self.params
        self._caption_pub = self.create_lifecycle_publisher(Caption, "captions", 10)
        overlay_pub = None
        if params.publish_overlay:
            overlay_pub = self.create_lifecycle_publisher(Image, "~/selection_overlay", 2)
        self.frames.clear()
        self.worker = Worker(self.parts, params, self.frames, self.stats, self.get_logger(),
                             publish=self._publish_caption, overlay_publisher=overlay_pub)
        self.worker.start()
        qos = QoSProfile(**{**_qos_kwargs(qos_profile_sensor_data),
                            "reliability": _reliability(params.qos_reliability)})
        if params.image_transport == "compressed":
            sub = self.create_subscription(CompressedImage, "image/compressed",
                                           self._on_compressed, qos)
        else:
            sub = self.create_subscription(Image, "image", self._on_image, qos)
        service = self.create_service(AskVideo, "ask_video", self._on_ask,
                                      callback_group=MutuallyExclusiveCallbackGroup())
        self._subscription, self._service = sub, service
        self._publishers = [self._caption_pub] + ([overlay_pub] if overlay_pub else [])
        self.get_logger().info(f"active: listening on {sub.topic_name}, captions on "
                               f"{self._caption_pub.topic_name}, service {service.srv_name}")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_io()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release_parts()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in state {state.label}; releasing everything")
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def release(self) -> None:
        """Stop the threads, destroy the I/O entities and close the store (idempotent)."""
        self._stop_io()
        self._release_parts()

    def start(self) -> bool:
        """Configure then activate (``autostart``). :returns: True when active."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def _stop_io(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self.destroy_service(self._service)
        for publisher in self._publishers:
            self.destroy_lifecycle_publisher(publisher)
        self._subscription, self._service, self._publishers = None, None, []

    def _release_parts(self) -> None:
        if self.parts is not None:
            self.parts.close()
            self.parts = None

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            problem = node_params.check(parameter.name, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    # -- input ------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        try:
            rgb = decode_raw(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                             msg.is_bigendian, max_side=self.params.max_image_side)
        except FrameError as error:
            self._refuse(_raw_reason(msg), error)
            return
        self._queue(msg.header, rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        try:
            rgb = decode_compressed(msg.format, msg.data, max_side=self.params.max_image_side)
        except FrameError as error:
            self._refuse("undecodable_compressed", error)
            return
        self._queue(msg.header, rgb)

    def _queue(self, header, rgb) -> None:
        """Stamp (header stamp; node clock, hence sim time, when zero) and queue one frame."""
        stamp_ns = time_to_ns(header.stamp) or self.get_clock().now().nanoseconds
        try:
            frame = Frame(stamp_ns, rgb)
        except FrameError as error:  # a negative header stamp
            self._refuse("bad_stamp", error)
            return
        self._frame_id = header.frame_id
        if self.frames.put(frame):
            self.stats.drop("queue_full")
        self.stats.frame()

    def _refuse(self, reason: str, error: FrameError) -> None:
        count = self.stats.refuse(reason)
        now = time.monotonic()
        if now - self._last_warning.get(reason, -1e9) >= _WARN_EVERY_S:
            self._last_warning[reason] = now
            self.get_logger().warning(f"refused frame ({reason}, {count} so far): {error}")

    # -- output -----------------------------------------------------------------------------
    def _publish_caption(self, caption) -> None:
        self._caption_pub.publish(caption_msg(caption, self._frame_id, self.parts.model_name))

    def _on_ask(self, request, response):
        started = time.monotonic()
        try:
            answer = self.parts.ask(request)
        except RatsError as error:
            self.stats.question("refused")
            response.success, response.message = False, str(error)
            response.processing_time = time.monotonic() - started
            return response
        self.stats.question("answered")
        response.success, response.answer = True, answer.text
        response.evidence = [caption_msg(c, self._frame_id, c.model) for c in answer.evidence]
        response.processing_time = float(answer.processing_time)
        return response

    def _publish_diagnostics(self) -> None:
        def value(name):
            return getattr(self.params, name) if self.params else self.get_parameter(name).value

        info = {"state": self._state_machine.current_state[1], "model": value("model"),
                "device": value("device"), "stream_id": value("stream_id")}
        parts = self.parts
        if parts is not None:
            info.update({"next_clip_index": parts.captioner.next_index,
                         "time_jumps": parts.assembler.stats.time_jumps,
                         "out_of_order_frames": parts.assembler.stats.out_of_order,
                         "sampled_frames": parts.assembler.stats.sampled})
        self._diag_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), self.stats.snapshot(), info,
            value("clip_frames") / value("fps"), len(self.frames), self.frames.capacity))


def _raw_reason(msg: Image) -> str:
    """Why a raw image was refused, as a short counter key."""
    if msg.encoding not in SUPPORTED_ENCODINGS:
        return "unsupported_encoding"
    if msg.width == 0 or msg.height == 0:
        return "zero_size"
    return "bad_step_or_size"


def _qos_kwargs(profile) -> dict:
    return {"history": profile.history, "depth": profile.depth,
            "durability": profile.durability, "reliability": profile.reliability}


def _reliability(name: str):
    return ReliabilityPolicy.RELIABLE if name == "reliable" else ReliabilityPolicy.BEST_EFFORT


def main(args=None) -> int:
    """Run the node until SIGINT/SIGTERM.

    The process handles the signals itself instead of rclpy: rclpy's handlers shut the context
    down at once, from their own thread, racing the executor (``RCLError: failed to initialize
    wait set``) and the captioner publishing the clip it finishes. Here the stop is ordered:
    executor, then threads (the clip in flight is stored and published), then the context.

    :returns: 0 after a signal, 1 when autostart could not configure/activate, 2 for parameters
        refused at startup.
    """
    signals = _StopSignals()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = StreamNode()
    except ConfigError as error:
        print(f"[{NODE_NAME}] invalid parameters: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    spinner = _Spinner(executor)
    code = 0
    try:
        code = _run(node, spinner, signals)
    except KeyboardInterrupt:  # raised by _StopSignals while loading
        pass
    finally:
        signals.abort_loading = False
        spinner.stop()
        node.release()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


def _run(node: StreamNode, spinner: _Spinner, signals: _StopSignals) -> int:
    """Autostart, then spin until a signal. :returns: the exit code."""
    signals.abort_loading = True  # Ctrl-C while loading a big model must not wait for it
    if signals.received is not None:  # it came while the node was being constructed
        return 0
    autostart = node.get_parameter("autostart").value
    started = not autostart or node.start()
    signals.abort_loading = False
    if signals.received is not None:  # its KeyboardInterrupt was swallowed (e.g. by a __del__)
        return 0
    if not started:
        node.get_logger().error("autostart failed (see above); exiting with code 1")
        return 1
    if not autostart:
        node.get_logger().info("unconfigured, waiting for lifecycle transitions "
                               "(autostart is false)")
    spinner.start(on_exit=signals.wake)
    signals.wait(until=lambda: spinner.ended)
    return 1 if spinner.failed else 0


class _StopSignals:
    """SIGINT/SIGTERM without exceptions where they could break things.

    The first signal is recorded in :attr:`received`; while :attr:`abort_loading` it also raises
    KeyboardInterrupt in the main thread. Python's wakeup fd wakes :meth:`wait` at once, even
    while the main thread is blocked. Later signals only say that the node is stopping: a second
    Ctrl-C must not break the clean stop (the clip being captioned is finished and stored);
    SIGKILL still ends the process at once, losing nothing committed.
    """

    def __init__(self):
        self.received = None
        self.abort_loading = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        signal.set_wakeup_fd(self._wake_write)  # Python's C-level handler writes here
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self.received is not None:
            print(f"[{NODE_NAME}] already stopping: finishing the clip being captioned",
                  file=sys.stderr)
            return
        self.received = signum
        if self.abort_loading:
            self.abort_loading = False
            raise KeyboardInterrupt

    def wake(self) -> None:
        """Wake :meth:`wait` (any thread)."""
        os.write(self._wake_write, b"\0")

    def wait(self, until) -> None:
        """Block (main thread) until a signal came or ``until()`` is true after a :meth:`wake`."""
        while self.received is None and not until():
            os.read(self._wake_read, 1)


class _Spinner:
    """Spins the executor in a thread, so that the main thread stays free for signals."""

    def __init__(self, executor):
        self._executor = executor
        self._thread = None
        self.failed = self.ended = False

    def start(self, on_exit) -> None:
        """Spin in a thread; ``on_exit()`` is called when it ends (a callback's bug ends it; its
        traceback is printed by :func:`threading.excepthook`)."""
        def spin():
            clean = False
            try:
                self._executor.spin()
                clean = True
            except ExternalShutdownException:
                clean = True
            finally:  # a callback's exception (a bug) leaves clean false
                self.failed, self.ended = not clean, True
                on_exit()

        self._thread = threading.Thread(target=spin, name="rats-executor")
        self._thread.start()

    def stop(self) -> None:
        """Stop the executor; callbacks running are finished first."""
        self._executor.shutdown()
        if self._thread is not None:
            self._thread.join()


if __name__ == "__main__":
    sys.exit(main())
