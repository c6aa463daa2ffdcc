"""``rats-ros export-onnx``: write a checkpoint's graphs for the ONNX engine (and TensorRT)."""
from __future__ import annotations

import json
import logging

from rats_ros.errors import ConfigError, RatsError
from rats_ros.tools.options import fail


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "export-onnx", help="write MODEL's vision tower and LLM step as ONNX graphs",
        description="Trace MODEL (float32, CPU) into OUT_DIR: vision.onnx (one clip of "
                    "--frames frames of --height x --width), language.onnx (prefill and decode "
                    "step over a static KV cache, with the attention read-out) and "
                    "manifest.json. Run it with --engine onnx --engine-dir OUT_DIR (node: "
                    "engine:=onnx engine_dir:=OUT_DIR). Exit 2 if refused.")
    parser.add_argument("model", help="checkpoint directory, cached Hugging Face id or a "
                                      "built-in name")
    parser.add_argument("out_dir", help="directory to write (created)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (clip_frames)")
    parser.add_argument("--height", type=int, default=480, help="camera frame height, px")
    parser.add_argument("--width", type=int, default=640, help="camera frame width, px")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rats_ros.models import load_backend
    from rats_ros.models.onnx.export import timed_export

    # the exporter logs a warning per torchvision operator it cannot register: not ours
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        if min(args.frames, args.height, args.width) < 1:
            raise ConfigError("--frames, --height and --width must be >= 1")
        backend = load_backend(args.model, "cpu", "float32")
        manifest, seconds = timed_export(backend, args.out_dir, args.frames, args.height,
                                         args.width)
    except RatsError as error:
        return fail("export-onnx", error)
    if args.json:
        print(json.dumps(manifest.__dict__))
    else:
        print(f"exported {manifest.model} ({manifest.model_type}) to {args.out_dir} in "
              f"{seconds:.1f} s: clips of {args.frames} frames of {args.height}x{args.width} -> "
              f"{manifest.visual_tokens} visual tokens; read-out layers "
              f"{manifest.readout_layers}")
    return 0
