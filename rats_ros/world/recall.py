"""Evidence recall of temporal questions over caption diaries (``rats-ros eval recall``).

Each diary (:mod:`rats_ros.world.diary`) is written to a real SQLite caption store with its
embeddings; each probe is asked through the retrieval index twice, with the question read for its
kind (:mod:`rats_ros.recall.coverage`) and with MMR alone (the paper's rule), and scored as the
share of its ground-truth groups with a clip in the evidence. Retrieval latency is timed per
question (index warm, question embedding excluded: the model's share of an answer).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from rats_ros.recall.coverage import plan_question
from rats_ros.recall.retrieval import RetrievalIndex
from rats_ros.recall.store import CaptionStore
from rats_ros.world.diary import HORIZON_DAYS, generate


@dataclass
class ProbeResult:
    """One probe asked one way: ``recall`` (0..1), ``latency_ms``, and for ``count`` the
    episodes the coverage note reported (``reported``) against the truth (``episodes``)."""

    horizon: str
    seed: int
    kind: str
    method: str  # "covering" or "mmr"
    recall: float
    latency_ms: float
    episodes: int = 0
    reported: int = 0
    mmr_pool: int = 0


def write_store(path: str, diary, embedder) -> None:
    """The diary's captions into a new SQLite store, each with its embedding."""
    unique = sorted({c.text for c in diary.captions})
    vectors = dict(zip(unique, embedder.embed(unique), strict=True))
    with CaptionStore(path, synchronous="NORMAL") as store:
        for caption in diary.captions:
            store.add(caption, vectors[caption.text], embedder.name, model="diary")


def evaluate_diary(diary, index, embedder, horizon: str, seed: int,
                   budget: int = 10000, mmr_pool: int = 0) -> list[ProbeResult]:
    """Every probe of ``diary`` asked both ways through ``index`` (``mmr_pool``: as
    ``QAConfig.mmr_pool``)."""
    out = []
    for probe in diary.probes:
        plan = plan_question(probe.question)
        vectors = embedder.embed([probe.question, *plan.subjects])  # (1 + s, d)
        for method in ("covering", "mmr"):
            started = time.perf_counter()
            selection = index.select(vectors[0], budget_tokens=budget, subject_vecs=vectors[1:],
                                     plan=plan if method == "covering" else None,
                                     mmr_pool=mmr_pool)
            latency = (time.perf_counter() - started) * 1e3
            shown = {c.clip_index for c in selection.captions}
            recall = float(np.mean([bool(shown & set(group)) for group in probe.truth]))
            reported = selection.coverage[0].episodes if selection.coverage else 0
            out.append(ProbeResult(horizon, seed, probe.kind, method, recall, latency,
                                   len(probe.truth) if probe.kind == "count" else 0, reported,
                                   mmr_pool))
    return out


def evaluate(embedder, count_tokens, horizons=("day", "week", "month"), seeds=(0, 1, 2),
             budget: int = 10000, repeats: int = 5, mmr_pools=(0,),
             keep: str | None = None) -> list[ProbeResult]:
    """Probe results for each horizon, seed and MMR pool (``QAConfig.mmr_pool``, 0: exact);
    each probe is timed ``repeats`` times. :param keep: a directory to leave the stores in
    (``<horizon>_<seed>.db``, with ``<horizon>_<seed>.json``: the probes and their truth), for
    ``rats-ros ask``; None: a temporary one."""
    results = []
    with tempfile.TemporaryDirectory(prefix="rats_recall_") as scratch:
        tmp = keep or scratch
        os.makedirs(tmp, exist_ok=True)
        for horizon in horizons:
            for seed in seeds:
                diary = generate(seed, horizon)
                path = os.path.join(tmp, f"{horizon}_{seed}.db")
                if os.path.exists(path):
                    os.remove(path)
                write_store(path, diary, embedder)
                if keep:
                    with open(os.path.join(tmp, f"{horizon}_{seed}.json"), "w") as out:
                        json.dump([asdict(p) for p in diary.probes], out, indent=1)
                with CaptionStore(path, create=False, readonly=True) as store:
                    index = RetrievalIndex(store, embedder, count_tokens)
                    index.refresh()
                    for pool in mmr_pools:
                        for _ in range(repeats):
                            results += evaluate_diary(diary, index, embedder, horizon, seed,
                                                      budget, pool)
    return results


def table(results: list[ProbeResult]) -> list[dict]:
    """Per horizon, MMR pool, kind and method: mean and min recall over seeds, p50 / p99
    latency, and the count episodes reported exactly (share of count probes)."""
    rows = []
    keys = sorted({(r.horizon, r.mmr_pool, r.kind, r.method) for r in results},
                  key=lambda k: (list(HORIZON_DAYS).index(k[0]), *k[1:]))
    for horizon, pool, kind, method in keys:
        part = [r for r in results if (r.horizon, r.mmr_pool, r.kind, r.method)
                == (horizon, pool, kind, method)]
        per_seed = {}
        for r in part:
            per_seed.setdefault(r.seed, r.recall)
        lat = np.array([r.latency_ms for r in part])
        row = {"horizon": horizon, "mmr_pool": pool, "kind": kind, "method": method,
               "recall_mean": round(float(np.mean(list(per_seed.values()))), 3),
               "recall_min": round(float(min(per_seed.values())), 3),
               "worlds": len(per_seed), "p50_ms": round(float(np.percentile(lat, 50)), 2),
               "p99_ms": round(float(np.percentile(lat, 99)), 2)}
        if kind == "count" and method == "covering":
            exact = {r.seed: r.reported == r.episodes for r in part}
            row["count_exact"] = round(float(np.mean(list(exact.values()))), 3)
        rows.append(row)
    return rows
