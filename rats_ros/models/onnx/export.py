"""Write a backend's vision tower and language step as ONNX graphs with their manifest.

``rats-ros export-onnx MODEL OUT_DIR --frames F --height H --width W`` (see
:mod:`rats_ros.tools.export`). The graphs are traced with ``torch.onnx.export(dynamo=True)`` in
float32 on the CPU: the language step with the number of new tokens ``T`` and cache positions
``S`` dynamic, the vision graph for one clip shape.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from rats_ros.errors import ModelError
from rats_ros.models.onnx.graphs import LanguageStep, VisionGraph, export_attention_installed
from rats_ros.models.onnx.manifest import (
    LANGUAGE_FILE,
    LANGUAGE_INPUTS,
    LANGUAGE_OUTPUTS,
    VISION_FILE,
    Manifest,
    checkpoint_identity,
)

OPSET = 18
_EXTERNAL_DATA_BYTES = 1 << 30  # weights above this go to a .data file next to the graph


def _family(backend) -> tuple[int, int]:
    """:returns: position rows of the rotary embedding and DeepStack layers of ``backend``."""
    model_type = backend.model.config.model_type
    text = backend.model.config.text_config
    rows = 1 if model_type == "llava_onevision" else 3
    deepstack = len(getattr(backend.model.config.vision_config, "deepstack_visual_indexes",
                            None) or []) if model_type == "qwen3_vl" else 0
    if rows == 3 and text.model_type not in ("qwen2_5_vl_text", "qwen3_vl_text"):
        raise ModelError(f"no ONNX export for the language model {text.model_type!r}")
    return rows, deepstack


def _save(program, path: Path, parameters: int) -> None:
    program.save(str(path), external_data=parameters * 4 > _EXTERNAL_DATA_BYTES)


def export_language(backend, out_dir: Path, rope_rows: int, deepstack_layers: int) -> Path:
    """Trace :class:`LanguageStep` with dynamic ``T`` and ``S``. :returns: the file written."""
    d, kv = backend.hidden_size, backend.model.config.text_config.num_key_value_heads
    step = LanguageStep(backend, rope_rows, deepstack_layers).eval()
    t, s = 5, 9  # examples only: neither 0 nor 1, which the tracer would specialise
    cache = torch.zeros(backend.num_layers, kv, s, backend.head_dim)
    args = (torch.randn(1, t, d), torch.tensor([2]), cache, cache.clone(),
            torch.zeros(deepstack_layers, t, d))
    tokens, positions = torch.export.Dim("T", min=1), torch.export.Dim("S", min=2)
    shapes = ({1: tokens}, None, {2: positions}, {2: positions}, {1: tokens})
    path = out_dir / LANGUAGE_FILE
    with export_attention_installed(backend.model), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation chatter
        program = torch.onnx.export(step, args, dynamo=True, dynamic_shapes=shapes,
                                    input_names=list(LANGUAGE_INPUTS),
                                    output_names=list(LANGUAGE_OUTPUTS), opset_version=OPSET,
                                    verbose=False)
    _save(program, path, sum(p.numel() for p in backend.language_model.parameters()))
    return path


def export_vision(backend, out_dir: Path, frames: int, height: int, width: int):
    """Trace :class:`VisionGraph` for clips of ``frames`` frames of ``height x width``.

    :returns: the preprocessed input shape and its grid.
    """
    pixels, grid = backend.vision_inputs(np.zeros((frames, height, width, 3), np.uint8))
    graph = VisionGraph(backend, grid).eval()
    with torch.inference_mode():  # one eager run first: it fills caches the trace must see as
        graph(pixels)  # constants (LLaVA-OV's pooling matrix), not trace as computations
    with export_attention_installed(backend.model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, (pixels.float(),), dynamo=True,
                                    input_names=["pixels"],
                                    output_names=["tokens", "deepstack"],
                                    opset_version=OPSET, verbose=False)
    _save(program, out_dir / VISION_FILE, sum(p.numel() for p in backend.model.parameters()))
    return list(pixels.shape), list(grid) if grid is not None else None


def export(backend, out_dir: Path, frames: int, height: int, width: int) -> Manifest:
    """Write ``vision.onnx``, ``language.onnx`` and ``manifest.json`` into ``out_dir``.

    :raises ModelError: for a backend that is not float32 on the CPU, or a failed trace.
    """
    if backend.dtype != torch.float32 or backend.device.type != "cpu":
        raise ModelError("export from a float32 model on the CPU (load it with dtype "
                         "'float32', device 'cpu')")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rope_rows, deepstack = _family(backend)
    text = backend.model.config.text_config
    try:
        vision_input, grid = export_vision(backend, out_dir, frames, height, width)
        export_language(backend, out_dir, rope_rows, deepstack)
    except (torch.onnx.errors.OnnxExporterError, RuntimeError) as exc:
        raise ModelError(f"ONNX export of {backend.name!r} failed ({type(exc).__name__}: "
                         f"{str(exc)[:300]})") from exc
    manifest = Manifest(
        model=backend.name, model_type=backend.model.config.model_type,
        checkpoint=checkpoint_identity(backend.directory), hidden_size=backend.hidden_size,
        num_layers=backend.num_layers, heads=text.num_attention_heads,
        kv_heads=text.num_key_value_heads,
        head_dim=backend.head_dim,
        vocab_size=text.vocab_size, readout_layers=list(backend.readout_layers),
        rope_rows=rope_rows, deepstack_layers=deepstack, eos_ids=sorted(backend.eos_ids),
        video_token_id=int(backend.model.config.video_token_id),
        clip_shape=[frames, height, width], vision_input=vision_input, vision_grid=grid,
        visual_tokens=backend.num_visual_tokens(frames, height, width), opset=OPSET)
    manifest.write(out_dir)
    return manifest


def timed_export(backend, out_dir: Path, frames: int, height: int, width: int):
    """:returns: the manifest and the seconds the export took."""
    start = time.perf_counter()
    manifest = export(backend, out_dir, frames, height, width)
    return manifest, time.perf_counter() - start
