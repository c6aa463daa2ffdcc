"""Parameters of the ``rats_stream`` node: one table, declared with descriptors, validated once.

Every parameter is declared at construction with a :class:`ParameterDescriptor` carrying its
description and, for numbers, its range, so ``ros2 param describe`` shows both on a robot.
:func:`read` turns the declared values into a validated :class:`NodeParams`; any value outside its
range raises :class:`~rats_ros.errors.ConfigError` whose message names the parameter, the value
and the allowed range. The node applies parameters at ``configure``; a ``ros2 param set`` while it
runs is checked by :func:`check` at once and takes effect at the next configure.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, fields, make_dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

from rats_ros.errors import ConfigError
from rats_ros.recall.stores import is_url, stream_name

DEFAULT_STORE_NAME = "rats_ros/captions.db"


@dataclass(frozen=True)
class Spec:
    """One parameter: its default (which fixes its type), range or choices, and description."""

    name: str
    default: object
    description: str
    low: float | int | None = None     # inclusive lower bound (numbers)
    high: float | int | None = None    # inclusive upper bound (numbers)
    choices: tuple[str, ...] = ()      # allowed strings
    open_low: bool = False             # lower bound excluded, e.g. keep_ratio in (0, 1]

    def allowed(self) -> str:
        """Human-readable allowed range, used in every refusal message."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is not None:
            bracket = "(" if self.open_low else "["
            return f"{bracket}{self.low}, {self.high}]"
        return f"a {type(self.default).__name__}"


SPECS: tuple[Spec, ...] = (
    Spec("model", "tiny-random", "Video-LLM: a local checkpoint directory, a Hugging Face id "
         "already in the local cache, or tiny-random / tiny-random-qwen2_5_vl / "
         "tiny-random-qwen3_vl (random weights, built offline; captions are meaningless, for "
         "tests and demos)."),
    Spec("device", "cpu", "Torch device for the model: cpu, cuda or cuda:N."),
    Spec("dtype", "float32", "Model weight dtype.", choices=("float32", "float16", "bfloat16")),
    Spec("engine", "torch", "What runs the vision tower and the LLM: torch, or onnx (ONNX "
         "Runtime over the graphs `rats-ros export-onnx` wrote into engine_dir).",
         choices=("torch", "onnx")),
    Spec("engine_dir", "", "The export directory of engine onnx."),
    Spec("weights", "native", "LLM projection weights: native (dtype), or weight-only int8 / "
         "int4 on the fast decode path (LLaVA-OneVision, Qwen2.5-VL; int4 on CUDA needs "
         "bfloat16).", choices=("native", "int8", "int4")),
    Spec("fps", 0.5, "Frames sampled per second of stream time (header stamps); the paper uses "
         "0.5 or 1.", low=0.01, high=60.0),
    Spec("clip_frames", 16, "Sampled frames per clip (paper: 16).", low=1, high=256),
    Spec("keep_ratio", 0.0625, "Fraction of a clip's visual tokens kept as memory "
         "(paper: 1/16).", low=0.0, high=1.0, open_low=True),
    Spec("memory_clips", 16, "Past clips whose kept tokens stay in the FIFO memory "
         "(paper: 16).", low=1, high=1024),
    Spec("selection", "attention", "How kept tokens are chosen: attention (rLiVS), uniform, "
         "random, or all.", choices=("attention", "uniform", "random", "all")),
    Spec("recurrence", True, "Feed kept tokens of past clips back as memory (false = each clip "
         "captioned alone)."),
    Spec("max_caption_tokens", 64, "Most new tokens in one clip caption.", low=1, high=4096),
    Spec("store_path", "", "SQLite caption store file, or a postgresql://user:password@host:port"
         "/db URL for a memory shared by a fleet; empty = $ROS_HOME/" + DEFAULT_STORE_NAME
         + " (ROS_HOME defaults to ~/.ros). Clip indices continue across restarts."),
    Spec("robot_id", "", "This robot's name in a shared (PostgreSQL) store: captions are keyed "
         "by robot, stream and clip index. Empty = the hostname."),
    Spec("spool_path", "", "Local SQLite spool for captions written while the PostgreSQL store is "
         "unreachable (flushed in order when it returns); empty = $ROS_HOME/rats_ros/spool.db."),
    Spec("spool_max_rows", 10000, "Captions the spool holds at most; beyond, captions wait in "
         "memory (store_backlog) and /diagnostics says ERROR.", low=1, high=10_000_000),
    Spec("store_backlog", 256, "Captions held in memory while the store refuses writes (disk "
         "full, I/O error); stored and published in order when it accepts them again. Beyond "
         "this the oldest is given up, counted and reported as ERROR.", low=1, high=100000),
    Spec("retention_max_age_s", 0.0, "Delete captions stored more than this many seconds ago "
         "(wall clock); 0 = keep forever.", low=0.0, high=1e10),
    Spec("retention_max_rows", 0, "Keep at most this many captions of the stream (oldest go "
         "first); 0 = no limit.", low=0, high=2**62),
    Spec("stream_id", "default", "Name of this camera stream inside the store (letters, digits, "
         "_ . -)."),
    Spec("cameras", ("",), "Camera names, one model for all: camera c subscribes c/image (or "
         "c/image/compressed), relative, remappable, and is its own store stream "
         "<stream_id>/<c> with its own clips, memory and clip indices. The default [''] is one "
         "camera on image, stream <stream_id>."),
    Spec("batch_cameras", True, "Caption the clips several cameras have ready in one batched "
         "decode (GPU fast path; each camera's caption equals its own); false = one clip at a "
         "time, cameras in turn."),
    Spec("pose_topic", "", "The robot's pose topic, e.g. odom or amcl_pose (relative, "
         "remappable); each caption gets the pose nearest in time to its clip's end. Empty = "
         "no poses."),
    Spec("pose_type", "odometry", "Message type of pose_topic: odometry (nav_msgs/Odometry), "
         "pose (geometry_msgs/PoseStamped) or amcl (geometry_msgs/PoseWithCovarianceStamped).",
         choices=("odometry", "pose", "amcl")),
    Spec("pose_tolerance_s", 0.5, "A caption gets a pose only if one is stamped within this "
         "many seconds of its clip's end.", low=0.001, high=60.0),
    Spec("pose_frame", "", "The frame every pose must be in (e.g. map); poses in another frame "
         "are refused and counted. Empty = the frame of the first pose received."),
    Spec("image_transport", "raw", "raw subscribes `image` (sensor_msgs/Image); compressed "
         "subscribes `image/compressed` (sensor_msgs/CompressedImage).",
         choices=("raw", "compressed")),
    Spec("depth_images", "refuse", "16UC1 / 32FC1 depth images: refuse them (counted as "
         "depth_image: a Video-LLM captions colour) or colormap (caption a colour-mapped "
         "picture of the depth, as cv_bridge displays it).", choices=("refuse", "colormap")),
    Spec("qos_reliability", "best_effort", "Reliability of the image subscription; the rest is "
         "sensor-data QoS (keep last 5, volatile).", choices=("best_effort", "reliable")),
    Spec("queue_size", 8, "Decoded frames waiting for the sampler; when full the oldest is "
         "dropped and counted.", low=1, high=1000),
    Spec("clip_queue_size", 2, "Complete clips waiting for the model; when full the oldest clip "
         "is dropped and counted (captioning is behind real time).", low=1, high=64),
    Spec("max_image_side", 768, "Decoded frames are downscaled so their longer side is at most "
         "this many pixels.", low=16, high=8192),
    Spec("idle_flush", 10.0, "Caption a partial clip after this many seconds without a new "
         "frame (end of a bag, camera stopped); 0 = never.", low=0.0, high=3600.0),
    Spec("input_timeout_s", 10.0, "WARN on /diagnostics when a camera's image topic brings no "
         "message for this many seconds while active (a driver gone, a wrong remapping, frames "
         "lost in DDS before the node); 0 = never.", low=0.0, high=3600.0),
    Spec("embedder", "sentence", "Question/caption embedder for retrieval: sentence "
         "(all-MiniLM-L6-v2) or model (the Video-LLM's token embeddings, as in the paper).",
         choices=("sentence", "model")),
    Spec("context_tokens", 10000, "Token budget of the captions given to the LLM for one "
         "answer (paper: 10K).", low=256, high=1_000_000),
    Spec("max_answer_tokens", 128, "Most new tokens in one answer.", low=1, high=4096),
    Spec("time_format", "auto", "How the answerer's caption lines give times: clock (local "
         "time and age, '14:03, 2 h 5 min ago'), stream (seconds from the first "
         "caption, the paper's format) or auto (clock unless the stamps are simulation time).",
         choices=("auto", "clock", "stream")),
    Spec("timezone", "", "IANA time zone of clock times (e.g. Europe/Berlin, UTC); empty: the "
         "system's."),
    Spec("temporal_evidence", True, "Give first / last / how many / before-after questions "
         "evidence holding every matching caption's earliest and latest and each episode "
         "(false: MMR alone, the paper's rule)."),
    Spec("mmr_pool", 0, "MMR ranks only this many captions most relevant to the question; 0: "
         "the whole window, the paper's exact rule. 4096 over a month of captions: ~20x faster, "
         "a different evidence set (bench/RESULTS.md 'Temporal evidence').", low=0,
         high=100_000_000),
    Spec("question_queue_size", 4, "AskVideo requests held at once (one answered, the rest "
         "waiting their turn); more are answered at once with success=false, 'busy, retry'.",
         low=1, high=64),
    Spec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", low=0.1,
         high=60.0),
    Spec("publish_overlay", False, "Publish ~/selection_overlay: each clip's frames tiled with "
         "the kept patches highlighted."),
    Spec("autostart", True, "Configure and activate at startup (no lifecycle manager needed); "
         "a failed configure then exits non-zero."),
)
SPECS_BY_NAME = {spec.name: spec for spec in SPECS}
_STREAM_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_CAMERA = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")
_MAX_CAMERAS = 16


class _ParamRules:
    """What :class:`NodeParams` adds to its fields: validation and derived values."""

    def __post_init__(self):
        for item in fields(self):
            problem = check(item.name, getattr(self, item.name))
            if problem:
                raise ConfigError(problem)

    @property
    def clip_duration_s(self) -> float:
        """Stream seconds covered by one full clip (the real-time budget per clip)."""
        return self.clip_frames / self.fps

    def camera_streams(self) -> list[tuple[str, str]]:
        """``(camera, stream id)`` per camera: ``stream_id`` alone for the single unnamed
        camera, ``<stream_id>/<camera>`` for named ones."""
        return [(camera, stream_name(self.stream_id, camera)) for camera in self.cameras]

    def resolved_store_path(self) -> str:
        """The store: a PostgreSQL URL as given, ``store_path`` with ``~`` expanded, or the
        ROS_HOME default file."""
        if is_url(self.store_path):
            return self.store_path
        if self.store_path:
            return os.path.expanduser(self.store_path)
        return _ros_home_file(DEFAULT_STORE_NAME)

    def resolved_spool_path(self) -> str:
        """The spool file of a PostgreSQL store."""
        return os.path.expanduser(self.spool_path) if self.spool_path else \
            _ros_home_file("rats_ros/spool.db")


def _ros_home_file(name: str) -> str:
    ros_home = os.environ.get("ROS_HOME") or os.path.join("~", ".ros")
    return os.path.expanduser(os.path.join(ros_home, name))


#: Validated parameter values: one frozen field per :data:`SPECS` entry, of its default's type.
#: :raises ConfigError: when a value is out of its range; the message gives the allowed range.
NodeParams = make_dataclass("NodeParams", [(spec.name, type(spec.default)) for spec in SPECS],
                            bases=(_ParamRules,), frozen=True)


def check(name: str, value) -> str | None:
    """Check one parameter value.

    :param name: parameter name (unknown names are not ours and pass).
    :param value: the proposed value.
    :returns: ``None`` when allowed, else a message naming the value and the allowed range.
    """
    spec = SPECS_BY_NAME.get(name)
    if spec is None:
        return None
    wanted = type(spec.default)
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if wanted is tuple and isinstance(value, list):  # rclpy gives string arrays as lists
        value = tuple(value)
    if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
        return (f"parameter {name}={value!r} has the wrong type: expected {wanted.__name__}, "
                f"allowed {spec.allowed()}")
    bad = _bad_cameras(value) if name == "cameras" else (
        _out_of_range(spec, value) or _bad_string(name, value))
    if bad:
        return f"parameter {name}={value!r} is invalid: {bad}"
    return None


def _out_of_range(spec: Spec, value) -> str | None:
    if spec.choices and value not in spec.choices:
        return f"allowed: {spec.allowed()}"
    if spec.low is None or isinstance(value, bool):
        return None
    too_low = value <= spec.low if spec.open_low else value < spec.low
    if too_low or value > spec.high or value != value:  # value != value: NaN
        return f"allowed range is {spec.allowed()}"
    return None


def _bad_string(name: str, value) -> str | None:
    if name == "model" and not value.strip():
        return "give a checkpoint directory, a cached Hugging Face id, or tiny-random"
    if name == "device" and not _DEVICE.match(value):
        return "allowed values are 'cpu', 'cuda' or 'cuda:N'"
    if name == "stream_id" and not _STREAM_ID.match(value):
        return "use 1 to 64 letters, digits, '_', '.' or '-'"
    return None


def _bad_cameras(names: tuple) -> str | None:
    if not names or len(names) > _MAX_CAMERAS:
        return f"give 1 to {_MAX_CAMERAS} camera names"
    if names == ("",):
        return None
    if len(set(names)) != len(names) or not all(isinstance(n, str) and _CAMERA.match(n)
                                                for n in names):
        return ("camera names must be distinct relative names (letters, digits, '_', parts "
                "joined by '/'), e.g. ['front', 'rear']; [''] alone means one camera on image")
    return None


def descriptor(spec: Spec) -> ParameterDescriptor:
    """The ROS descriptor of one parameter: description, allowed values, numeric range."""
    text = spec.description
    if spec.choices:
        text += f" Allowed: {', '.join(spec.choices)}."
    desc = ParameterDescriptor(description=text, additional_constraints=spec.allowed())
    if spec.low is not None and isinstance(spec.default, float):
        desc.floating_point_range = [
            FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high))]
    elif spec.low is not None:
        desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high))]
    return desc


def declare(node) -> None:
    """Declare every parameter on ``node`` with its descriptor and default.

    :raises ConfigError: when an override (YAML file, ``-p``) has the wrong type or is out of
        range; the message names the parameter and the allowed range.
    """
    refuse_unknown(node)
    for spec in SPECS:
        try:
            node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except InvalidParameterTypeException as error:
            raise ConfigError(
                f"parameter {spec.name} has the wrong type ({error}); expected "
                f"{type(spec.default).__name__}, allowed {spec.allowed()} (write 1.0, not 1, "
                "for a float)") from error
        except InvalidParameterValueException as error:
            raise ConfigError(f"parameter {spec.name} refused ({error}); allowed range "
                              f"{spec.allowed()}") from error


def refuse_unknown(node) -> None:
    """Refuse an override (``-p``, a params file) that names no parameter of this node: a typo
    such as ``modle:=...`` would otherwise be ignored and the node start on a default.

    :raises ConfigError: naming the override and the closest parameter.
    """
    # rclpy keeps a node's overrides in _parameter_overrides (it has no public accessor);
    # parameters rclpy declares itself (use_sim_time, ...) are already declared here
    unknown = sorted(name for name in getattr(node, "_parameter_overrides", {})
                     if name not in SPECS_BY_NAME and not node.has_parameter(name))
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, list(SPECS_BY_NAME), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"parameter {name!r} is not a parameter of this node; {hint}"
                          "docs/PARAMETERS.md lists them all")


def read(node) -> NodeParams:
    """Read the declared parameters of ``node`` into a validated :class:`NodeParams`.

    :raises ConfigError: when a value is invalid.
    """
    values = {spec.name: node.get_parameter(spec.name).value for spec in SPECS}
    return NodeParams(**{name: tuple(value) if isinstance(SPECS_BY_NAME[name].default, tuple)
                         else value for name, value in values.items()})
