"""The node's parameters as one table, ROS-free: the node declares them (``ros/params.py``),
the launch file's arguments and ``docs/PARAMETERS.md`` are written from them, and the CLI's
options that mean the same thing take their defaults, choices and help from them
(:func:`cli_option`)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

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
    Spec("cache_dir", "", "Where the CUDA fast path keeps its tile choices per GPU, driver, "
         "model shape and software version, so a restart skips timing them; empty = "
         "$ROS_HOME/rats_ros/cache, none = time them on every start."),
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


def cli_option(parser: argparse.ArgumentParser, name: str, flag: str | None = None,
               **overrides) -> None:
    """Add the CLI option of node parameter ``name`` (``--name-with-dashes`` unless ``flag``):
    its default, type, choices and description from :data:`SPECS`; ``overrides`` replace any
    of ``add_argument``'s keywords (e.g. a CLI-only choice)."""
    spec = SPECS_BY_NAME[name]
    kwargs = {"default": spec.default, "help": spec.description}
    if spec.choices:
        kwargs["choices"] = spec.choices
    elif not isinstance(spec.default, (bool, list)):
        kwargs["type"] = type(spec.default)
    kwargs.update(overrides)
    parser.add_argument(flag or "--" + name.replace("_", "-"), **kwargs)
