"""Bench plumbing shared by the bench scripts: backends at bench size, clips, timing, JSON lines.

Every measurement is printed as one JSON line (``emit``) and appended to ``--out`` when given.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402  (bench/models.py, beside this file)

from rats_ros.models import load_backend  # noqa: E402
from rats_ros.models.llava_onevision import LlavaOnevisionBackend  # noqa: E402
from rats_ros.models.qwen2_5_vl import Qwen2VLBackend  # noqa: E402
from rats_ros.models.qwen3_vl import Qwen3VLBackend  # noqa: E402
from rats_ros.stream.clips import Clip, Frame  # noqa: E402

# the tiny checkpoints of each family (CPU smoke); the rest are real sizes with random weights
# the small checkpoints the package brings, loaded as they are (the rest are built at size)
TINY = {"tiny": "tiny-random", "tiny-qwen2.5-vl": "tiny-random-qwen2_5_vl",
        "tiny-qwen3-vl": "tiny-random-qwen3_vl", "synthetic-world": "synthetic-world"}
SIZES = (*TINY, "0.5b", "7b", *models.QWEN25_VL_SIZES, *models.QWEN3_VL_SIZES)
SMOKE = {"device": "cpu", "dtype": "float32"}


def model_parser(doc: str) -> argparse.ArgumentParser:
    """The options every model bench shares: size, device, dtype, outputs, ``--smoke``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--size", choices=SIZES, default="0.5b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", help="append JSON lines here")
    ap.add_argument("--json", help="write the full records here")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU, seconds (CI)")
    return ap


def parse_args(ap: argparse.ArgumentParser, argv, **smoke) -> argparse.Namespace:
    """Parse ``argv``; with ``--smoke`` a tiny model (``tiny`` unless ``--size`` names another)
    on the CPU and the ``smoke`` values."""
    args = ap.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE | smoke)
        if getattr(args, "size", "tiny") not in TINY:
            args.size = "tiny"
    return args


def entry_point(parse, run):
    """``main(argv=None) -> 0`` of a bench script: ``run(parse(argv))``."""
    def main(argv=None) -> int:
        run(parse(argv))
        return 0
    return main
FPS = 0.5  # the paper's sampling rate for RVS-Ego/Movie: one frame every 2 s


class RandomWeights:
    """Mixin for a real backend class: weights drawn at random on the device.

    Only ``_load_model`` differs: building a 7B model from its config on the GPU takes seconds,
    where writing and reading a 16 GB random checkpoint would take minutes. Tokenizer, prompt
    layout, preprocessing, read-out and decoding are the backend's own.
    """

    def _load_model(self):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.directory)  # the family's config class
        return models.build_model(config, str(self.device), self.dtype).requires_grad_(False)


class RandomWeightBackend(RandomWeights, LlavaOnevisionBackend):
    """The real LLaVA-OneVision backend with random weights (:class:`RandomWeights`)."""


class RandomWeightQwenBackend(RandomWeights, Qwen2VLBackend):
    """The real Qwen2.5-VL backend with random weights (:class:`RandomWeights`)."""


class RandomWeightQwen3Backend(RandomWeights, Qwen3VLBackend):
    """The real Qwen3-VL backend with random weights (:class:`RandomWeights`)."""


# Qwen bench sizes: (tiny checkpoint lending the tokenizer, config builder, preprocessor, class)
QWEN_FAMILIES = {
    **{size: ("tiny-random-qwen2_5_vl", models.build_qwen_config, models.QWEN25_VL_PREPROCESSOR,
              RandomWeightQwenBackend) for size in models.QWEN25_VL_SIZES},
    **{size: ("tiny-random-qwen3_vl", models.build_qwen3_config, models.QWEN3_VL_PREPROCESSOR,
              RandomWeightQwen3Backend) for size in models.QWEN3_VL_SIZES},
}


def load_bench_backend(size: str, device: str, dtype: str = "bfloat16"):
    """:returns: the backend for ``size`` (``tiny`` loads the tiny-random checkpoint); its
    ``greedy`` takes the fast decode path where it applies (``FastConfig.decode`` switches it).

    Bench sizes reuse the tiny-random checkpoint's tokenizer and chat template (a small BPE
    vocabulary; token ids only matter for prompt length) with the bench-size model config.
    """
    if size in TINY:
        return load_backend(TINY[size], device=device, dtype=dtype)
    from transformers import AutoTokenizer

    from rats_ros.models import resolve_model
    from rats_ros.models.base import BackendConfig

    qwen = QWEN_FAMILIES.get(size)
    tiny_dir = resolve_model(qwen[0] if qwen else "tiny-random")
    directory = Path(tempfile.mkdtemp(prefix=f"rats-bench-{size}-"))
    for item in tiny_dir.iterdir():  # tokenizer files and templates, not weights or configs
        if item.name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                         "chat_template.jinja", "chat_template.json"):
            shutil.copy(item, directory / item.name)
    tok = AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    if qwen:
        ids = {f"{name}_token_id": tok.convert_tokens_to_ids(token) for name, token in (
            ("image", "<|image_pad|>"), ("video", "<|video_pad|>"),
            ("vision_start", "<|vision_start|>"), ("vision_end", "<|vision_end|>"))}
        _, build_config, preprocessor, backend_class = qwen
        build_config(size, tok.eos_token_id, ids).save_pretrained(directory)
        (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor))
        return backend_class(
            directory, BackendConfig(model=str(directory), device=device, dtype=dtype),
            f"random-{size}")
    models.build_config(size, tok.eos_token_id, tok.convert_tokens_to_ids("<image>"),
                        tok.convert_tokens_to_ids("<video>")).save_pretrained(directory)
    models.write_preprocessor_config(directory)
    return RandomWeightBackend(
        directory, BackendConfig(model=str(directory), device=device, dtype=dtype),
        f"random-llava-ov-{size}")


def frame_pool(count: int, side: int, frames: int, seed: int = 0,
               width: int | None = None) -> list[np.ndarray]:
    """``count`` distinct random clips ``(frames, side, width or side, 3)`` uint8 to cycle
    through."""
    rng = np.random.default_rng(seed)
    shape = (frames, side, width or side, 3)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


def make_clip(pixels: np.ndarray, index: int, fps: float = FPS) -> Clip:
    """Clip ``index`` of a stream sampled at ``fps``, with stamps in ns."""
    period = int(1e9 / fps)
    t = pixels.shape[0]
    return Clip([Frame((index * t + i) * period, pixels[i]) for i in range(t)])


def sync(device) -> float:
    """Synchronise ``device`` (CUDA) and return ``time.perf_counter()``."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def reset_peak(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def memory_mb(device) -> dict:
    """Allocated and peak-allocated device memory (MiB); zeros on CPU."""
    if torch.device(device).type != "cuda":
        return {"allocated_mb": 0.0, "peak_mb": 0.0}
    return {"allocated_mb": torch.cuda.memory_allocated(device) / 2**20,
            "peak_mb": torch.cuda.max_memory_allocated(device) / 2**20}


def summary(values: list[float]) -> dict:
    """p50 / p99 / mean / min / max of a list (ms or any unit)."""
    if not values:
        return {}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"p50": statistics.median(ordered), "p99": p99, "mean": statistics.fmean(ordered),
            "min": ordered[0], "max": ordered[-1], "n": len(ordered)}


def environment(device: str) -> dict:
    """Device, software versions, date and git commit of this run."""
    import transformers

    commit = os.environ.get("RATS_GIT_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                    check=True, cwd=Path(__file__).parent).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu"
    return {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit}


class Emitter:
    """Prints one JSON line per measurement and appends it to ``path`` when given."""

    def __init__(self, path: str | None = None):
        self.path = path
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, record: dict) -> dict:
        line = json.dumps(record, sort_keys=True, default=float)
        print(line, flush=True)
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(line + "\n")
        return record


def write_json(path: str | None, data) -> None:
    """Write ``data`` as indented JSON to ``path`` (no-op without a path)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=1, default=float))
