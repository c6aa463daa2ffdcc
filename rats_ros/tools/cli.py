"""``rats-ros``: caption a bag or video offline, ask questions about it, write a sample bag, replay.

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
import os
import sys
import time
from pathlib import Path

from rats_ros.errors import ConfigError, InputError, ModelError, QuestionError, RatsError

_NS = 1_000_000_000
_USAGE_ERRORS = (ConfigError, InputError, ModelError, QuestionError)


def _stream_seconds(text: str) -> float:
    """A time on the input's clock in seconds: finite, 0 or more, at most 1e11 (year 5138)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.0 <= value <= 1e11:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be a time in seconds in [0, 1e11], got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _add_model_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--model", required=required,
                        help="checkpoint directory, cached Hugging Face id, or tiny-random / "
                             "tiny-random-qwen2_5_vl / tiny-random-qwen3_vl (random weights, "
                             "for tests)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--stream-id", default="default", help="stream name inside the store")


def _caption_parser(sub) -> None:
    parser = sub.add_parser("caption", help="caption a rosbag2 bag or a video file, clip by clip",
                            description="Caption a bag or video with the rLiVS loop; one JSON "
                                        "line per clip.")
    parser.add_argument("input", help="rosbag2 directory (or its .db3/.mcap file) or video file")
    _add_model_options(parser, required=True)
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
    parser.set_defaults(handler=_run_caption)


def _ask_parser(sub) -> None:
    parser = sub.add_parser("ask", help="answer a question from a caption store",
                            description="Answer a question from the captions in a store.")
    parser.add_argument("question")
    parser.add_argument("--store", required=True, help="SQLite caption store (from caption)")
    _add_model_options(parser, required=False)
    parser.add_argument("--since", type=_stream_seconds, default=0.0,
                        help="only clips that started at or after this time, seconds (0: all)")
    parser.add_argument("--until", type=_stream_seconds, default=0.0,
                        help="only clips that ended at or before this time, seconds (0: now)")
    parser.add_argument("--embedder", choices=("sentence", "model"), default="sentence")
    parser.add_argument("--max-captions", type=int, default=0, help="cap on captions (0: budget)")
    parser.add_argument("--context-tokens", type=int, default=10000, help="caption token budget")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="answer length limit")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run_ask)


def _check_model_parser(sub) -> None:
    parser = sub.add_parser("check-model", help="load a checkpoint and print what it will do",
                            description="Load MODEL; print family, device, dtype, visual tokens "
                                        "per frame and clip, the captioning prompt, read-out "
                                        "layers and a GPU memory estimate. Exit 2 if refused.")
    parser.add_argument("model", help="checkpoint directory, cached Hugging Face id or tiny-*")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--height", type=int, default=480, help="frame height, px")
    parser.add_argument("--width", type=int, default=640, help="frame width, px")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run_check_model)


def _run_check_model(args) -> int:
    from rats_ros.models import load_backend
    from rats_ros.models.summary import summarize

    try:
        if min(args.frames, args.height, args.width) < 1:
            raise ConfigError("--frames, --height and --width must be >= 1")
        backend = load_backend(args.model, args.device, args.dtype)
        summary = summarize(backend, args.frames, args.height, args.width)
    except RatsError as error:
        return _fail("check-model", error)
    if args.json:
        print(json.dumps(dataclasses.asdict(summary)))
    else:
        print("\n".join(summary.lines()))
    return 0


def _sample_parser(sub) -> None:
    parser = sub.add_parser("sample-bag", help="write a synthetic camera bag (for demos, tests)")
    parser.add_argument("out_dir", help="bag directory to create")
    parser.add_argument("--seconds", type=_positive_float, default=64.0)
    parser.add_argument("--fps", type=_positive_float, default=2.0)
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    parser.add_argument("--compressed", action="store_true", help="CompressedImage (JPEG)")
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    parser.add_argument("--topic", default="/camera/image_raw")
    parser.set_defaults(handler=_run_sample_bag)


def build_parser() -> argparse.ArgumentParser:
    """The ``rats-ros`` argument parser (``replay`` is handed to :mod:`rats_ros.ros.replay`)."""
    parser = argparse.ArgumentParser(prog="rats-ros", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _caption_parser(sub)
    _ask_parser(sub)
    _check_model_parser(sub)
    _sample_parser(sub)
    sub.add_parser("replay", add_help=False,
                   help="publish a bag's image topic on ROS 2 (rats-ros replay --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``rats-ros``. :returns: the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "replay":
        from rats_ros.ros import replay  # imports rclpy only when replaying

        return replay.main(argv[1:])
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


# -- caption ------------------------------------------------------------------------------------
def _run_caption(args) -> int:
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
        return _fail("caption", error)
    with _Session(args) as session:
        try:
            session.start(config)
            clips = session.caption_all(frames, total, assembler)
        except RatsError as error:
            return _fail("caption", error)
    if not args.quiet:
        _summary(args, clips, assembler.stats, undecodable)
    if clips == 0:
        reason = f": {undecodable[0]}" if undecodable else ""
        return _fail("caption", InputError(
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
    return {"clip_index": result.clip_index, "start": result.start_ns / _NS,
            "end": result.end_ns / _NS, "text": result.text, "frames": result.frames,
            "visual_tokens": result.visual_tokens, "kept_tokens": result.kept_tokens,
            "memory_tokens": result.memory_tokens,
            "processing_time": round(result.processing_time, 6)}


def _summary(args, clips, stats, undecodable) -> None:
    print(f"rats-ros caption: {clips} clips from {stats.received} frames ({stats.sampled} "
          f"sampled at {args.fps} fps, {stats.out_of_order} out of order, {stats.time_jumps} "
          f"time jumps, {len(undecodable)} undecodable)", file=sys.stderr)
    if undecodable:
        print(f"rats-ros caption: first undecodable frame: {undecodable[0]}", file=sys.stderr)


# -- ask ----------------------------------------------------------------------------------------
def _run_ask(args) -> int:
    started = time.perf_counter()
    try:
        answer = _answer(args)
    except RatsError as error:
        if args.json:
            print(json.dumps({"success": False, "message": str(error), "answer": "",
                              "evidence": [], "processing_time": time.perf_counter() - started}))
        return _fail("ask", error, quiet=args.json)
    evidence = [{"clip_index": c.clip_index, "start": c.start_ns / _NS, "end": c.end_ns / _NS,
                 "text": c.text} for c in answer.evidence]
    if args.json:
        print(json.dumps({"success": True, "message": "", "answer": answer.text,
                          "evidence": evidence, "processing_time": answer.processing_time}))
    else:
        print(answer.text)
        for item in evidence:
            print(f"  [{item['start']:.1f}s-{item['end']:.1f}s] #{item['clip_index']}: "
                  f"{item['text']}", file=sys.stderr)
    return 0


def _answer(args):
    from rats_ros.recall.retrieval import check_window

    since_ns, until_ns = round(args.since * _NS), round(args.until * _NS)
    check_window(since_ns, until_ns)  # before the model loads: a bad window fails fast
    if not Path(args.store).is_file():
        raise InputError(f"caption store {args.store!r} does not exist; create it with "
                         "`rats-ros caption INPUT --model M --store FILE`")
    from rats_ros.recall.store import CaptionStore

    with CaptionStore(args.store, stream_id=args.stream_id, create=False,
                      readonly=True) as store:
        return _ask_store(args, store, since_ns, until_ns)


def _ask_store(args, store, since_ns, until_ns):
    from rats_ros.models import load_backend
    from rats_ros.recall.embedders import make_embedder
    from rats_ros.recall.qa import QAConfig, QuestionAnswerer

    first = store.rows_after(0, 1)
    if not first:
        raise QuestionError(f"store {args.store!r} has no captions for stream "
                            f"{args.stream_id!r}; caption an input into it first")
    backend = load_backend(args.model or first[0].model, args.device, args.dtype)
    embedder = make_embedder(args.embedder, backend=backend)
    config = QAConfig(context_tokens=args.context_tokens, max_answer_tokens=args.max_new_tokens)
    answerer = QuestionAnswerer(store, embedder, backend, config)
    return answerer.ask(args.question, since_ns, until_ns, args.max_captions)


# -- sample-bag -----------------------------------------------------------------------------------
def _run_sample_bag(args) -> int:
    from rats_ros.io.sample_scene import write_sample_bag

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        return _fail("sample-bag", ConfigError(f"--size must be WIDTHxHEIGHT, got {args.size!r}"))
    try:
        count = write_sample_bag(args.out_dir, seconds=args.seconds, fps=args.fps,
                                 size=(width, height), storage=args.storage,
                                 compressed=args.compressed, topic=args.topic)
    except RatsError as error:
        return _fail("sample-bag", error)
    print(f"wrote {count} frames on {args.topic} to {args.out_dir} ({args.storage})")
    return 0


def _fail(command: str, error: RatsError, quiet: bool = False) -> int:
    """Report a typed error on stderr and map it to the exit code."""
    if not quiet:
        print(f"rats-ros {command}: {type(error).__name__}: {error}", file=sys.stderr)
    return 2 if isinstance(error, _USAGE_ERRORS) else 1
