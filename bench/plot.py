"""Plot per-clip latency and GPU memory against stream time: ours vs full context.

    python bench/plot.py --stream-dir DIR [--out bench/stream.png] [--out-long ...]

DIR holds the ``--json`` files of ``bench_stream.py`` (``stream_<size>_<variant>_*.json``, as
``bench/gpu_run.sh`` names them). One column per model size: latency on top, memory below.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

CLIP_SECONDS = 32  # 16 frames at 0.5 fps


def load(directory: Path) -> dict:
    """:returns: ``{(size, variant, hours-or-clips tag): data}`` of every stream JSON."""
    runs = {}
    for path in sorted(directory.glob("stream_*.json")):
        _, size, variant, tag = path.stem.split("_", 3)
        runs[(size, variant, tag)] = json.loads(path.read_text())
    return runs


def plot(runs: dict, out: Path) -> None:
    sizes = sorted({k[0] for k in runs}, key=lambda s: float(s.rstrip("b")))
    fig, axes = plt.subplots(2, len(sizes), figsize=(6 * len(sizes), 7), squeeze=False)
    styles = {"ours": ("tab:blue", "ours (rLiVS, fast path)"),
              "full": ("tab:red", "full context (no selection)")}
    for col, size in enumerate(sizes):
        top, bottom = axes[0][col], axes[1][col]
        for (s, variant, tag), data in sorted(runs.items()):
            if s != size or tag.startswith("hours1") and tag != "hours1":
                continue
            rows = data["rows"]
            minutes = [r["clip"] * CLIP_SECONDS / 60 for r in rows]
            color, label = styles.get(variant, ("gray", variant))
            label = f"{label}, {len(rows)} clips"
            top.plot(minutes, [r["total_ms"] for r in rows], color=color, lw=1, label=label)
            bottom.plot(minutes, [r["peak_mb"] / 1024 for r in rows], color=color, lw=1,
                        label=f"{variant}: peak per clip")
            bottom.plot(minutes, [r["allocated_mb"] / 1024 for r in rows], color=color, lw=1,
                        ls="--", label=f"{variant}: allocated after clip")
        top.set(title=f"LLaVA-OneVision {size.upper()} size (random weights), H100",
                ylabel="per-clip latency (ms)", yscale="log")
        bottom.set(xlabel="stream time (minutes, 0.5 fps, 16-frame clips)",
                   ylabel="GPU memory (GiB)")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def plot_long(runs: dict, out: Path) -> None:
    """The longest 'ours' run (e.g. 10 hours): latency and memory against hours."""
    longest = max((k for k in runs if k[1] == "ours"), key=lambda k: len(runs[k]["rows"]))
    rows = runs[longest]["rows"]
    hours = [r["clip"] * CLIP_SECONDS / 3600 for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(hours, [r["total_ms"] for r in rows], lw=0.6)
    top.set(ylabel="per-clip latency (ms)", yscale="log",
            title=f"ours, {longest[0].upper()} size, {len(rows)} clips ({hours[-1]:.1f} h)")
    bottom.plot(hours, [r["peak_mb"] / 1024 for r in rows], lw=0.8, label="peak per clip")
    bottom.plot(hours, [r["allocated_mb"] / 1024 for r in rows], lw=0.8, ls="--",
                label="allocated after clip")
    bottom.set(xlabel="stream time (hours)", ylabel="GPU memory (GiB)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream-dir", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "stream.png")
    ap.add_argument("--out-long", type=Path, default=Path(__file__).parent / "stream_long.png")
    args = ap.parse_args(argv)
    runs = load(args.stream_dir)
    if not runs:
        raise SystemExit(f"no stream_*.json files in {args.stream_dir}")
    plot(runs, args.out)
    plot_long(runs, args.out_long)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
