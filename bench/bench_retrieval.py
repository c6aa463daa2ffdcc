"""Caption store and retrieval benchmark (CPU). One JSON line per measurement.

- index refresh: cold load of n stored captions into the retrieval index, and the steady-state
  refresh a question pays when one caption arrived since the last one;
- selection: the paper's rule over the whole window of n captions (10,000-token budget, MMR
  lambda 0.5), against two baselines measured in the same run: relevance-only top-k (lambda 1)
  and textbook MMR (full max-similarity vector updated every step);
- store size on disk per hour of stream (0.5 fps, 16-frame clips = 112.5 clips/h);
- insert latency (commit included) with synchronous FULL vs NORMAL.

Synthetic captions are LLaVA-style paragraphs of 40-70 words. Embeddings come from the real
MiniLM sentence embedder; to keep large runs short a pool of distinct captions is embedded once
and captions (text and embedding) are reused cyclically beyond it. Token counts use MiniLM's
WordPiece tokenizer (close to Qwen2's ~1.3 tokens per English word).

Usage: ``python bench/bench_retrieval.py [--smoke] [--sizes 1000,10000,100000]``
"""
import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rats_ros.recall.embedders import SentenceEmbedder  # noqa: E402
from rats_ros.recall.retrieval import RetrievalIndex, select_under_budget  # noqa: E402
from rats_ros.recall.store import CaptionStore  # noqa: E402

CLIPS_PER_HOUR = 3600 * 0.5 / 16  # 112.5
SEC = 1_000_000_000
QUESTIONS = ["When was the fridge opened?", "What did the man in the blue shirt carry?",
             "Where did I leave my keys?", "Who came through the front door?",
             "What was on the kitchen table?", "Did the dog go outside?"]


def emit(bench: str, n: int, metric: str, value: float, unit: str, **extra):
    print(json.dumps({"bench": bench, "n": n, "metric": metric, "value": round(value, 6),
                      "unit": unit, **extra}), flush=True)


def synthetic_captions(count: int, seed: int = 0) -> list[str]:
    """Varied, realistic-length captions of an indoor robot's camera."""
    rng = random.Random(seed)
    who = ["a man in a blue shirt", "a woman with long dark hair", "a child in a red jacket",
           "an elderly man with glasses", "a delivery worker", "a small brown dog",
           "two people", "a cleaner with a trolley", "a woman in a grey sweater"]
    act = ["walks slowly along", "stands near", "opens a cabinet in", "carries a cardboard box "
           "through", "sits down at a table in", "looks around", "picks up a phone in",
           "cleans the floor of", "talks to someone in", "places a bag on a chair in"]
    where = ["the kitchen", "a narrow corridor", "the living room", "the entrance hall",
             "an office with large windows", "the garage", "a bright bedroom", "the balcony"]
    detail = ["The lighting is warm and the room looks tidy.", "A television is on in the "
              "background.", "Several boxes are stacked against the wall.", "The camera moves "
              "slowly to the left.", "A plant stands next to the window.", "Sunlight falls on "
              "the wooden floor.", "A red mug is left on the counter.", "The door behind them "
              "is half open.", "Papers are scattered across the desk.", "The scene is quiet "
              "and nothing else moves."]
    out = []
    for _ in range(count):
        a, b = rng.sample(detail, 2)
        out.append(f"The video shows {rng.choice(who)} who {rng.choice(act)} "
                   f"{rng.choice(where)}. {a} {b} Then {rng.choice(who)} "
                   f"{rng.choice(act)} {rng.choice(where)} while {rng.choice(who)} "
                   f"{rng.choice(act)} {rng.choice(where)}.")
    return out


def caption(i: int, text: str):
    return SimpleNamespace(clip_index=i, start_ns=32 * i * SEC, end_ns=(32 * i + 30) * SEC,
                           text=text, frames=16, visual_tokens=3136, kept_tokens=196,
                           memory_tokens=392, processing_time=0.4)


def fill(store, texts, emb, n: int, name: str, first: int = 0):
    for i in range(first, first + n):
        store.add(caption(i, texts[i % len(texts)]), emb[i % len(texts)], name, model="bench")


def textbook_mmr(emb, tokens, q, budget, lam):
    """Baseline: the full max-similarity vector updated every step, O(n d) per pick."""
    if int(tokens.sum()) <= budget:
        return list(range(len(emb)))
    rel = emb @ q  # (n,)
    score = rel.copy()
    maxsim = np.full(len(emb), -np.inf, np.float32)
    used, picked = 0, []
    while True:
        j = int(np.argmax(score))
        if used + tokens[j] > budget:
            return picked
        picked.append(j)
        used += tokens[j]
        np.maximum(maxsim, emb @ emb[j], out=maxsim)
        score = lam * rel - (1 - lam) * maxsim
        score[picked] = -np.inf


def bench_size(n, texts, emb, embedder, tmp, repeats):
    path = os.path.join(tmp, f"retrieval_{n}.db")
    with CaptionStore(path, synchronous="NORMAL") as store:
        fill(store, texts, emb, n, embedder.name)
        index = RetrievalIndex(store, embedder, embedder.count_tokens)
        start = time.perf_counter()
        index.refresh()
        emit("refresh", n, "cold_load", time.perf_counter() - start, "s")
        times = []
        for k in range(repeats):
            fill(store, texts, emb, 1, embedder.name, first=n + k)
            start = time.perf_counter()
            index.refresh()
            times.append(time.perf_counter() - start)
        emit("refresh", n, "one_new_caption", statistics.median(times) * 1e3, "ms")
        queries = embedder.embed(QUESTIONS)  # (Q, d)
        start = time.perf_counter()
        embedder.embed([QUESTIONS[0]])
        emit("select", n, "embed_question", (time.perf_counter() - start) * 1e3, "ms")
        results = {}
        for label, lam in (("mmr", 0.5), ("relevance_topk", 1.0)):
            times = []
            for k in range(repeats):
                start = time.perf_counter()
                sel = index.select(queries[k % len(queries)], mmr_lambda=lam)
                times.append(time.perf_counter() - start)
            results[label] = statistics.median(times)
            emit("select", n, f"{label}_latency", results[label] * 1e3, "ms",
                 picked=len(sel.captions), tokens=sel.tokens)
        emit("select", n, "mmr_vs_relevance_topk", results["mmr"] / results["relevance_topk"],
             "ratio")
        _, _, _, tokens, matrix = index.arrays()
        # select_under_budget picks the textbook update below 20k captions, the lazy one above.
        for label, fn in (("mmr_picks", select_under_budget),
                          ("textbook_mmr_picks", textbook_mmr)):
            times = []
            for k in range(repeats):
                start = time.perf_counter()
                fn(matrix, tokens, queries[k % len(queries)], 10000, 0.5)
                times.append(time.perf_counter() - start)
            results[label] = statistics.median(times)
            emit("select", n, f"{label}_only", results[label] * 1e3, "ms")
        emit("select", n, "mmr_vs_textbook_mmr_picks_only",
             results["mmr_picks"] / results["textbook_mmr_picks"], "ratio")


def bench_disk(texts, emb, tmp, n):
    """Bytes per caption row (text + metadata + embedding + indexes), scaled to an hour."""
    for label, dim in (("sentence_384d", emb.shape[1]), ("model_896d_0.5b", 896),
                       ("model_3584d_7b", 3584), ("no_embedding", 0)):
        path = os.path.join(tmp, f"disk_{label}.db")
        rng = np.random.default_rng(0)
        with CaptionStore(path, synchronous="NORMAL") as store:
            for i in range(n):
                vec = emb[i % len(emb)] if dim == emb.shape[1] else (
                    rng.standard_normal(dim).astype(np.float32) if dim else None)
                store.add(caption(i, texts[i % len(texts)]), vec, label if dim else "")
            store.run("checkpoint", lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        per_row = os.path.getsize(path) / n
        emit("disk", n, f"{label}_per_hour", per_row * CLIPS_PER_HOUR / 1e6, "MB/h",
             bytes_per_caption=round(per_row))
    mean_words = statistics.mean(len(t.split()) for t in texts)
    emit("disk", n, "caption_words_mean", mean_words, "words")


def bench_insert(texts, emb, tmp, n):
    medians = {}
    for sync in ("NORMAL", "FULL"):
        path = os.path.join(tmp, f"insert_{sync}.db")
        times = []
        with CaptionStore(path, synchronous=sync) as store:
            for i in range(n):
                start = time.perf_counter()
                store.add(caption(i, texts[i % len(texts)]), emb[i % len(emb)], "bench")
                times.append(time.perf_counter() - start)
        times.sort()
        medians[sync] = statistics.median(times)
        emit("insert", n, f"{sync.lower()}_median", medians[sync] * 1e3, "ms")
        emit("insert", n, f"{sync.lower()}_p99", times[int(0.99 * (n - 1))] * 1e3, "ms")
    emit("insert", n, "full_vs_normal", medians["FULL"] / medians["NORMAL"], "ratio")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long version (CI)")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--pool", type=int, default=3000, help="distinct captions embedded")
    parser.add_argument("--dir", default=None, help="where the SQLite files go (default: tmp)")
    args = parser.parse_args(argv)
    sizes = [200, 1000] if args.smoke else [int(s) for s in args.sizes.split(",")]
    pool = 100 if args.smoke else args.pool
    repeats, inserts, disk_rows = (3, 40, 200) if args.smoke else (9, 400, 2000)
    # Other work on the machine skews every figure: record the load next to them.
    emit("env", 0, "load_average_1min_start", os.getloadavg()[0], "runnable", cpus=os.cpu_count())
    embedder = SentenceEmbedder.default()
    texts = synthetic_captions(pool)
    start = time.perf_counter()
    emb = embedder.embed(texts)  # (pool, 384)
    emit("embed", pool, "caption_embed_per_caption", (time.perf_counter() - start) / pool * 1e3,
         "ms")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in sizes:
            bench_size(n, texts, emb, embedder, tmp, repeats)
        bench_disk(texts, emb, tmp, disk_rows)
        bench_insert(texts, emb, tmp, inserts)
    emit("env", 0, "load_average_1min_end", os.getloadavg()[0], "runnable", cpus=os.cpu_count())


if __name__ == "__main__":
    main()
