"""``rats-ros ask``: answer a question from a caption store (opened read-only)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rats_ros.errors import InputError, QuestionError, RatsError
from rats_ros.tools.options import NS, add_model_options, fail, stream_seconds


def add_parser(sub) -> None:
    parser = sub.add_parser("ask", help="answer a question from a caption store",
                            description="Answer a question from the captions in a store.")
    parser.add_argument("question")
    parser.add_argument("--store", required=True, help="SQLite caption store (from caption)")
    add_model_options(parser, required=False)
    parser.add_argument("--since", type=stream_seconds, default=0.0,
                        help="only clips that started at or after this time, seconds (0: all)")
    parser.add_argument("--until", type=stream_seconds, default=0.0,
                        help="only clips that ended at or before this time, seconds (0: now)")
    parser.add_argument("--embedder", choices=("sentence", "model"), default="sentence")
    parser.add_argument("--max-captions", type=int, default=0, help="cap on captions (0: budget)")
    parser.add_argument("--context-tokens", type=int, default=10000, help="caption token budget")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="answer length limit")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)



def run(args) -> int:
    started = time.perf_counter()
    try:
        answer = _answer(args)
    except RatsError as error:
        if args.json:
            print(json.dumps({"success": False, "message": str(error), "answer": "",
                              "evidence": [], "processing_time": time.perf_counter() - started}))
        return fail("ask", error, quiet=args.json)
    evidence = [{"clip_index": c.clip_index, "start": c.start_ns / NS, "end": c.end_ns / NS,
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

    since_ns, until_ns = round(args.since * NS), round(args.until * NS)
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
