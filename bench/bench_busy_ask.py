"""AskVideo while cameras caption against AskVideo idle, in the same run.

One model, ``--cameras`` captioning lanes (each its own recurrent captioner, clips taken in
turn, as the node's worker does) run in a background thread without pause, while the main thread
answers ``--questions`` questions through the real ``QuestionAnswerer`` over a store of one hour
of captions (``bench_ask.fill_store``). The same questions are first answered with the model
idle. Busy questions come ``--gap-s`` apart (a robot asks now and then; back to back, answers
first would stop captioning altogether). Answers run on their own fast decoder
(``FastDecoders.answer``), and captions step aside between layers and tokens while one runs
(``fast.priority``); ``hold: false`` is the same run with the gate open (captions still paced
at most 2 layers or tokens ahead of the GPU, but never waiting for answers). Reported per mode:
answer latency p50 / p99 busy against idle (issue goal at 4 cameras, 7B size: p99 <= 1.5x
idle), and the clips captioned per second meanwhile (what answers first costs the cameras).
"""
from __future__ import annotations

import os
import tempfile
import threading
import time

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

from rats_ros.models.fast.priority import AnswerFirst
from rats_ros.recall.embedders import ModelEmbedder
from rats_ros.recall.qa import QAConfig, QuestionAnswerer
from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner


def answer_times(qa, count: int, gap_s: float = 0.0) -> list[float]:
    """:returns: ms per answer of ``count`` questions ``gap_s`` apart, after one warm-up."""
    times = []
    for i in range(count + 1):
        answer = qa.ask(QUESTIONS[i % len(QUESTIONS)])
        if i:
            times.append(1e3 * answer.processing_time)
        time.sleep(gap_s)
    return times


def busy_answers(backend, qa, pool, args, hold: bool) -> dict:
    """Answer while ``args.cameras`` caption, the gate holding captions back or not."""
    backend.fast.gate = AnswerFirst(hold=hold)
    captioning = Captioning(backend, pool, args.cameras, args.tokens)
    captioning.start()
    while captioning.clips < args.cameras and captioning.error is None:  # memory filling
        captioning.stop.wait(0.05)
    start, clips = time.perf_counter(), captioning.clips
    times = answer_times(qa, args.questions, args.gap_s)
    rate = (captioning.clips - clips) / (time.perf_counter() - start)
    captioning.stop.set()
    captioning.join()
    if captioning.error is not None:
        raise captioning.error
    return {"times": times, "clips_per_s": rate, "waits": backend.fast.gate.waits}


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
        idle = summary(answer_times(qa, args.questions))
        modes = {hold: busy_answers(backend, qa, pool, args, hold) for hold in (False, True)}
        store.close()
    for hold, mode in modes.items():
        busy = summary(mode["times"])
        emit({"bench": "busy_ask", "size": args.size, "cameras": args.cameras, "hold": hold,
              "gap_s": args.gap_s, "idle_ms": idle, "busy_ms": busy,
              "p50_ratio": busy["p50"] / idle["p50"], "p99_ratio": busy["p99"] / idle["p99"],
              "clips_per_s_busy": mode["clips_per_s"], "caption_waits": mode["waits"],
              **environment(args.device)})


def parse(argv=None):
    ap = model_parser(__doc__)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--gap-s", type=float, default=1.0, help="pause between busy questions")
    ap.add_argument("--clips", type=int, default=112, help="captions in the store (1 h)")
    ap.add_argument("--caption-tokens", type=int, default=40)
    ap.add_argument("--answer-tokens", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=40, help="caption length while busy")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=384)
    return parse_args(ap, argv, cameras=2, questions=3, clips=8, caption_tokens=12,
                      answer_tokens=4, tokens=4, frames=4, side=64, gap_s=0.05)


main = entry_point(parse, run)


if __name__ == "__main__":
    raise SystemExit(main())
