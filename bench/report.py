"""``bench/RESULTS.md`` written from ``bench/results/*.jsonl``: one current table per area.

    python bench/report.py            # rewrite bench/RESULTS.md
    python bench/report.py --check    # exit 1 when RESULTS.md is not what the files give

A measurement's newest line wins (by its ``date``); each row names its device and commit.
Append a GPU run's ``results.jsonl`` lines to the area's file (``bench/results/<area>.jsonl``:
the ``bench`` field says which) and run this again. History stays in git.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS, DOC = HERE / "results", HERE / "RESULTS.md"


@dataclass(frozen=True)
class Table:
    """One area's table: which rows (``bench`` and a filter), the key a newer line replaces,
    and the columns (dotted paths into a record)."""

    title: str
    file: str
    benches: tuple[str, ...]
    key: tuple[str, ...]
    columns: tuple[str, ...]
    note: str
    keep: object = None  # record -> bool


TABLES = (
    Table("Per clip", "clip", ("clip",), ("device", "size", "variant", "memory", "side"),
          ("size", "variant", "memory", "side", "encode_ms", "prefill_ms", "decode_ms",
           "total_ms", "peak_mb"),
          "16 frames a clip, 40-token captions, random weights at real sizes; `ours` is the "
          "node's path (fast decode, fast vision), `plain` the transformers decode loop, `stock` "
          "transformers' generate with output_attentions, `full` no token selection.",
          keep=lambda r: r.get("status", "ok") == "ok" and r.get("variant") in (
              "ours", "plain", "stock", "full")),
    Table("Stream", "stream", ("stream",), ("device", "size", "variant", "clips"),
          ("size", "variant", "clips", "clip_ms.p50", "clip_ms.p99",
           "steady_allocated_mb_min_max", "store_bytes_per_clip"),
          "Clip after clip into a real SQLite store; GPU memory over the steady part (min, max)."),
    Table("AskVideo", "ask", ("ask",), ("device", "size", "store", "variant"),
          ("size", "store", "variant", "captions", "prompt_tokens", "retrieval_ms",
           "generation_ms", "total_ms.p50"),
          "A question over an hour of captions (`hour`) and over a full 10k-token budget."),
    Table("AskVideo while cameras caption", "ask", ("busy_ask",),
          ("device", "size", "cameras", "hold", "gap_s"),
          ("size", "cameras", "hold", "gap_s", "idle_ms.p99", "busy_ms.p99", "p99_ratio",
           "clips_per_s_busy"),
          "`hold` true: captions step aside while an answer runs (answers first)."),
    Table("Cameras on one model", "cameras", ("cameras",),
          ("device", "size", "mode", "cameras"),
          ("size", "mode", "cameras", "clips_per_s", "vs_one_camera", "per_clip_ms.p50",
           "first_round_ms"),
          "`batched`: one waiting clip of every camera encoded, prefilled and decoded together.",
          keep=lambda r: r.get("cameras") in (1, 8) and r.get("mode") in (
              "batched", "round_robin")),
    Table("Kept tokens against the fp32 reference", "overlap", ("overlap",),
          ("device", "size", "variant", "readout", "clip"),
          ("size", "variant", "readout", "overlap"),
          "Share of the fp32 plain path's kept tokens each path keeps (mean over clips).",
          keep=lambda r: "overlap" in r),
    Table("Weight formats", "weights", ("weights",), ("device", "size", "weights", "part"),
          ("size", "weights", "part", "decode_tok_s", "prefill_ms.p50", "projection_mb",
           "clips_agreement", "stream_agreement"),
          "Weight-only int8 / int4 on the fast decode path against native."),
    Table("Temporal evidence (CPU)", "recall", ("recall",),
          ("device", "horizon", "mmr_pool", "kind", "method"),
          ("horizon", "mmr_pool", "kind", "method", "recall_mean", "recall_min", "worlds",
           "p50_ms", "p99_ms", "count_exact"),
          "`bench/bench_recall.py` (`rats-ros eval recall`): caption diaries of a day, a week and "
          "a month of one camera (2,700 / 18,900 / 81,000 captions), each world its own rooms, "
          "objects and events; share of a question's ground-truth groups (first sighting, last "
          "sighting, every episode, both events, the rare event) with a caption in the 10k-token "
          "evidence. `covering`: the question read for its kind; `mmr`: the paper's rule alone. "
          "`count_exact`: the note's episode count equals the truth. Retrieval latency per "
          "question on 2 cores, question embedding excluded. A day (2,700 captions) is within "
          "any pool: its rows are pool 0's.",
          keep=lambda r: not (r.get("horizon") == "day" and r.get("mmr_pool"))),
    Table("MMR pool against exact MMR (CPU)", "recall", ("retrieval_pool",),
          ("device", "horizon", "pool"),
          ("horizon", "captions", "pool", "p50_ms", "p99_ms", "exact_picks_kept"),
          "Plain questions over a month of one camera: MMR over the `pool` most relevant "
          "captions against MMR over the whole window (pool 0, the paper's rule), same run; "
          "`exact_picks_kept`: share of the exact evidence the pool's evidence holds."),
    Table("Prompt tokens per caption line (CPU)", "recall", ("prompt_tokens",),
          ("device", "case", "tokenizer"),
          ("case", "tokenizer", "stream_tokens_per_line", "clock_tokens_per_line",
           "clock_vs_stream"),
          "`[14:03, 2 h 5 min ago] text` against `[86412.0s-86444.0s] text`: lines of the "
          "question's morning (no date) and of a month (dates on earlier days)."),
    Table("ONNX engine, fleet store, synthetic-world (CPU)", "cpu", ("engine", "fleet", "world"),
          ("bench", "model", "engine", "store", "captions", "recurrence"),
          ("bench", "model", "engine", "store", "captions", "recurrence", "total_p50",
           "insert_per_s", "select_p50"),
          "CPU runs on this project's 2-core machines."),
)


def _get(record: dict, path: str):
    value = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, list):
        return "-".join(_cell(v) for v in value)
    return str(value)


def load(name: str) -> list[dict]:
    path = RESULTS / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def current(table: Table) -> list[dict]:
    """The newest record per key (overlap: the mean over clips)."""
    latest: dict = {}
    for r in sorted(load(table.file), key=lambda r: r.get("date", "")):
        if r.get("bench") in table.benches and (table.keep is None or table.keep(r)):
            latest[tuple(_get(r, k) for k in table.key)] = r
    rows = list(latest.values())
    if table.file == "overlap":
        groups: dict = {}
        for r in rows:
            groups.setdefault((r["device"], r["size"], r["variant"], r.get("readout")),
                              []).append(r)
        rows = [{**g[-1], "overlap": statistics.fmean(x["overlap"] for x in g)}
                for g in groups.values()]
    return sorted(rows, key=lambda r: tuple(_cell(_get(r, k)) for k in table.key))


def markdown_table(table: Table) -> list[str]:
    rows = current(table)
    head = [*table.columns, "device", "commit"]
    lines = [f"## {table.title}", "", table.note, "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(_get(r, c)) for c in table.columns]
        cells += [str(r.get("device", "")).replace("NVIDIA ", ""), str(r.get("commit", ""))[:7]]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def world_eval() -> list[str]:
    """The synthetic-world evaluation: mean and range over the unseen worlds per configuration."""
    rows = load("world_eval")
    worlds = sorted({r["seed"] for r in rows})
    lines = ["## synthetic-world on unseen worlds (CPU)", "",
             f"`rats-ros eval synthetic --seed S` for S in {worlds}, 30 clips each: mean "
             "(min-max) over the worlds; columns as docs/EVALUATION.md defines them.", "",
             "| selection | recurrence | present facts | memory facts | precision | kept on "
             "objects | QA |", "|---|---|---|---|---|---|---|"]
    configs = sorted({(r["selection"], r["recurrence"]) for r in rows},
                     key=lambda c: (c[0], not c[1]))
    for selection, recurrence in configs:
        group = [r for r in rows if (r["selection"], r["recurrence"]) == (selection, recurrence)]
        cells = []
        for name in ("caption_present", "caption_memory", "caption_precision",
                     "kept_on_objects", "qa"):
            values = [r[name] for r in group]
            cells.append(f"{statistics.fmean(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        lines.append(f"| {selection} | {'on' if recurrence else 'off'} | " + " | ".join(cells)
                     + " |")
    return [*lines, ""]


def document() -> str:
    lines = ["# Benchmark results", "",
             "Written by `bench/report.py` from `bench/results/*.jsonl`; do not edit by hand. "
             "How to run the suites: `bench/README.md`. Figures on random weights at the "
             "published models' sizes unless a table says otherwise; ratios are only "
             "compared within one device and run.", ""]
    for table in TABLES:
        lines += markdown_table(table)
    lines += world_eval()
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when RESULTS.md is stale")
    args = ap.parse_args(argv)
    text = document()
    if args.check:
        same = DOC.is_file() and DOC.read_text() == text
        print("bench/RESULTS.md is current" if same else
              "bench/RESULTS.md is stale: run python bench/report.py")
        return 0 if same else 1
    DOC.write_text(text)
    print(f"wrote {DOC} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
