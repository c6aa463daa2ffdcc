"""This commit against a baseline commit, from one results JSONL of ``gpu_run.sh regress``.

    python bench/regress.py RESULTS.jsonl --baseline COMMIT [--limit 0.05]

Per size: one clip with a full memory (``bench_clip`` ours, total ms) and 8 cameras batched
(``bench_cameras``: clips/s and per-clip p50). Each tree ran twice in turn, so the table shows
both runs' medians and their spread; a regression is the new tree's median worse than the
baseline's by more than ``--limit``. Exit 1 when any is.
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def measurements(path: Path) -> dict:
    """``{(size, what, commit): [values]}``; ``what`` says whether lower is better."""
    values = defaultdict(list)
    for line in path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        key = (r.get("size"), r.get("commit", ""))
        if r.get("bench") == "clip" and r.get("variant") == "ours" and r.get("memory") == "full":
            values[(key[0], "clip_ms", key[1])].append(r["total_ms"])
        elif r.get("bench") == "cameras" and r.get("cameras") == 8:
            values[(key[0], "cameras8_clips_per_s", key[1])].append(r["clips_per_s"])
            values[(key[0], "cameras8_clip_ms_p50", key[1])].append(r["per_clip_ms"]["p50"])
    return values


def compare(values: dict, baseline: str, limit: float) -> tuple[list[str], bool]:
    """Table lines and whether any measurement regressed beyond ``limit``."""
    lines = [f"{'size':14} {'measure':22} {'baseline':>18} {'new':>18} {'new/base':>9}"]
    worse = False
    for size, what in sorted({(s, w) for s, w, _ in values}):
        base = values.get((size, what, baseline))
        new = [v for (s, w, c), vs in values.items() if (s, w) == (size, what) and c != baseline
               for v in vs]
        if not base or not new:
            continue
        ratio = statistics.median(new) / statistics.median(base)
        higher_better = what.endswith("per_s")
        regressed = ratio < 1 - limit if higher_better else ratio > 1 + limit
        worse |= regressed
        lines.append(f"{size:14} {what:22} {_runs(base):>18} {_runs(new):>18} {ratio:9.3f}"
                     + ("  REGRESSED" if regressed else ""))
    return lines, worse


def _runs(values: list[float]) -> str:
    return " / ".join(f"{v:.1f}" for v in values)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--baseline", required=True, help="the baseline run's commit field")
    ap.add_argument("--limit", type=float, default=0.05)
    args = ap.parse_args(argv)
    lines, worse = compare(measurements(args.results), args.baseline, args.limit)
    print("\n".join(lines))
    return 1 if worse else 0


if __name__ == "__main__":
    raise SystemExit(main())
