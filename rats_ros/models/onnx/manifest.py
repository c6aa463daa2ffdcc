"""The record of an ONNX export: what each graph takes and gives, and which checkpoint it is of.

One definition, written by :mod:`~rats_ros.models.onnx.export` and read by
:mod:`~rats_ros.models.onnx.engine` (and by whoever builds a TensorRT engine from the files).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rats_ros.errors import ModelError

FORMAT = 1
MANIFEST = "manifest.json"
LANGUAGE_FILE, VISION_FILE = "language.onnx", "vision.onnx"
# The language step's inputs and outputs (T: new tokens, S: cache positions, R: read-out layers,
# K: DeepStack layers, V: vocabulary); the vision graph's are recorded with their fixed shapes.
LANGUAGE_INPUTS = {"embeds": ["1", "T", "D"], "start": ["1"], "keys": ["layers", "Hkv", "S", "d"],
                   "values": ["layers", "Hkv", "S", "d"], "deepstack": ["K", "T", "D"]}
LANGUAGE_OUTPUTS = {"logits": ["V"], "keys_out": ["layers", "Hkv", "S", "d"],
                    "values_out": ["layers", "Hkv", "S", "d"], "readout": ["R", "S"]}


def checkpoint_identity(directory: Path) -> str:
    """:returns: a hash of ``config.json`` and the names and sizes of the weight files: an
    export is refused for another checkpoint, not silently run with the wrong weights."""
    digest = hashlib.sha256()
    directory = Path(directory)
    digest.update((directory / "config.json").read_bytes())
    for path in sorted(directory.glob("*.safetensors")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:16]


@dataclass
class Manifest:
    """See the module docstring; shapes are lists (symbols as strings)."""

    model: str
    model_type: str
    checkpoint: str
    hidden_size: int
    num_layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    readout_layers: list[int]
    rope_rows: int
    deepstack_layers: int
    eos_ids: list[int]
    video_token_id: int
    clip_shape: list[int]  # frames, height, width of the camera clips the vision graph takes
    vision_input: list[int]  # its preprocessed pixel input
    vision_grid: list[int] | None  # the patch grid of that input (Qwen families), or None
    visual_tokens: int
    opset: int
    dtype: str = "float32"
    format: int = FORMAT
    language_file: str = LANGUAGE_FILE
    vision_file: str = VISION_FILE
    language_inputs: dict = field(default_factory=lambda: dict(LANGUAGE_INPUTS))
    language_outputs: dict = field(default_factory=lambda: dict(LANGUAGE_OUTPUTS))

    def __post_init__(self):
        if self.format != FORMAT:
            raise ModelError(f"ONNX export format {self.format} is not this version's {FORMAT}; "
                             "export again with this version's rats-ros export-onnx")
        if self.rope_rows not in (1, 3) or not self.readout_layers or self.deepstack_layers < 0:
            raise ModelError(f"manifest of {self.model!r} is inconsistent (rope_rows "
                             f"{self.rope_rows}, readout_layers {self.readout_layers}); export "
                             "again")

    def write(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """:raises ModelError: no manifest, or one this version cannot read."""
        path = Path(directory) / MANIFEST
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise ModelError(f"no {MANIFEST} in {directory}: write the ONNX export first with "
                             "`rats-ros export-onnx MODEL DIR`") from exc
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"{path} cannot be read ({type(exc).__name__}: {exc}); export "
                             "again with `rats-ros export-onnx MODEL DIR`") from exc

    def check(self, backend) -> None:
        """:raises ModelError: when the export is not of ``backend``'s checkpoint or read-out."""
        identity = checkpoint_identity(backend.directory)
        if identity != self.checkpoint:
            raise ModelError(f"the ONNX export of {self.model!r} is not of the checkpoint in "
                             f"{backend.directory} (identity {self.checkpoint} != {identity}); "
                             "export this checkpoint with `rats-ros export-onnx`")
        if list(backend.readout_layers) != self.readout_layers:
            raise ModelError(f"the ONNX export reads out layers {self.readout_layers}, the model "
                             f"is asked for {list(backend.readout_layers)}; export again with "
                             "the same readout_layers")
