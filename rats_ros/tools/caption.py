"""``rats-ros caption``: caption a bag or a video clip by clip, one JSON line per clip."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rats_ros.errors import InputError, RatsError
from rats_ros.tools.options import NS, add_model_options, fail


def add_parser(sub) -> None:
    parser = sub.add_parser("caption", help="caption a rosbag2 bag or a video file, clip by clip",
                            description="Caption a bag or video with the rLiVS loop; one JSON "
                                        "line per clip.")
    parser.add_argument("input", help="rosbag2 directory (or its .db3/.mcap file) or video file")
    add_model_options(parser, required=True)
    parser.add_argument("--topic", help="image topic of the bag (default: the only one)")
    parser.add_argument("--fps", type=float, default=0.5, help="frames sampled per second")
    parser.add_argument("--clip-frames", type=int, default=16, help="sampled frames per clip")
    parser.add_argument("--keep-ratio", type=float, default=1 / 16,
                        help="fraction of a clip's visual tokens kept as memory")
    parser.add_argument("--memory-clips", type=int, default=16, help="clips in the FIFO memory")
    parser.add_argument("--selection", default="attention",
                        help="attention (rLiVS), uniform, random or all")
    parser.add_argument("--no-recurrence", action="store_true",
                        help="caption every clip alone (no memory of past clips)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="caption length limit")
    parser.add_argument("--prompt", help="captioning instruction (default: the paper's)")
    parser.add_argument("--max-side", type=int, default=768,
                        help="frames are downscaled so their longest side is at most this")
    parser.add_argument("--out", help="JSON lines file (default: stdout)")
    parser.add_argument("--store", help="also store each caption in this SQLite caption store")
    parser.add_argument("--embedder", choices=("sentence", "model", "none"), default="sentence",
                        help="embed captions stored with --store now (none: at the first "
                             "question)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.set_defaults(handler=run)



def run(args) -> int:
    from rats_ros.io.bags import open_input
    from rats_ros.stream.captioner import DEFAULT_PROMPT, CaptionerConfig
    from rats_ros.stream.clips import ClipAssembler

    try:
        _check_out(args.out)  # before the model loads: a bad path fails fast
        assembler = ClipAssembler(fps=args.fps, clip_frames=args.clip_frames)
        config = CaptionerConfig(
            keep_ratio=args.keep_ratio, memory_clips=args.memory_clips, selection=args.selection,
            recurrence=not args.no_recurrence, prompt=args.prompt or DEFAULT_PROMPT,
            max_new_tokens=args.max_new_tokens)
        undecodable = []
        frames, total = open_input(args.input, args.topic, max_side=args.max_side,
                                   on_error=lambda stamp, error: undecodable.append(error))
    except RatsError as error:
        return fail("caption", error)
    with _Session(args) as session:
        try:
            session.start(config)
            clips = session.caption_all(frames, total, assembler)
        except RatsError as error:
            return fail("caption", error)
    if not args.quiet:
        _summary(args, clips, assembler.stats, undecodable)
    if clips == 0:
        reason = f": {undecodable[0]}" if undecodable else ""
        return fail("caption", InputError(
            f"no clip could be made from {args.input} ({assembler.stats.received} frames "
            f"decoded, {len(undecodable)} not){reason}; pass an input with colour images"))
    return 0


def _check_out(out) -> None:
    """:raises InputError: when ``--out`` is a directory or its directory does not exist."""
    if out is None:
        return
    path = Path(out)
    if path.is_dir() or not path.parent.is_dir():
        raise InputError(f"--out {out!r} must be a file in an existing directory")


class _Session:
    """The backend, captioner, optional store/embedder and output of one ``caption`` run."""

    def __init__(self, args):
        self.args = args
        self.store = self.embedder = self.captioner = None
        self.out = sys.stdout

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.store is not None:
            self.store.close()
        if self.out is not sys.stdout:
            self.out.close()

    def start(self, config) -> None:
        from rats_ros.models import load_backend
        from rats_ros.stream.captioner import RecurrentCaptioner

        args = self.args
        backend = load_backend(args.model, args.device, args.dtype)
        start_index = 0
        if args.store:
            from rats_ros.recall.embedders import make_embedder
            from rats_ros.recall.store import CaptionStore

            self.store = CaptionStore(args.store, stream_id=args.stream_id,
                                      writer=f"rats-ros caption (pid {os.getpid()})")
            start_index = self.store.next_clip_index()
            if args.embedder != "none":
                self.embedder = make_embedder(args.embedder, backend=backend)
        self.captioner = RecurrentCaptioner(backend, config, start_index)
        if args.out:
            self.out = open(args.out, "w", encoding="utf-8")  # closed in __exit__

    def caption_all(self, frames, total, assembler) -> int:
        from tqdm import tqdm

        quiet = self.args.quiet or not sys.stderr.isatty()
        clips = 0
        with tqdm(total=total, unit="frame", file=sys.stderr, disable=quiet) as progress:
            for frame in frames:
                progress.update(1)
                clip = assembler.push(frame)
                if clip is not None:
                    self.caption(clip)
                    clips += 1
                    progress.set_postfix(clips=clips)
        last = assembler.flush()
        if last is not None:
            self.caption(last)
            clips += 1
        return clips

    def caption(self, clip) -> None:
        result = self.captioner.step(clip)
        if self.store is not None:
            embedding = self.embedder.embed([result.text])[0] if self.embedder else None
            name = self.embedder.name if self.embedder else ""
            self.store.add(result, embedding, embedder=name)
        self.out.write(json.dumps(_caption_record(result)) + "\n")
        self.out.flush()


def _caption_record(result) -> dict:
    return {"clip_index": result.clip_index, "start": result.start_ns / NS,
            "end": result.end_ns / NS, "text": result.text, "frames": result.frames,
            "visual_tokens": result.visual_tokens, "kept_tokens": result.kept_tokens,
            "memory_tokens": result.memory_tokens,
            "processing_time": round(result.processing_time, 6)}


def _summary(args, clips, stats, undecodable) -> None:
    print(f"rats-ros caption: {clips} clips from {stats.received} frames ({stats.sampled} "
          f"sampled at {args.fps} fps, {stats.out_of_order} out of order, {stats.time_jumps} "
          f"time jumps, {len(undecodable)} undecodable)", file=sys.stderr)
    if undecodable:
        print(f"rats-ros caption: first undecodable frame: {undecodable[0]}", file=sys.stderr)
