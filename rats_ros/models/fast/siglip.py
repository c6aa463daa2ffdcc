"""LLaVA-OneVision's SigLIP tower on CUDA: GELU inside the fc1 product, cuDNN attention first.

Why: with 8 cameras a LLaVA-OV 0.5B round spends 62 % of its time in the tower (bench/RESULTS.md,
"Where a round of 8 goes"). Per clip, after the products, its largest kernels are the attention
(torch's flash kernel pads SigLIP's 72-wide heads to 96) and a separate GELU over the
4,304-wide hidden activations (written, read back, written again). Here:

- :func:`install` gives each SigLIP MLP a forward whose fc1 runs as one cuBLASLt product with
  the tanh GELU in its epilogue (``torch._addmm_activation``), the activation computed before
  the rounding to bf16 instead of after (tested against the stock module on CUDA);
- :func:`attention` puts cuDNN's fused attention first among SDPA's kernels for the tower
  (flash, then the others, where cuDNN cannot take a shape).

On the CPU, or with ``FastConfig.siglip`` off (bench_clip's ``ours_stock_siglip``), the stock
modules run. Only ``gelu_pytorch_tanh`` MLPs are changed (the published checkpoints' activation).
"""
from __future__ import annotations

import contextlib
import types

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

ATTENTION_ORDER = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                   SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def install(model, enabled: bool = True) -> int:
    """Swap the forward of every tanh-GELU SigLIP MLP of ``model`` (``enabled``), or put the
    stock forward back (``FastConfig.siglip`` off). :returns: how many MLPs now run ours."""
    count = 0
    for module in model.modules():
        if type(module).__name__ == "SiglipMLP" and \
                getattr(module.config, "hidden_act", "") == "gelu_pytorch_tanh":
            if enabled:
                module.forward = types.MethodType(_mlp_forward, module)
                count += 1
            else:
                module.__dict__.pop("forward", None)  # the class's forward again
    return count


def _mlp_forward(self, hidden: torch.Tensor) -> torch.Tensor:
    """``fc2(gelu_tanh(fc1(hidden)))``, fc1 and the GELU in one cuBLASLt call on CUDA when no
    gradient is wanted (training the tower keeps the stock ops)."""
    if not hidden.is_cuda or torch.is_grad_enabled():
        return self.fc2(self.activation_fn(self.fc1(hidden)))
    rows = hidden.reshape(-1, hidden.shape[-1])  # (B T P, D)
    inner = torch._addmm_activation(self.fc1.bias, rows, self.fc1.weight.t(), use_gelu=True)
    return self.fc2(inner).view(*hidden.shape[:-1], -1)


def attention(device: torch.device, enabled: bool = True):
    """The context the tower runs in on ``device``: cuDNN attention first on CUDA (when
    ``enabled``, ``FastConfig.siglip``); elsewhere SDPA's own choice, unchanged."""
    if not (enabled and device.type == "cuda"):
        return contextlib.nullcontext()
    return sdpa_kernel(ATTENTION_ORDER, set_priority=True)
