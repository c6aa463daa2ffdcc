"""The ``rats_stream`` lifecycle node: wiring of the core modules to ROS 2, nothing more.

- construction: parameters declared (:mod:`rats_ros.ros.params`), ``/diagnostics`` timer.
- configure: parameters validated, model loaded, store opened, captioner and QA built
  (:class:`~rats_ros.ros.worker.Parts`); a failure is logged and the transition FAILS, the
  node stays unconfigured.
- activate: subscription (``image`` or ``image/compressed``, relative, sensor-data QoS),
  ``captions`` and ``~/selection_overlay`` publishers, ``ask_video`` service and two threads
  (:class:`~rats_ros.ros.worker.Worker`): the sampler (frame queue -> ClipAssembler -> clip
  queue) and the captioner (clip queue -> RecurrentCaptioner.step -> CaptionStore.add,
  committed -> publish). The image callbacks (:class:`~rats_ros.ros.intake.FrameIntake`)
  only decode and queue; the model never runs in a callback.
- deactivate/cleanup/shutdown: threads joined, entities destroyed, store closed.

``autostart`` (default true) configures and activates at startup; the process around the node
(signals, executor, ordered shutdown, exit codes) is :mod:`rats_ros.ros.main`.
"""
from __future__ import annotations

import os
import traceback

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from rats_ros.errors import ConfigError, RatsError
from rats_ros.msg import Caption
from rats_ros.ros import params as node_params
from rats_ros.ros.ask_action import AskAction
from rats_ros.ros.diagnostics import StreamStats, diagnostic_array, silence_message
from rats_ros.ros.intake import FrameIntake, PoseIntake
from rats_ros.ros.messages import caption_msg
from rats_ros.ros.parts import Parts
from rats_ros.ros.questions import QuestionDesk
from rats_ros.ros.worker import Worker
from rats_ros.srv import AskVideo
from rats_ros.stream.poses import PoseTrack
from rats_ros.stream.queues import DropOldestQueue

NODE_NAME = "rats_stream"
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
        self._inputs = []  # created at activate
        self._publishers = []
        self.frame_ids: dict[str, str] = {}  # camera -> frame_id of its last frame
        self.fatal_error = ""       # set when a worker thread died: the process must exit
        self.finalized = False      # set by the shutdown transition: the process ends
        self.configure_refused = False  # the last configure failed on a setting (ConfigError)
        self.on_stop = None        # wakes rats_ros.ros.main then (set by it)
        # ask_video lives as long as the node, so a transition never destroys it under an
        # answer in flight; it answers success=false unless the node is active.
        self.desk = QuestionDesk(self, self.get_parameter("question_queue_size").value)
        self._service = self.create_service(
            AskVideo, "ask_video", self.desk.answer, qos_profile=QoSProfile(depth=1000),
            callback_group=ReentrantCallbackGroup())
        self._action = AskAction(self, self.desk)  # the same desk: streamed, cancellable
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = self.get_parameter("diagnostics_period").value
        # A steady clock: with use_sim_time, diagnostics keep coming while /clock is silent.
        self._diag_timer = self.create_timer(period, self._publish_diagnostics,
                                             callback_group=MutuallyExclusiveCallbackGroup(),
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))

    # -- lifecycle --------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.params = node_params.read(self)
            self.get_logger().info(f"loading model {self.params.model} on {self.params.device}")
            self.parts = Parts(self.params, writer=f"node {self.get_fully_qualified_name()} "
                                                   f"(pid {os.getpid()})")
        except RatsError as error:
            self.configure_refused = isinstance(error, ConfigError)  # a setting: exit code 2
            self.stats.fail(f"configure failed: {type(error).__name__}: {error}")
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        except Exception:  # a bug: rclpy would turn it into ERROR silently, so log it first
            self.get_logger().error(f"configure failed:\n{traceback.format_exc()}")
            raise
        self.stats.clear_error()
        self.frames = DropOldestQueue(self.params.queue_size * len(self.params.cameras))
        self._diag_timer.timer_period_ns = int(self.params.diagnostics_period * _NS)
        self.get_logger().info(f"model summary: {self.parts.summary()}")
        if self.parts.prepare_s:
            self.get_logger().info(f"decoders built in {self.parts.prepare_s:.1f} s (tiles "
                                   "timed, kernels compiled)")
        streams = "; ".join(f"stream {lane.stream_id!r}, next clip index "
                            f"{lane.captioner.next_index}" for lane in self.parts.lanes)
        self.get_logger().info(f"configured: model {self.parts.model_name}, store "
                               f"{self.parts.store_path} ({streams})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        params = self.params
        self._caption_pub = self.create_lifecycle_publisher(Caption, "captions", 10)
        overlay_pub = None
        if params.publish_overlay:
            overlay_pub = self.create_lifecycle_publisher(Image, "~/selection_overlay", 2)
        self.frames.clear()
        poses = PoseTrack(params.pose_tolerance_s, params.pose_frame) if params.pose_topic \
            else None
        self.worker = Worker(self.parts, params, self.frames, self.stats, self.get_logger(),
                             publish=self._publish_caption, overlay_publisher=overlay_pub,
                             on_fatal=self._worker_died, poses=poses)
        self.worker.start()
        self._inputs = [self._subscribe_camera(lane.camera) for lane in self.parts.lanes]
        self.stats.listen({lane.camera: sub.topic_name for lane, sub in
                           zip(self.parts.lanes, self._inputs, strict=True)},
                          params.input_timeout_s)
        if poses is not None:
            intake = PoseIntake(self, poses, params.pose_type)
            self._inputs.append(self.create_subscription(
                intake.msg_type, params.pose_topic, intake.on_pose, 50,
                callback_group=MutuallyExclusiveCallbackGroup()))
        self._publishers = [self._caption_pub] + ([overlay_pub] if overlay_pub else [])
        topics = ", ".join(sub.topic_name for sub in self._inputs)
        self.get_logger().info(f"active: listening on {topics}, captions on "
                               f"{self._caption_pub.topic_name}, service {self._service.srv_name}")
        return super().on_activate(state)

    def _subscribe_camera(self, camera: str):
        """The image subscription of one camera (``image`` or ``<camera>/image``), on a callback
        group of its own: decoding is never in the way of lifecycle, parameters or the other
        cameras."""
        params, intake = self.params, FrameIntake(self, camera)
        qos = QoSProfile(**{**_qos_kwargs(qos_profile_sensor_data),
                            "reliability": _reliability(params.qos_reliability)})
        prefix = f"{camera}/" if camera else ""
        kind, topic, callback = (
            (CompressedImage, f"{prefix}image/compressed", intake.on_compressed)
            if params.image_transport == "compressed" else
            (Image, f"{prefix}image", intake.on_image))
        return self.create_subscription(kind, topic, callback, qos,
                                        callback_group=MutuallyExclusiveCallbackGroup())

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_io()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release_parts()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.release()
        self.finalized = True  # the process ends with code 0 (rats_ros.ros.main)
        if self.on_stop is not None:
            self.on_stop()  # wakes main
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
        self.stats.listen({}, 0.0)  # an inactive node waits for no input
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        for publisher in self._publishers:
            self.destroy_lifecycle_publisher(publisher)
        self._inputs, self._publishers = [], []

    def _release_parts(self) -> None:
        if self.parts is not None:
            self.get_logger().info(f"stopping: {self.stats.clips} clips captioned and stored "
                                   f"since start, store {self.parts.store_path}")
            self.parts.close()
            self.parts = None

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            problem = node_params.check(parameter.name, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    # -- output -----------------------------------------------------------------------------
    def _publish_caption(self, caption) -> None:
        self._caption_pub.publish(caption_msg(caption, self.frame_ids.get(caption.camera, ""),
                                              self.parts.model_name, self.parts.robot))

    def _worker_died(self, message: str) -> None:
        """A worker thread ended on an unexpected error: the node must not run on without it."""
        self.fatal_error = message
        if self.on_stop is not None:
            self.on_stop()

    def state_label(self) -> str:
        """The lifecycle state's label (``unconfigured``, ``inactive``, ``active``, ...)."""
        return self._state_machine.current_state[1]

    def _publish_diagnostics(self) -> None:
        def value(name):
            return getattr(self.params, name) if self.params else self.get_parameter(name).value

        info = {"state": self.state_label(), "model": value("model"),
                "device": value("device"), "stream_id": value("stream_id")}
        parts = self.parts
        if parts is not None:
            lanes = parts.lanes
            info.update({"next_clip_index": ", ".join(
                             f"{lane.camera}={lane.captioner.next_index}" if lane.camera
                             else str(lane.captioner.next_index) for lane in lanes),
                         "time_jumps": sum(lane.assembler.stats.time_jumps for lane in lanes),
                         "out_of_order_frames": sum(lane.assembler.stats.out_of_order
                                                    for lane in lanes),
                         "sampled_frames": sum(lane.assembler.stats.sampled for lane in lanes)})
        if self.worker is not None:
            info["captions_waiting_for_store"] = len(self.worker.backlog)
            info["clips_waiting"] = self.worker.clips_waiting()
        snap = self.stats.snapshot()
        if snap.get("silent"):  # also in the log: a console without ros2 tools shows it
            self.get_logger().warning(silence_message(snap["silent"]), throttle_duration_sec=30.0)
        self._diag_pub.publish(diagnostic_array(
            self.get_clock().now().to_msg(), snap, info,
            value("clip_frames") / value("fps"), len(self.frames), self.frames.capacity))


def _qos_kwargs(profile) -> dict:
    return {"history": profile.history, "depth": profile.depth,
            "durability": profile.durability, "reliability": profile.reliability}


def _reliability(name: str):
    return ReliabilityPolicy.RELIABLE if name == "reliable" else ReliabilityPolicy.BEST_EFFORT
