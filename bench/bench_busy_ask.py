"""AskVideo while cameras caption against AskVideo idle, in the same run.

One model, ``--cameras`` captioning lanes (each its own recurrent captioner, clips taken in
turn, as the node's worker does) run in a background thread without pause, while the main thread
answers ``--questions`` questions through the real ``QuestionAnswerer`` over a store of one hour
of captions (``bench_ask.fill_store``). The same questions are first answered with the model
idle. Reported: answer latency p50 / p99 idle and busy and their ratio (issue goal at 4 cameras,
7B size: p99 busy <= 1.5x idle), and the clips captioned meanwhile. Answers run on their own
fast decoder (``fast.hook.decoder_for``), so a question waits at most for the kernels of a
caption step in flight, not for the whole caption.
"""
from __future__ import annotations

import os
import tempfile
import threading

from bench_ask import QUESTIONS, fill_store
from common import (
    Emitter,
    entry_point,
    environment,
    frame_pool,
    load_bench_backend,
    make_clip,
    model_parser,
    parse_args,
    summary,
)

from rats_ros.recall.embedders import ModelEmbedder
from rats_ros.recall.qa import QAConfig, QuestionAnswerer
from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner


def answer_times(qa, count: int) -> list[float]:
    """:returns: ms per answer of ``count`` questions, after one warm-up."""
    times = []
    for i in range(count + 1):
        answer = qa.ask(QUESTIONS[i % len(QUESTIONS)])
        if i:
            times.append(1e3 * answer.processing_time)
    return times


class Captioning(threading.Thread):
    """``cameras`` lanes captioned in turn until stopped (the node's round robin)."""

    def __init__(self, backend, pool, cameras: int, tokens: int):
        super().__init__(daemon=True)
        config = CaptionerConfig(max_new_tokens=tokens)
        self.lanes = [RecurrentCaptioner(backend, config) for _ in range(cameras)]
        self.pool, self.stop, self.clips, self.error = pool, threading.Event(), 0, None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                lane = self.lanes[self.clips % len(self.lanes)]
                lane.step(make_clip(self.pool[self.clips % len(self.pool)], lane.next_index))
                self.clips += 1
        except Exception as error:  # noqa: BLE001 - reported by run() below, the bench fails
            self.error = error


def run(args) -> None:
    emit = Emitter(args.out)
    backend = load_bench_backend(args.size, args.device, args.dtype)
    backend.eos_ids = set()  # timing mode: answers and captions are exactly their token bounds
    pool = frame_pool(4, args.side, args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        store = fill_store(backend, os.path.join(tmp, "captions.db"), args.clips,
                           args.caption_tokens, args.frames)
        qa = QuestionAnswerer(store, ModelEmbedder(backend), backend,
                              QAConfig(max_answer_tokens=args.answer_tokens))
        idle = answer_times(qa, args.questions)
        captioning = Captioning(backend, pool, args.cameras, args.tokens)
        captioning.start()
        while captioning.clips < args.cameras and captioning.error is None:  # memory filling
            captioning.stop.wait(0.05)
        busy = answer_times(qa, args.questions)
        captioning.stop.set()
        captioning.join()
        store.close()
    if captioning.error is not None:
        raise captioning.error
    idle_s, busy_s = summary(idle), summary(busy)
    emit({"bench": "busy_ask", "size": args.size, "cameras": args.cameras,
          "idle_ms": idle_s, "busy_ms": busy_s, "p50_ratio": busy_s["p50"] / idle_s["p50"],
          "p99_ratio": busy_s["p99"] / idle_s["p99"], "clips_captioned": captioning.clips,
          **environment(args.device)})


def parse(argv=None):
    ap = model_parser(__doc__)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--clips", type=int, default=112, help="captions in the store (1 h)")
    ap.add_argument("--caption-tokens", type=int, default=40)
    ap.add_argument("--answer-tokens", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=40, help="caption length while busy")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=384)
    return parse_args(ap, argv, cameras=2, questions=3, clips=8, caption_tokens=12,
                      answer_tokens=4, tokens=4, frames=4, side=64)


main = entry_point(parse, run)


if __name__ == "__main__":
    raise SystemExit(main())
