"""``rats-ros ask``: answer a question from a caption store (opened read-only)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rats_ros.errors import InputError, QuestionError, RatsError
from rats_ros.recall.clock import TimeStyle, parse_when
from rats_ros.settings import cli_option
from rats_ros.tools.options import (
    NS,
    add_model_options,
    backend_config,
    fail,
    where_json,
)


def add_parser(sub) -> None:
    parser = sub.add_parser("ask", help="answer a question from a caption store",
                            description="Answer a question from the captions in a store.")
    parser.add_argument("question")
    parser.add_argument("--store", required=True, help="caption store: a SQLite file (from "
                                                       "caption) or a postgresql:// URL")
    parser.add_argument("--robots", help="with a postgresql:// store: robots whose captions to "
                                         "use, comma-separated, or '*' for the whole fleet "
                                         "(default: --robot)")
    add_model_options(parser, required=False)
    parser.add_argument("--since", default="0",
                        help="only clips that started at or after this time: a duration back "
                             "from now (2h, 90min, 1d), an ISO time (2026-12-07T09:00) or "
                             "seconds since the epoch (0: all)")
    parser.add_argument("--until", default="0",
                        help="only clips that ended at or before this time, as --since (0: now)")
    parser.add_argument("--now", help="the question's time, as --since (default: the system "
                                      "clock): ages and durations count from it, e.g. for a "
                                      "bag recorded earlier")
    cli_option(parser, "time_format")
    cli_option(parser, "timezone", help="IANA time zone of clock times and of ISO times "
                                        "without an offset (default: the system's)")
    cli_option(parser, "embedder")
    parser.add_argument("--max-captions", type=int, default=0, help="cap on captions (0: budget)")
    cli_option(parser, "context_tokens")
    cli_option(parser, "max_answer_tokens", "--max-new-tokens")
    parser.add_argument("--cameras", help="only captions of these cameras, comma-separated "
                                          "(default: every camera of the stream)")
    parser.add_argument("--near", type=_point, metavar="X,Y[,Z]",
                        help="only captions whose pose lies within --radius metres of this "
                             "position (in the poses' frame)")
    parser.add_argument("--radius", type=float, default=2.0,
                        help="radius of --near in metres (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)



def run(args) -> int:
    started = time.perf_counter()
    try:
        now_ns = _now_ns(args)
        answer = _answer(args, now_ns)
    except RatsError as error:
        if args.json:
            print(json.dumps({"success": False, "message": str(error), "answer": "",
                              "evidence": [], "processing_time": time.perf_counter() - started}))
        return fail("ask", error, quiet=args.json)
    style = TimeStyle(args.time_format, args.timezone)
    clock = style.uses_clock(answer.evidence[0].start_ns) if answer.evidence else False
    evidence = [{"clip_index": c.clip_index, "start": c.start_ns / NS, "end": c.end_ns / NS,
                 "text": c.text} | where_json(c)
                | ({"when": style.clock_text(c.end_ns, now_ns)} if clock else {})
                for c in answer.evidence]
    target = None if answer.target is None else {  # a "where" question: where to go
        "clip_index": answer.target.clip_index, "end": answer.target.end_ns / NS,
        **where_json(answer.target)}
    coverage = [{"subject": c.subject, "found": c.found, "episodes": c.episodes,
                 "first": c.first_ns / NS, "last": c.last_ns / NS, "shown": c.shown}
                for c in answer.coverage]  # a temporal question: what its subjects matched
    if args.json:
        print(json.dumps({"success": True, "message": "", "answer": answer.text,
                          "kind": answer.kind, "coverage": coverage, "evidence": evidence,
                          "target": target, "processing_time": answer.processing_time}))
    else:
        print(answer.text)
        if target is not None and "pose" in target:
            pose = target["pose"]
            print(f"  go to ({pose['x']:.2f}, {pose['y']:.2f}, {pose['z']:.2f}) in "
                  f"{pose['frame'] or 'the poses frame'} (clip {target['clip_index']})")
        for item in coverage:
            print(f"  {item['found']} captions mention {item['subject']} in "
                  f"{item['episodes']} episodes ({item['shown']} shown)", file=sys.stderr)
        for item in evidence:
            when = item.get("when") or f"{item['start']:.1f}s-{item['end']:.1f}s"
            print(f"  [{when}] #{item['clip_index']}: {item['text']}", file=sys.stderr)
    return 0


def _answer(args, now_ns: int):
    from rats_ros.recall.retrieval import Place, check_window
    from rats_ros.recall.stores import is_url, open_reader

    since_ns, until_ns = (parse_when(t, now_ns, args.timezone) for t in (args.since, args.until))
    TimeStyle(args.time_format, args.timezone)  # a bad time zone fails before the model loads
    check_window(since_ns, until_ns)  # before the model loads: a bad window fails fast
    place = None if args.near is None else Place(*args.near, args.radius)  # checked early too
    if args.robots and not is_url(args.store):
        raise InputError("--robots needs a shared store: give --store a postgresql:// URL")
    if not is_url(args.store) and not Path(args.store).is_file():
        raise InputError(f"caption store {args.store!r} does not exist; create it with "
                         "`rats-ros caption INPUT --model M --store FILE`")
    robots = tuple(r.strip() for r in (args.robots or "").split(",") if r.strip()) or None
    with open_reader(args.store, args.stream_id, robot=args.robot, robots=robots,
                     streams=(), existing=True) as listing:
        streams = listing.streams_under(args.stream_id)
    with open_reader(args.store, args.stream_id, robot=args.robot, robots=robots,
                     streams=streams or None, existing=True) as store:
        return _ask_store(args, store, (since_ns, until_ns, now_ns), place)


def _ask_store(args, store, times: tuple[int, int, int], place):
    from rats_ros.pipeline import Pipeline, PipelineConfig
    from rats_ros.recall.qa import QAConfig

    first = store.rows_after(0, 1)
    if not first:
        raise QuestionError(f"store {store.path!r} has no captions for stream "
                            f"{args.stream_id!r}; caption an input into it first")
    qa = QAConfig(context_tokens=args.context_tokens, max_answer_tokens=args.max_new_tokens,
                  time_format=args.time_format, timezone=args.timezone)
    pipeline = Pipeline(PipelineConfig(backend_config(args, args.model or first[0].model),
                                       qa=qa, embedder=args.embedder))
    cameras = tuple(c.strip() for c in (args.cameras or "").split(",") if c.strip())
    since_ns, until_ns, now_ns = times
    return pipeline.answerer(store).ask(args.question, since_ns, until_ns, args.max_captions,
                                        cameras=cameras, place=place, now_ns=now_ns)


def _now_ns(args) -> int:
    """The question's time: ``--now``, else the system clock."""
    return parse_when(args.now, timezone=args.timezone) if args.now else time.time_ns()


def _point(text: str) -> tuple[float, float, float]:
    """``X,Y`` or ``X,Y,Z`` metres, finite. :raises argparse.ArgumentTypeError: otherwise."""
    import argparse
    import math

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give X,Y or X,Y,Z in metres, e.g. 3.5,-1")
    return (*values, 0.0)[:3]

