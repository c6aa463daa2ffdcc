"""``rats-ros``: caption bags or videos offline, ask questions, evaluate, write samples, replay.

Exit codes: 0 success; 2 refusals (bad options, missing/empty/corrupt input, a checkpoint that
cannot load, render or run, a bad question or time window); 1 store or other runtime errors,
including unexpected ones (one line; ``--debug`` prints the traceback); 130 interrupted.

Times on the command line and in the JSON output are seconds on the input's own clock: the
header stamps of a bag (or its log times when headers are zero), the timestamps of a video.
``ask --since/--until`` take the same numbers as the ``start``/``end`` that ``caption`` prints.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from rats_ros.errors import ConfigError, RatsError
from rats_ros.tools import ask, caption, doctor, evaluate, export
from rats_ros.tools.options import (
    add_engine_options,
    backend_options,
    fail,
    positive_float,
    show_defaults,
)


def _check_model_parser(sub) -> None:
    parser = sub.add_parser("check-model", help="load a checkpoint and print what it will do",
                            description="Load MODEL; print family, device, dtype, visual tokens "
                                        "per frame and clip, the captioning prompt, read-out "
                                        "layers and a GPU memory estimate. Exit 2 if refused.")
    parser.add_argument("model", help="checkpoint directory, cached Hugging Face id or tiny-*")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--height", type=int, default=480, help="frame height, px")
    parser.add_argument("--width", type=int, default=640, help="frame width, px")
    add_engine_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run_check_model)


def _run_check_model(args) -> int:
    from rats_ros.models import load_backend
    from rats_ros.models.summary import summarize
    from rats_ros.stream.captioner import DEFAULT_PROMPT

    try:
        if min(args.frames, args.height, args.width) < 1:
            raise ConfigError("--frames, --height and --width must be >= 1")
        backend = load_backend(args.model, **backend_options(args))
        summary = summarize(backend, args.frames, args.height, args.width,
                            prompt=DEFAULT_PROMPT)
    except RatsError as error:
        return fail("check-model", error)
    if args.json:
        print(json.dumps(dataclasses.asdict(summary)))
    else:
        print("\n".join(summary.lines()))
    return 0


def _sample_parser(sub) -> None:
    parser = sub.add_parser(
        "sample-bag", help="write a synthetic camera bag (for demos, tests)",
        description="Write a synthetic camera bag: by default the synthetic world the bundled "
                    "synthetic-world model captions (what make demo replays).",
)
    parser.add_argument("out_dir", help="bag directory to create")
    parser.add_argument("--scene", choices=("world", "shapes"), default="world",
                        help="world: coloured shapes entering, moving and leaving, one frame "
                             "every 2 s (synthetic-world captions it); shapes: a moving ball, "
                             "box and bar (for decoding and timing tests)")
    parser.add_argument("--clips", type=int, default=6,
                        help="world: clips of 16 frames (32 s each)")
    parser.add_argument("--seed", type=int, default=3,
                        help="world: which unseen world (3 is the demo's)")
    parser.add_argument("--seconds", type=positive_float, default=64.0, help="shapes: length")
    parser.add_argument("--fps", type=positive_float, default=2.0, help="shapes: frame rate")
    parser.add_argument("--size", default="320x240", help="shapes: WIDTHxHEIGHT")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    parser.add_argument("--compressed", action="store_true", help="CompressedImage (JPEG)")
    parser.add_argument("--topic", default="/camera/image_raw")
    parser.set_defaults(handler=_run_sample_bag)


def build_parser() -> argparse.ArgumentParser:
    """The ``rats-ros`` argument parser (``replay`` and ``ask-node`` are handed to
    :mod:`rats_ros.ros.replay` and :mod:`rats_ros.ros.ask_client`)."""
    parser = argparse.ArgumentParser(prog="rats-ros",
                                     description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    caption.add_parser(sub)
    ask.add_parser(sub)
    _check_model_parser(sub)
    evaluate.add_parser(sub)
    export.add_parser(sub)
    doctor.add_parser(sub)
    _sample_parser(sub)
    sub.add_parser("replay", add_help=False,
                   help="publish a bag's image topic on ROS 2 (rats-ros replay --help)")
    sub.add_parser("ask-node", add_help=False,
                   help="ask a running node's ask_video from another shell, several questions "
                        "per call (rats-ros ask-node --help)")
    show_defaults(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``rats-ros``. :returns: the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "replay":
        from rats_ros.ros.replay import main as replay_main  # imports rclpy only when replaying

        return replay_main(argv[1:])
    if argv and argv[0] == "ask-node":
        from rats_ros.ros.ask_client import main as ask_node_main  # a ROS client by nature

        return ask_node_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("rats-ros: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the boundary: a bug, reported in one line
        if args.debug:
            raise
        print(f"rats-ros {args.command}: unexpected {type(error).__name__}: {error} (a bug: "
              "run again with --debug for the traceback and report it)", file=sys.stderr)
        return 1



def _run_sample_bag(args) -> int:
    try:
        count = _write_sample(args)
    except RatsError as error:
        return fail("sample-bag", error)
    print(f"wrote {count} frames on {args.topic} to {args.out_dir} ({args.storage})")
    return 0


def _write_sample(args) -> int:
    """The bag ``args`` ask for. :returns: frames written. :raises RatsError: bad settings."""
    if args.scene == "world":
        from rats_ros.io.bags import write_image_bag
        from rats_ros.world import scene
        from rats_ros.world.evaluate import EVAL_SEED_BASE

        if not 1 <= args.clips <= 10_000 or args.seed < 0:
            raise ConfigError("--clips must be 1 to 10000 and --seed >= 0")
        frames = scene.frames(scene.generate(EVAL_SEED_BASE + args.seed, args.clips))
        return write_image_bag(args.out_dir, frames, topic=args.topic, storage=args.storage,
                               compressed=args.compressed)
    from rats_ros.io.sample_scene import write_sample_bag

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError as error:
        raise ConfigError(f"--size must be WIDTHxHEIGHT, got {args.size!r}") from error
    return write_sample_bag(args.out_dir, seconds=args.seconds, fps=args.fps,
                            size=(width, height), storage=args.storage,
                            compressed=args.compressed, topic=args.topic)
