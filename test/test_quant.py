"""Weight-only int8 / int4 on the fast decode path (CPU kernels here; CUDA in bench/)."""
import json

import pytest
import torch

from rats_ros.errors import ConfigError
from rats_ros.models import BackendConfig, load_backend
from rats_ros.models.base import FastConfig
from rats_ros.models.fast import quant
from rats_ros.stream.captioner import CaptionerConfig, RecurrentCaptioner
from rats_ros.world import SYNTHETIC_WORLD, scene
from rats_ros.world.evaluate import EVAL_SEED_BASE


def dequantized(weight: torch.Tensor, kind: str, group: int = 128) -> torch.Tensor:
    """The rounding each format promises, written out independently of :mod:`quant`."""
    if kind == "int8":
        scale = weight.abs().amax(1, keepdim=True) / 127
        return (weight / scale).round().clamp(-127, 127) * scale
    w = weight.view(weight.shape[0], -1, group)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = (high - low) / 15
    return (((w - low) / scale).round().clamp(0, 15) * scale + low).view_as(weight)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bench/gpu_run.sh)")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("kind", ["int8", "int4"])
@pytest.mark.parametrize("rows", [5, quant.KERNEL_ROWS + 24])
def test_a_quantized_matrix_multiplies_as_its_rounded_weights(kind, device, rows):
    """CPU in float32; CUDA in bfloat16 (tinygemm's dtype), so to bf16 rounding there. On
    CUDA, 5 rows take the kernel and 40 the dense product on the dequantized matrix."""
    torch.manual_seed(0)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    weight, bias, x = (torch.randn(*shape, device=device)
                       for shape in ((96, 256), (96,), (rows, 256)))
    matrix = quant.matrix(weight.to(dtype), bias.to(dtype), kind)
    expected = x @ dequantized(weight.to(dtype).float(), kind).T + bias.to(dtype).float()
    tolerance = 1e-3 if device == "cpu" else 0.1
    torch.testing.assert_close(matrix(x.to(dtype)).float(), expected, rtol=tolerance,
                               atol=tolerance)
    if device == "cuda":  # the dequantized matrix is the kernel's: both paths agree
        torch.testing.assert_close(matrix(x.to(dtype)).float(),
                                   (matrix.kernel_product(x.to(dtype)) + matrix.bias).float(),
                                   rtol=0.15, atol=0.15)  # one bf16 step at |y| ~ 16
    dense_bytes = weight.numel() * 4
    # int4 on CUDA keeps its nibbles beside tinygemm's tiles for the dense rows (quant docstring)
    least = 0.16 if kind == "int4" and device == "cpu" else 0.27
    assert matrix.nbytes < dense_bytes * least


@pytest.fixture(scope="module")
def world_clips():
    return list(scene.clips(scene.generate(EVAL_SEED_BASE + 11, 12)))


def stream(backend, clips):
    captioner = RecurrentCaptioner(backend, CaptionerConfig())
    return [captioner.step(clip) for clip in clips]


def test_the_trained_model_captions_the_same_with_int8_and_int4(world_clips):
    """synthetic-world (trained) on 12 clips with the memory in front, native fast path against
    int8 and int4 projections: measured with the weights of 79f0016, int8 gave the same captions
    and kept sets, int4 11/12 of the captions and 0.96 of the kept tokens."""
    native = load_backend(SYNTHETIC_WORLD)
    native.use_fast(FastConfig(decode=True))
    reference = stream(native, world_clips)
    for kind, least_overlap in (("int8", 0.95), ("int4", 0.9)):
        backend = load_backend(SYNTHETIC_WORLD, weights=kind)
        assert backend.fast.caption.weights == kind
        assert sum(p.nbytes for p in backend.fast.caption.packed) < \
            sum(p.nbytes for p in native.fast.caption.packed) / 3
        outputs = stream(backend, world_clips)
        same = sum(a.text == b.text for a, b in zip(reference, outputs, strict=True))
        overlap = sum(len(set(a.kept_indices) & set(b.kept_indices)) / len(a.kept_indices)
                      for a, b in zip(reference, outputs, strict=True)) / len(outputs)
        assert same >= 0.8 * len(outputs) and overlap >= least_overlap, (kind, same, overlap)
        assert backend.generate("Which object entered first?", 16)  # answers run quantized too


def test_check_model_counts_the_quantized_weights(capsys):
    from rats_ros.tools.cli import main

    sizes = {}
    for kind in ("native", "int8", "int4"):
        assert main(["check-model", SYNTHETIC_WORLD, "--weights", kind, "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["weights"] == kind
        sizes[kind] = summary["weights_mib"]
    # the projections shrink 4x / ~7x; embeddings, lm_head and the vision tower stay float32
    assert sizes["native"] > sizes["int8"] > sizes["int4"] > 0.2 * sizes["native"]


@pytest.mark.parametrize("kwargs, says", [
    ({"weights": "int3"}, "not supported"),
    ({"weights": "int8", "engine": "onnx", "engine_dir": "x"}, "torch engine's fast path"),
    ({"weights": "int4", "device": "cuda", "dtype": "float16"}, "needs dtype 'bfloat16'")])
def test_weight_options_are_checked(kwargs, says):
    with pytest.raises(ConfigError, match=says):
        BackendConfig(model="tiny-random", **kwargs)
