"""AskVideo latency after a simulated stream: retrieval under the token budget + the answer.

The store holds one caption per clip of ``--hours`` of stream at 0.5 fps (112 clips per hour),
each ``--caption-tokens`` long (by the backend's tokenizer), with model-token embeddings, in a
real SQLite ``CaptionStore``. ``QuestionAnswerer.ask`` then runs with the 10k-token budget and
a fixed ``--answer-tokens`` answer (EOS ignored). Two stores: ``hour`` (captions as long as the
stream bench's, all fit the budget) and ``budget`` (longer captions, so MMR fills the 10k budget:
the worst-case prompt).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
from common import (
    FPS,
    Emitter,
    entry_point,
    environment,
    load_bench_backend,
    model_parser,
    parse_args,
    reset_peak,
    summary,
    sync,
    write_json,
)

from rats_ros.models.base import FastConfig
from rats_ros.recall.embedders import ModelEmbedder
from rats_ros.recall.qa import QAConfig, QuestionAnswerer
from rats_ros.recall.store import CaptionStore
from rats_ros.stream.captioner import ClipCaption

WORDS = ("a person walks into the kitchen and opens the fridge the robot moves along the corridor "
         "a man is sitting at a desk typing on a laptop while a woman talks on the phone red bus "
         "street cars people crossing dog leash cup table water bottle shelf office door window "
         "plants chairs boxes whiteboard keys picks up puts back").split()
QUESTIONS = ("Where did the person put the keys?", "What is on the table next to the door?",
             "Did anyone open the fridge?", "What color was the bus on the street?")


def clip_caption(index: int, text: str, frames: int) -> ClipCaption:
    """Clip ``index``'s caption as the captioner would return it (0.5 fps stamps)."""
    period = int(1e9 / FPS)
    return ClipCaption(clip_index=index, start_ns=index * frames * period,
                       end_ns=((index + 1) * frames - 1) * period, text=text, token_ids=[],
                       frames=frames, visual_tokens=3136, kept_tokens=196, memory_tokens=3136,
                       processing_time=0.0, kept_indices=[], model="bench")


def caption_text(backend, rng, tokens: int) -> str:
    """Random words until the text is ``tokens`` long by the backend's tokenizer."""
    words: list[str] = []
    while backend.count_tokens(" ".join(words)) < tokens:
        words.append(WORDS[rng.integers(len(WORDS))])
    return " ".join(words)


def fill_store(backend, path: str, clips: int, tokens: int, frames: int) -> CaptionStore:
    store = CaptionStore(path, stream_id="bench", synchronous="NORMAL")
    embedder, rng = ModelEmbedder(backend), np.random.default_rng(0)
    for i in range(clips):
        text = caption_text(backend, rng, tokens)
        store.add(clip_caption(i, text, frames), embedder.embed([text])[0], embedder.name)
    return store


def ask_many(qa, backend, repeats: int) -> list[dict]:
    rows = []
    for i in range(repeats + 1):  # the first ask warms the decode path; not kept
        reset_peak(backend.device)
        sync(backend.device)
        answer = qa.ask(QUESTIONS[i % len(QUESTIONS)])
        if i:
            prompt = qa.build_prompt(QUESTIONS[i % len(QUESTIONS)], answer.evidence)
            rows.append({"total_ms": 1e3 * answer.processing_time,
                         "retrieval_ms": 1e3 * answer.timings["retrieval"],
                         "generation_ms": 1e3 * answer.timings["generation"],
                         "prompt_tokens": backend.count_tokens(prompt),
                         "context_tokens": answer.context_tokens, "captions": len(answer.evidence),
                         "used_mmr": answer.used_mmr})
    return rows


def bench(args) -> list[dict]:
    emit = Emitter(args.out)
    backend = load_bench_backend(args.size, args.device, args.dtype)
    backend.eos_ids = set()  # timing mode: every answer is exactly --answer-tokens long
    env, records = environment(args.device), []
    clips = int(round(args.hours * 3600 * FPS / args.frames))
    workdir = tempfile.mkdtemp(prefix="rats-bench-ask-")
    for store_kind, tokens in (("hour", args.caption_tokens), ("budget", args.budget_tokens)):
        store = fill_store(backend, os.path.join(workdir, f"{store_kind}.db"), clips, tokens,
                           args.frames)
        try:
            for variant in args.variants:
                backend.use_fast(FastConfig(decode=variant == "ours"))  # the answer decoder
                qa = QuestionAnswerer(store, ModelEmbedder(backend), backend,
                                      QAConfig(context_tokens=args.budget,
                                               max_answer_tokens=args.answer_tokens))
                qa.warm()  # a running node has its index loaded; the first ask is not cold
                rows = ask_many(qa, backend, args.repeats)
                record = {"bench": "ask", "size": args.size,
                          "family": backend.model.config.model_type, "variant": variant,
                          "store": store_kind, "clips": clips, "caption_tokens": tokens,
                          "budget": args.budget, "answer_tokens": args.answer_tokens,
                          "total_ms": summary([r["total_ms"] for r in rows]),
                          **{k: summary([r[k] for r in rows])["p50"]
                             for k in ("retrieval_ms", "generation_ms", "prompt_tokens",
                                       "context_tokens", "captions")},
                          "used_mmr": rows[0]["used_mmr"], **env}
                records.append(emit(record))
        finally:
            store.close()
    write_json(args.json, records)
    return records


def parse(argv=None):
    ap = model_parser(__doc__)
    ap.add_argument("--variants", nargs="+", default=["ours", "plain"], choices=("ours", "plain"))
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--caption-tokens", type=int, default=40)
    ap.add_argument("--budget-tokens", type=int, default=100,
                    help="caption length of the 'budget' store (112 x ~110 > 10k: MMR binds)")
    ap.add_argument("--budget", type=int, default=10000)
    ap.add_argument("--answer-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    return parse_args(ap, argv, hours=0.05, caption_tokens=20, budget_tokens=40,
                      budget=200, answer_tokens=4, repeats=1)


main = entry_point(parse, bench)


if __name__ == "__main__":
    raise SystemExit(main())
