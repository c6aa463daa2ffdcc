"""Model backends: one adapter per Video-LLM family, chosen from the checkpoint's model_type."""
import json
from pathlib import Path

from rats_ros import world
from rats_ros.errors import ModelError
from rats_ros.models import tiny
from rats_ros.models.base import BackendConfig, CaptionOutput, VideoBackend

__all__ = ["BackendConfig", "CaptionOutput", "VideoBackend", "load_backend", "resolve_model",
           "SUPPORTED_MODEL_TYPES"]

SUPPORTED_MODEL_TYPES = ("llava_onevision", "qwen2_5_vl", "qwen3_vl")
_HINT = ("pass a local checkpoint directory, a Hugging Face id already in the local cache "
         "(nothing is downloaded), 'synthetic-world' (trained on the synthetic world) or "
         "'tiny-random' / 'tiny-random-qwen2_5_vl' / 'tiny-random-qwen3_vl'")


def resolve_model(model: str) -> Path:
    """Find the checkpoint directory of ``model`` without touching the network.

    :raises ModelError: when it is neither a tiny name, a directory, nor a cached id.
    """
    if model in tiny.TINY_MODELS:
        return tiny.ensure_tiny(model)
    if model == world.SYNTHETIC_WORLD:
        return world.checkpoint_dir()
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or model.startswith(".") or model.count("/") != 1:
        raise ModelError(f"model {model!r} not found: no such directory; {_HINT}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise ModelError(f"model {model!r} not found locally ({exc.__class__.__name__}); "
                         f"{_HINT}") from exc


def load_backend(model: str, device: str = "cpu", dtype: str = "float32",
                 **kwargs) -> VideoBackend:
    """Load ``model`` and wrap it in the backend of its family (``config.json``'s model_type).

    :param kwargs: further :class:`BackendConfig` fields (e.g. ``readout_layers``).
    :raises ConfigError: for bad options.
    :raises ModelError: for a missing checkpoint, an unsupported architecture or a load failure.
    """
    config = BackendConfig(model=model, device=device, dtype=dtype, **kwargs)
    directory = resolve_model(model)
    config_file = directory / "config.json"
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config_file} is missing or unreadable ({exc}); {_HINT}") from exc
    if model_type == "llava_onevision":
        from rats_ros.models.llava_onevision import LlavaOnevisionBackend as backend_class
    elif model_type == "qwen2_5_vl":
        from rats_ros.models.qwen2_5_vl import Qwen2VLBackend as backend_class
    elif model_type == "qwen3_vl":
        from rats_ros.models.qwen3_vl import Qwen3VLBackend as backend_class
    else:
        raise ModelError(f"{model!r} has model_type {model_type!r}, which is not supported; pass a "
                         f"checkpoint of one of {list(SUPPORTED_MODEL_TYPES)} "
                         "(e.g. llava-hf/llava-onevision-qwen2-0.5b-ov-hf, "
                         "Qwen/Qwen2.5-VL-7B-Instruct)")
    backend = backend_class(directory, config, model)
    if config.engine == "onnx":
        from rats_ros.models.onnx.engine import OnnxEngine

        backend.engine = OnnxEngine(Path(config.engine_dir).expanduser(), backend)
        backend.release_replaced_weights()
    return backend
