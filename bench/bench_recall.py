"""Temporal evidence benchmark (CPU): recall per question kind over caption diaries, retrieval
latency over a month of one camera, what the MMR pool changes, what clock times cost in tokens.

- ``recall``: :func:`rats_ros.world.recall.evaluate` over a day, a week and a month (2,700,
  18,900 and 81,000 captions) of several worlds, the question read for its kind (``covering``)
  against MMR alone (``mmr``, the paper's rule); retrieval latency p50 / p99 per question.
- ``retrieval_pool``: plain MMR over the month with the pool (``mmr_pool``) against exact MMR
  over the whole window, in the same run: latency and the share of the exact picks kept.
- ``prompt_tokens``: tokens per caption line with clock times against stream seconds (MiniLM's
  WordPiece, and the Qwen2-style split of the tiny checkpoint, which cuts digits one by one).

Usage: ``python bench/bench_recall.py [--smoke] [--out FILE]``
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Emitter, environment  # noqa: E402

from rats_ros.models import load_backend  # noqa: E402
from rats_ros.recall.clock import TimeStyle  # noqa: E402
from rats_ros.recall.embedders import SentenceEmbedder  # noqa: E402
from rats_ros.recall.retrieval import RetrievalIndex, format_caption  # noqa: E402
from rats_ros.recall.store import CaptionStore  # noqa: E402
from rats_ros.world import diary, recall  # noqa: E402


def bench_recall(emit, env, embedder, horizons, seeds, repeats, pools=(0,)):
    results = recall.evaluate(embedder, embedder.count_tokens, horizons, seeds,
                              repeats=repeats, mmr_pools=pools)
    for row in recall.table(results):
        emit({"bench": "recall", **row, **env})


def bench_pool(emit, env, embedder, horizon: str, pools, repeats: int):
    """Plain MMR with each pool against exact MMR, over one diary's whole window."""
    d = diary.generate(0, horizon)
    questions = [p.question for p in d.probes] + ["What is in the kitchen?",
                                                  "Describe the lab.", "Who came in?"]
    vectors = embedder.embed(questions)  # (q, d)
    with tempfile.TemporaryDirectory(prefix="rats_pool_") as tmp:
        path = os.path.join(tmp, "d.db")
        recall.write_store(path, d, embedder)
        with CaptionStore(path, create=False, readonly=True) as store:
            index = RetrievalIndex(store, embedder, embedder.count_tokens)
            index.refresh()
            exact = {}
            for pool in (0, *pools):
                times, kept = [], []
                for _ in range(repeats):
                    for q, vec in enumerate(vectors):
                        started = time.perf_counter()
                        chosen = {c.id for c in index.select(vec, mmr_pool=pool).captions}
                        times.append((time.perf_counter() - started) * 1e3)
                        exact.setdefault(q, chosen)
                        kept.append(len(chosen & exact[q]) / len(exact[q]))
                emit({"bench": "retrieval_pool", "horizon": horizon, "captions": len(d.captions),
                      "pool": pool, "p50_ms": round(float(np.percentile(times, 50)), 2),
                      "p99_ms": round(float(np.percentile(times, 99)), 2),
                      "exact_picks_kept": round(statistics.mean(kept), 3), **env})


def bench_prompt_tokens(emit, env, embedder):
    """Tokens per prompt line, clock against stream seconds: lines of the question's morning
    (no date; seconds up to 43,200) and of a month (dates; seconds up to 2.6 million)."""
    day, month = diary.generate(0, "day").captions, diary.generate(0, "month").captions
    cases = (("same_day", day[: len(day) // 2], day[len(day) // 2].start_ns + 300 * 10**9),
             ("month", month[::100], month[-1].end_ns + 60 * 10**9))
    qwen_split = load_backend("tiny-random").count_tokens
    for case, captions, now in cases:
        origin = captions[0].start_ns
        for name, count in (("minilm_wordpiece", embedder.count_tokens),
                            ("qwen2_split_bpe", qwen_split)):
            per_format = {}
            for fmt in ("stream", "clock"):
                style = TimeStyle(fmt, "UTC")
                lines = [format_caption(c, origin, style, now) for c in captions[::5]]
                per_format[fmt] = statistics.mean(count(line) + 1 for line in lines)
            emit({"bench": "prompt_tokens", "case": case, "tokenizer": name,
                  "stream_tokens_per_line": round(per_format["stream"], 2),
                  "clock_tokens_per_line": round(per_format["clock"], 2),
                  "clock_vs_stream": round(per_format["clock"] / per_format["stream"], 3),
                  **env})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a day of one world (CI)")
    parser.add_argument("--seeds", default="0,1,2", help="worlds, comma-separated")
    parser.add_argument("--out", help="append the JSON lines to this file too")
    args = parser.parse_args(argv)
    emit, env = Emitter(args.out), environment("cpu")
    embedder = SentenceEmbedder.default()
    if args.smoke:
        bench_recall(emit, env, embedder, ("day",), (0,), 1)
        bench_pool(emit, env, embedder, "day", (1024,), 1)
    else:
        seeds = tuple(int(s) for s in args.seeds.split(","))
        bench_recall(emit, env, embedder, ("day", "week", "month"), seeds, 2, (0, 4096))
        bench_pool(emit, env, embedder, "month", (8192, 4096, 2048), 3)
    bench_prompt_tokens(emit, env, embedder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
