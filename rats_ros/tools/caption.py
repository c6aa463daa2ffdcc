"""``rats-ros caption``: caption a bag or a video clip by clip, one JSON line per clip."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rats_ros.errors import InputError, RatsError
from rats_ros.settings import cli_option
from rats_ros.tools.options import NS, add_model_options, backend_config, fail, where_json


def add_parser(sub) -> None:
    parser = sub.add_parser("caption", help="caption a rosbag2 bag or a video file, clip by clip",
                            description="Caption a bag or video with the rLiVS loop; one JSON "
                                        "line per clip.")
    parser.add_argument("input", help="rosbag2 directory (or its .db3/.mcap file) or video file")
    add_model_options(parser, required=True)
    parser.add_argument("--topic", help="one image topic of the bag, captioned as the single "
                                        "unnamed camera (stream --stream-id)")
    parser.add_argument("--topics", help="image topics of the bag, comma-separated, each "
                                         "captioned as its own camera (stream "
                                         "<stream-id>/<camera>, camera named after the topic); "
                                         "default: all of them")
    parser.add_argument("--pose-topic", help="nav_msgs/Odometry, PoseStamped or "
                                             "PoseWithCovarianceStamped topic of the bag: each "
                                             "caption gets the pose nearest its clip's end")
    parser.add_argument("--pose-tolerance", type=float, default=0.5,
                        help="seconds within which a pose counts as the clip's (default 0.5)")
    for name in ("fps", "clip_frames", "keep_ratio", "memory_clips", "selection"):
        cli_option(parser, name)  # the node parameter's default, choices and description
    parser.add_argument("--no-recurrence", action="store_true",
                        help="caption every clip alone (no memory of past clips)")
    cli_option(parser, "max_caption_tokens", "--max-new-tokens")
    parser.add_argument("--prompt", help="captioning instruction (default: the paper's)")
    cli_option(parser, "max_image_side", "--max-side")
    parser.add_argument("--out", help="JSON lines file (default: stdout)")
    parser.add_argument("--store", help="also store each caption in this caption store: a SQLite "
                                        "file or a postgresql:// URL (with --robot)")
    cli_option(parser, "embedder", choices=("sentence", "model", "none"),
               help="embed captions stored with --store now with this embedder (none: at the "
                    "first question)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.set_defaults(handler=run)



def run(args) -> int:
    from rats_ros.stream.poses import PoseTrack

    undecodable = []
    try:
        _check_out(args.out)  # before the model loads: a bad path fails fast
        config = pipeline_config(args)  # checks every setting before reading
        poses = PoseTrack(args.pose_tolerance) if args.pose_topic else None
        cameras, items, total = open_cameras(
            args, on_error=lambda stamp, error: undecodable.append(error))
    except RatsError as error:
        return fail("caption", error)
    with _Session(args, cameras, poses) as session:
        try:
            session.start(config)
            clips = session.caption_all(items, total)
        except RatsError as error:
            return fail("caption", error)
    stats = session.frame_stats()
    if not args.quiet:
        _summary(args, clips, stats, undecodable)
    if clips == 0:
        reason = f": {undecodable[0]}" if undecodable else ""
        return fail("caption", InputError(
            f"no clip could be made from {args.input} ({stats.received} frames "
            f"decoded, {len(undecodable)} not){reason}; pass an input with colour images"))
    return 0


def pipeline_config(args):
    """The :class:`~rats_ros.pipeline.PipelineConfig` of the command's options.
    :raises ConfigError: a setting out of range."""
    from rats_ros.pipeline import PipelineConfig
    from rats_ros.stream.captioner import DEFAULT_PROMPT, CaptionerConfig

    captioner = CaptionerConfig(
        keep_ratio=args.keep_ratio, memory_clips=args.memory_clips, selection=args.selection,
        recurrence=not args.no_recurrence, prompt=args.prompt or DEFAULT_PROMPT,
        max_new_tokens=args.max_new_tokens)
    return PipelineConfig(backend_config(args), captioner,
                          embedder=args.embedder if args.store else "none", fps=args.fps,
                          clip_frames=args.clip_frames)


def open_cameras(args, on_error):
    """The input as ``(camera names, items, total)``: items are ``(camera, Frame)`` and, with
    ``--pose-topic``, ``(None, Pose)``. A video, a bag read with ``--topic`` or a bag with one
    image topic (and no ``--topics``) is the single unnamed camera ``""``.

    :raises InputError: missing, corrupt or empty input, unknown topics.
    """
    from rats_ros.io.bag_streams import pick_cameras, read_cameras
    from rats_ros.io.bags import is_bag, open_input

    source = args.input
    if is_bag(source) and (args.topics or args.pose_topic or not args.topic):
        topics = [t.strip() for t in args.topics.split(",") if t.strip()] if args.topics \
            else ([args.topic] if args.topic else None)
        cameras = pick_cameras(source, topics)
        single = len(cameras) == 1 and not args.topics
        if single:  # one camera keeps the stream and output of a plain run
            cameras = {"": next(iter(cameras.values()))}
        items = read_cameras(source, cameras, args.pose_topic, args.max_side, on_error)
        return list(cameras), items, None
    frames, total = open_input(source, args.topic, max_side=args.max_side, on_error=on_error)
    return [""], (("", frame) for frame in frames), total


def _check_out(out) -> None:
    """:raises InputError: when ``--out`` is a directory or its directory does not exist."""
    if out is None:
        return
    path = Path(out)
    if path.is_dir() or not path.parent.is_dir():
        raise InputError(f"--out {out!r} must be a file in an existing directory")


class _Session:
    """The pipeline, the per-camera captioners and clip assemblers, the optional stores, and
    the output of one ``caption`` run."""

    def __init__(self, args, cameras: list[str], poses=None):
        self.args, self.cameras, self.poses = args, cameras, poses
        self.stores, self.captioners, self.assemblers = {}, {}, {}
        self.pipeline = None
        self.out = sys.stdout

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for store in self.stores.values():
            store.close()
        if self.out is not sys.stdout:
            self.out.close()

    def start(self, config) -> None:
        from rats_ros.pipeline import Pipeline
        from rats_ros.recall.stores import open_writer, stream_name

        args = self.args
        if args.store:  # opened before the model: a bad store fails fast (no spool here: an
            # unreachable database ends the run with exit code 1)
            writer = f"rats-ros caption (pid {os.getpid()})"
            for camera in self.cameras:
                self.stores[camera] = open_writer(args.store, stream_name(args.stream_id, camera),
                                                  writer=writer, robot=args.robot)
        self.pipeline = Pipeline(config)
        for camera in self.cameras:
            start = self.stores[camera].next_clip_index() if camera in self.stores else 0
            self.captioners[camera] = self.pipeline.captioner(start)
            self.assemblers[camera] = self.pipeline.assembler()
        if args.out:
            self.out = open(args.out, "w", encoding="utf-8")  # closed in __exit__

    def caption_all(self, items, total) -> int:
        from tqdm import tqdm

        quiet = self.args.quiet or not sys.stderr.isatty()
        clips = 0
        with tqdm(total=total, unit="frame", file=sys.stderr, disable=quiet) as progress:
            for camera, item in items:
                if camera is None:  # a pose
                    self.poses.add(item)
                    continue
                progress.update(1)
                clip = self.assemblers[camera].push(item)
                if clip is not None:
                    self.caption(camera, clip)
                    clips += 1
                    progress.set_postfix(clips=clips)
        for camera, assembler in self.assemblers.items():
            last = assembler.flush()
            if last is not None:
                self.caption(camera, last)
                clips += 1
        return clips

    def caption(self, camera: str, clip) -> None:
        result = self.captioners[camera].step(clip)
        result.camera = camera
        if self.poses is not None:
            self.poses.place(result)
        if camera in self.stores:
            embedding, name = self.pipeline.embed(result.text)
            self.stores[camera].add(result, embedding, embedder=name)
        self.out.write(json.dumps(_caption_record(result)) + "\n")
        self.out.flush()

    def frame_stats(self):
        """The clip assemblers' frame counters, summed over the cameras."""
        from rats_ros.stream.clips import AssemblerStats

        total = AssemblerStats()
        for assembler in self.assemblers.values():
            for name, value in vars(assembler.stats).items():
                setattr(total, name, getattr(total, name) + value)
        return total


def _caption_record(result) -> dict:
    return {"clip_index": result.clip_index, "start": result.start_ns / NS,
            "end": result.end_ns / NS, "text": result.text, "frames": result.frames,
            "visual_tokens": result.visual_tokens, "kept_tokens": result.kept_tokens,
            "memory_tokens": result.memory_tokens,
            "processing_time": round(result.processing_time, 6)} | where_json(result)


def _summary(args, clips, stats, undecodable) -> None:
    print(f"rats-ros caption: {clips} clips from {stats.received} frames ({stats.sampled} "
          f"sampled at {args.fps} fps, {stats.out_of_order} out of order, {stats.time_jumps} "
          f"time jumps, {len(undecodable)} undecodable)", file=sys.stderr)
    if undecodable:
        print(f"rats-ros caption: first undecodable frame: {undecodable[0]}", file=sys.stderr)
