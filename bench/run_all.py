"""Run every bench script; ``--smoke`` (``make bench``, CI): tiny model on the CPU, in seconds.

Each measurement is one JSON line on stdout. The exit status is non-zero when any bench script
fails, so CI notices a broken bench. GPU figures come from ``bench/gpu_run.sh`` (see README.md).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

OURS = ("bench_clip", "bench_stream", "bench_ask", "bench_overlap", "bench_cameras")
# run as separate processes when present
OTHERS = ("bench_retrieval.py", "bench_recall.py", "bench_fleet.py", "bench_world.py",
          "bench_engine.py", "bench_weights.py", "bench_busy_ask.py", "bench_fused.py")


def run_ours(name: str, extra: list[str]) -> bool:
    """Import ``bench/<name>.py`` and run its ``main``; :returns: success."""
    started = time.perf_counter()
    try:
        module = __import__(name)
        ok = module.main(extra) == 0
    except Exception:  # noqa: BLE001 - reported below and turned into a failing exit status
        traceback.print_exc()
        ok = False
    report(name, ok, time.perf_counter() - started)
    return ok


def run_other(script: str, extra: list[str]) -> bool:
    path = HERE / script
    if not path.is_file():
        return True
    started = time.perf_counter()
    ok = subprocess.run([sys.executable, str(path), *extra]).returncode == 0
    report(script, ok, time.perf_counter() - started)
    return ok


def report(name: str, ok: bool, seconds: float) -> None:
    print(json.dumps({"bench": "run_all", "script": name, "status": "ok" if ok else "FAILED",
                      "seconds": round(seconds, 2)}), flush=True)


def table(path: str) -> None:
    """Print a short table of a results JSONL (the last line of each measurement wins)."""
    latest = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            key = tuple(r.get(k) for k in ("bench", "size", "variant", "memory", "store",
                                           "clips", "phase"))
            latest[key] = r
    rows = list(latest.values())
    ours = {(r["size"], r["memory"]): r.get("total_ms") for r in rows
            if r["bench"] == "clip" and r["variant"] == "ours" and r.get("status") == "ok"}
    print("clip  size memory variant       encode prefill  decode  select   total  x_ours"
          "  peakMB floor")
    for r in rows:
        if r["bench"] != "clip":
            continue
        if r.get("status") != "ok":
            print(f"clip  {r['size']:4} {r['memory']:6} {r['variant']:12} {r.get('status')}")
            continue
        base = ours.get((r["size"], r["memory"]))
        ratio = r["total_ms"] / base if base else float("nan")
        print(f"clip  {r['size']:4} {r['memory']:6} {r['variant']:12}"
              + "".join(f" {r.get(k + '_ms', float('nan')):7.1f}"
                        for k in ("encode", "prefill", "decode", "select", "total"))
              + f" {ratio:7.2f} {r.get('peak_mb', 0):7.0f}"
              + f" {r.get('floor_ms', {}).get('total', float('nan')):5.0f}")
    for r in rows:
        if r["bench"] == "stream":
            print(f"stream {r['size']:4} {r['variant']:5} clips={r['clips']} "
                  f"p50={r['clip_ms']['p50']:.1f} p99={r['clip_ms']['p99']:.1f} ms "
                  f"wall={r['wall_s']:.0f}s steady_alloc_MB={r['steady_allocated_mb_min_max']} "
                  f"peak_MB={r['peak_mb']:.0f} store={r['store_bytes_final'] / 1e6:.2f}MB")
        elif r["bench"] == "ask":
            print(f"ask   {r['size']:4} {r['store']:6} {r['variant']:5} "
                  f"p50={r['total_ms']['p50']:.1f} ms (retrieval {r['retrieval_ms']:.1f}, "
                  f"generation {r['generation_ms']:.1f}) prompt={r['prompt_tokens']:.0f} tok")
        elif r["bench"] == "profile":
            print(f"profile {r['size']:4} {r['phase']:11} kernels={r['kernels']} "
                  f"device={r['device_ms']:.2f} ms top={r['top'][:2]}")
        elif r["bench"] == "ceilings":
            print(f"ceilings matmul={r['matmul_flops'] / 1e12:.0f} TFLOP/s "
                  f"copy={r['copy_bytes_per_s'] / 1e12:.2f} TB/s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU (CI)")
    ap.add_argument("--table", help="print a short table of this results JSONL and exit")
    args = ap.parse_args(argv)
    if args.table:
        table(args.table)
        return 0
    extra = ["--smoke"] if args.smoke else []
    results = [run_ours(name, list(extra)) for name in OURS]
    if args.smoke:  # the Qwen families' tiny checkpoints through the clip, stream and ask benches
        for size in ("tiny-qwen2.5-vl", "tiny-qwen3-vl"):
            results.append(run_ours("bench_clip", [*extra, "--size", size, "--variants",
                                                   "ours", "ours_stock_vision", "plain"]))
            results += [run_ours(name, [*extra, "--size", size])
                        for name in ("bench_stream", "bench_ask")]
    results += [run_other(script, list(extra)) for script in OTHERS]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
