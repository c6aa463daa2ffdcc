"""Qwen3-VL backend: Qwen2.5-VL's video layout with DeepStack features in the first LLM layers.

Qwen3-VL's vision tower also returns, for every merged visual token, features of some of its
intermediate layers ("DeepStack"); the LLM adds feature ``i`` to the hidden state of those
positions after its layer ``i``. Here the clip's tokens get their DeepStack features during the
prefill; memory tokens (kept tokens of past clips) carry only their merged embeddings, so the
memory costs no more than with the other families (docs/METHOD_NOTES.md). The clip is one block
between ``<|vision_start|>`` and ``<|vision_end|>``, without the per-frame-group timestamp text
Qwen3-VL's processor writes, and every token gets plain contiguous positions (method.md).
"""
import threading

import torch
from transformers import Qwen3VLForConditionalGeneration

from rats_ros.models.hf import model_errors
from rats_ros.models.qwen2_5_vl import Qwen2VLBackend


class Qwen3VLBackend(Qwen2VLBackend):
    """Qwen3-VL (2B/4B/8B): see the module docstring.

    ``encode_clip`` returns the merged tokens ``(N, D)`` with their DeepStack features attached
    as ``tokens.deepstack`` (a list of ``(N, D)``, one per DeepStack layer); ``build_inputs``
    hands them to this thread's next prefill.
    """

    model_class = Qwen3VLForConditionalGeneration

    def __init__(self, directory, config, name):
        super().__init__(directory, config, name)
        self._call = threading.local()  # DeepStack inputs of this thread's caption in flight

    def encode_clip(self, pixels) -> torch.Tensor:
        with model_errors("encoding a clip"), torch.inference_mode():
            out = self._video_features(pixels)
            tokens = out.pooler_output[0]  # (N, D), temporal then raster order
            tokens.deepstack = [feature[0] for feature in out.deepstack_features]  # each (N, D)
            return tokens

    def build_inputs(self, memory, visual, prompt):
        embeds, key_start = super().build_inputs(memory, visual, prompt)
        deepstack = getattr(visual, "deepstack", None)
        if deepstack:
            mask = torch.zeros(embeds.shape[:2], dtype=torch.bool, device=self.device)
            mask[0, key_start:key_start + visual.shape[0]] = True  # the clip's positions
            self._call.prefill = {"visual_pos_masks": mask, "deepstack_visual_embeds": [
                feature.to(self.device, self.dtype) for feature in deepstack]}
        return embeds, key_start

    def prefill(self, embeds, cache) -> torch.Tensor:
        extra = getattr(self._call, "prefill", None) or {}
        self._call.prefill = None  # one prefill per build_inputs
        hidden = self.language_model(inputs_embeds=embeds, past_key_values=cache, use_cache=True,
                                     **extra).last_hidden_state
        return self.model.lm_head(hidden[:, -1])[0]
