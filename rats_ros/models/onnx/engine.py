"""The ONNX engine: a backend's vision tower and language model run by ONNX Runtime.

Behind the backend seam (``HFVideoBackend.engine``): the backend keeps its tokenizer, chat
template, prompt layout and token-embedding table; :meth:`OnnxEngine.vision` replaces the vision
tower and :meth:`OnnxEngine.greedy` the language model, read-out included. Greedy decoding
follows the torch path step for step (prefill, then one token per step, the last token never
fed), so tokens, read-out scores and kept indices agree with it (test/test_onnx_engine.py).

The KV cache is preallocated per call for ``prompt + max_new_tokens`` positions and passed
through every step (ONNX Runtime returns the updated buffers). This is the seam a TensorRT
engine built from the same graphs plugs into.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from rats_ros.errors import ConfigError, ModelError
from rats_ros.models.onnx.manifest import Manifest


def _providers(device: torch.device) -> list[str]:
    """:raises ModelError: for a CUDA device without ONNX Runtime's CUDA provider."""
    import onnxruntime

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ModelError(f"engine 'onnx' on {device} needs ONNX Runtime's CUDA provider (this "
                         f"onnxruntime has {available}): install onnxruntime-gpu, or use "
                         "device 'cpu'")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _session(path: Path, providers: list[str]):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only: its warnings are about graph fusions
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors; re-raised typed
        raise ModelError(f"ONNX Runtime cannot load {path} ({type(exc).__name__}: "
                         f"{str(exc)[:300]}); export again with `rats-ros export-onnx`") from exc


def _run(session, feeds: dict, what: str) -> list:
    """:raises ModelError: for any failure of ONNX Runtime (its errors are untyped)."""
    try:
        return session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - re-raised typed, never swallowed
        raise ModelError(f"ONNX Runtime failed while {what} ({type(exc).__name__}: "
                         f"{str(exc)[:300]}); check the export matches this version and device "
                         "memory, or use engine 'torch'") from exc


class OnnxEngine:
    """See the module docstring.

    :param directory: an export written by ``rats-ros export-onnx``.
    :param backend: the loaded backend of the same checkpoint.
    :raises ModelError: no or a foreign export, or graphs ONNX Runtime cannot load.
    """

    def __init__(self, directory: Path, backend):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise ConfigError("engine 'onnx' needs the onnxruntime package: pip install "
                              "onnxruntime (or onnxruntime-gpu)") from exc
        self.directory = Path(directory)
        self.manifest = Manifest.read(self.directory)
        self.manifest.check(backend)
        providers = _providers(backend.device)
        self.language = _session(self.directory / self.manifest.language_file, providers)
        self.vision_session = _session(self.directory / self.manifest.vision_file, providers)
        self.device, self.dtype = backend.device, backend.dtype

    def check_clip_frames(self, frames: int) -> None:
        """:raises ConfigError: when clips of ``frames`` frames cannot fit the vision graph, so
        a node refuses at configure instead of failing on every clip."""
        exported = self.manifest.clip_shape[0]
        if frames != exported:
            raise ConfigError(f"the ONNX export in {self.directory} takes clips of {exported} "
                              f"frames, clip_frames is {frames}: export again with --frames "
                              f"{frames}, or set clip_frames to {exported}")

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device, self.dtype)

    def vision(self, pixels: torch.Tensor, grid) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The vision graph on :meth:`~rats_ros.models.hf.HFVideoBackend.vision_inputs`' output.

        :raises ModelError: for a clip of another shape than the export's.
        """
        m = self.manifest
        if list(pixels.shape) != m.vision_input or (grid is not None and
                                                    list(grid) != m.vision_grid):
            raise ModelError(
                f"the ONNX vision graph in {self.directory} takes clips of {m.clip_shape[0]} "
                f"frames of {m.clip_shape[1]}x{m.clip_shape[2]} (input {m.vision_input}), this "
                f"clip gives {list(pixels.shape)}: export again with --frames/--height/--width "
                "of this camera and clip_frames")
        tokens, deepstack = _run(self.vision_session, {"pixels": pixels.float().cpu().numpy()},
                                 "encoding a clip")
        return self._tensor(tokens), self._tensor(deepstack) if len(deepstack) else None

    def greedy(self, backend, inputs, max_new_tokens: int, timings: dict,
               readout=None, step=None) -> list[int]:
        """Greedy decoding of ``inputs`` (``PrefillInputs``: ``embeds`` ``(1, L, D)``), summing
        the clip's attention into ``readout`` if given; ``step(count, ids)`` after each token
        (``base.stream_step``), if given."""
        m, embeds = self.manifest, inputs.embeds
        length = embeds.shape[1]
        shape = (m.num_layers, m.kv_heads, length + max_new_tokens, m.head_dim)
        keys, values = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        deepstack = self._deepstack(inputs, length)
        start = time.perf_counter()
        logits, keys, values = self._step(embeds, 0, keys, values, deepstack, readout)
        ids = [int(logits.argmax())]
        timings["prefill"] = time.perf_counter() - start
        start, none = time.perf_counter(), np.zeros((m.deepstack_layers, 1, m.hidden_size),
                                                    np.float32)
        while len(ids) < max_new_tokens and ids[-1] not in backend.eos_ids:
            if step is not None:
                step(len(ids), lambda: ids)
            token = torch.tensor([[ids[-1]]], device=backend.device)
            logits, keys, values = self._step(backend.embed_tokens(token), length + len(ids) - 1,
                                              keys, values, none, readout)
            ids.append(int(logits.argmax()))
        timings["decode"] = time.perf_counter() - start
        return ids

    def _step(self, embeds: torch.Tensor, position: int, keys, values, deepstack, readout):
        """One run of the language graph; adds its read-out rows to ``readout``."""
        logits, keys, values, rows = _run(self.language, {
            "embeds": embeds.float().cpu().numpy(), "start": np.array([position], np.int64),
            "keys": keys, "values": values, "deepstack": deepstack}, "running the language step")
        if readout is not None:  # rows: (R, S) head-summed probabilities of the last query
            end = readout.key_start + readout.num_keys
            readout.add(torch.from_numpy(rows[:, readout.key_start:end].sum(0)),
                        self.manifest.heads * rows.shape[0])
        return logits, keys, values

    def _deepstack(self, inputs, length: int) -> np.ndarray:
        """``(K, L, D)``: the prefill's DeepStack features at the clip's positions, else 0."""
        m = self.manifest
        dense = np.zeros((m.deepstack_layers, length, m.hidden_size), np.float32)
        if inputs.deepstack is not None:
            start, end = inputs.span
            dense[:, start:end] = inputs.deepstack.float().cpu().numpy()  # (K, N, D)
        return dense
