"""Shared Hugging Face implementation: loading, inputs, greedy decoding with read-out (the chat
template and prompt layout: :mod:`rats_ros.models.prompts`).

Prefill, one decode step and the read-out are separate methods so a static KV cache, CUDA graphs
or ``torch.compile`` can replace the decode step without touching the rest.
"""
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import AutoTokenizer, DynamicCache

from rats_ros.errors import ModelError
from rats_ros.models import readout as ro
from rats_ros.models import tiny
from rats_ros.models.base import (
    BackendConfig,
    CaptionOutput,
    ClipTokens,
    FastConfig,
    PrefillInputs,
    VideoBackend,
    clock,
    stream_step,
)
from rats_ros.models.fast import decode as fast_decode
from rats_ros.models.fast import hook as fast_hook
from rats_ros.models.fast.tile_cache import TileCache
from rats_ros.models.prompts import ChatPrompts

#: what torch's CPU allocator says when an allocation fails (alloc_cpu.cpp)
_CPU_OOM = "DefaultCPUAllocator: can't allocate memory"


@contextmanager
def model_errors(what: str):
    """Turn out-of-memory and device errors of a model call into :class:`ModelError`."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        # torch reports a failed CPU allocation as a plain RuntimeError from its allocator.
        if not isinstance(exc, torch.OutOfMemoryError) and _CPU_OOM not in str(exc):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the failed call's blocks back before the next clip
        raise ModelError(f"out of memory while {what}: use dtype='bfloat16', a smaller model, "
                         "fewer frames per clip or fewer memory clips") from exc


def resolve_device(device: str) -> torch.device:
    """:raises ModelError: when CUDA is asked for but not available."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r} requested but CUDA is not available; "
                             "pass device='cpu'")
        # cuDNN's SDPA builds a plan for every new (query, key) length: measured ~60 ms each on
        # an H100, paid at every decoding step of a new length (answers, growing memory).
        # Flash / memory-efficient SDPA have no such cost. Process-wide, as torch's flag is.
        torch.backends.cuda.enable_cudnn_sdp(False)
    return torch.device(device)


class HFVideoBackend(ChatPrompts, VideoBackend):
    """A transformers Video-LLM behind :class:`VideoBackend`. Subclasses add the vision side.

    :param directory: checkpoint directory (config, weights, tokenizer).
    :param config: backend configuration.
    :param name: display name (the ``model`` argument).
    """

    model_class = None  # set by subclasses
    #: the engine that runs the vision tower and the language model instead of torch (an
    #: :class:`rats_ros.models.onnx.engine.OnnxEngine`), or None
    engine = None

    def __init__(self, directory: Path, config: BackendConfig, name: str):
        self.name, self.config, self.directory = name, config, Path(directory)
        self.device, self.dtype = resolve_device(config.device), config.torch_dtype
        with model_errors(f"loading {name}"):
            self.model = self._load_model()
        ro.install(self.model)
        self.tokenizer = self._load_tokenizer()
        self._tokenizer_lock = threading.Lock()  # the Rust tokenizer is not re-entrant
        self.chat_template, self.template_source = self._chat_template()
        text = self.model.config.text_config
        self.hidden_size, self.num_layers = text.hidden_size, text.num_hidden_layers
        self.head_dim = getattr(text, "head_dim", None) or text.hidden_size // \
            text.num_attention_heads
        layers = config.readout_layers
        self.readout_layers = (ro.default_readout_layers(self.num_layers, layers)
                               if isinstance(layers, int) else sorted(set(layers)))
        if max(self.readout_layers) >= self.num_layers:
            raise ModelError(f"readout_layers {self.readout_layers} beyond the model's "
                             f"{self.num_layers} layers; pass layers below {self.num_layers}")
        self.language_model = self.model.model.language_model
        self.embed_tokens = self.model.get_input_embeddings()
        self.eos_ids = self._eos_ids()
        self.weights = config.weights
        self.fast = fast_hook.FastDecoders(config.fast)  # built on first use, or by prepare
        self.tile_cache = TileCache(config.cache_dir) if config.cache_dir else None
        if self.weights != "native":
            self._quantize()
        self._layouts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._check_prompt()
        if name in tiny.TINY_MODELS:
            tiny.warn_random(name)

    # ---- loading -------------------------------------------------------------------------
    def _quantize(self) -> None:
        """Quantize the LLM's projections now (memory drops at load; errors show at load): the
        fast decode path then serves every caption and answer.

        :raises ModelError: for a language model the fast path does not serve.
        """
        if not fast_decode.supports(self.model) or len(self.eos_ids) > fast_hook.MAX_EOS_IDS:
            raise ModelError(f"weights {self.weights!r} run on the fast decode path, which "
                             f"serves {list(fast_decode.SUPPORTED_LM_CLASSES)} language models, "
                             f"not {type(self.language_model).__name__}; use weights 'native'")
        self.fast.use(replace(self.fast.config, decode=True))
        try:
            with model_errors(f"quantizing {self.name} to {self.weights}"):
                self.fast.caption = fast_decode.FastDecoder(self.model, self.readout_layers,
                                                            weights=self.weights,
                                                            tile_cache=self.tile_cache)
        except (ValueError, RuntimeError) as exc:  # a shape or a kernel the device lacks
            raise ModelError(f"cannot quantize {self.name} to {self.weights} on {self.device} "
                             f"({type(exc).__name__}: {exc}); use weights 'native' (or 'int8' "
                             "where int4 is refused)") from exc

    def _load_model(self):
        try:
            model = self.model_class.from_pretrained(self.directory, dtype=self.dtype,
                                                     local_files_only=True)
        except (OSError, ValueError, KeyError, SafetensorError) as exc:
            raise ModelError(f"cannot load {self.name!r} from {self.directory}: "
                             f"{type(exc).__name__}: {exc}; pass a complete checkpoint "
                             "directory (config.json, weights, tokenizer); a truncated or "
                             "corrupt weights file must be downloaded again") from exc
        return model.to(self.device).eval().requires_grad_(False)  # inference only

    def _load_tokenizer(self):
        try:
            return AutoTokenizer.from_pretrained(self.directory, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load the tokenizer of {self.name!r} from {self.directory}: "
                             f"{exc}; the checkpoint directory needs its tokenizer files") from exc

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        for token in ("<|im_end|>", "<|endoftext|>", self.tokenizer.eos_token):
            if token and token in self.tokenizer.get_vocab():
                ids.add(self.tokenizer.convert_tokens_to_ids(token))
        return ids

    def use_fast(self, config: FastConfig) -> None:
        """Run with ``config`` from now on: how benchmarks and tests compare the parts of the
        fast path on one loaded model. Decoders built under another setting are rebuilt."""
        self.fast.use(config)
        self.install_vision(config)

    def install_vision(self, fast: FastConfig) -> None:
        """Put the family's fast vision parts on the model as ``fast`` asks (none here)."""

    def release_replaced_weights(self) -> None:
        """Free what an attached engine runs instead of torch: every LLM layer, the lm_head and
        the vision tower with its projector. The token embeddings (prompt and decode inputs, the
        model embedder), the clip trailer, the tokenizer and the template stay."""
        self.language_model.layers = torch.nn.ModuleList()
        self.model.lm_head = torch.nn.Identity()
        inner = self.model.model
        for name in ("vision_tower", "multi_modal_projector", "visual"):
            if hasattr(inner, name):
                setattr(inner, name, torch.nn.Identity())

    # ---- vision ------------------------------------------------------------------------
    def vision_inputs(self, pixels) -> tuple[torch.Tensor, tuple[int, int, int] | None]:
        """The family's preprocessing of ``(T, H, W, 3)`` uint8 frames.

        :returns: the vision tower's pixel input and its patch grid (None when it has none).
        """
        raise NotImplementedError

    def vision_tower(self, pixels: torch.Tensor, grid) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The vision tower and projector on :meth:`vision_inputs`' output.

        :returns: ``(N, D)`` visual tokens and ``(K, N, D)`` DeepStack features or None.
        """
        raise NotImplementedError

    def encode_clip(self, pixels) -> ClipTokens:
        with model_errors("encoding a clip"), torch.inference_mode():
            self.fast.gate.wait_for_answers()  # an answer in flight goes first
            inputs, grid = self.vision_inputs(pixels)
            tower = self.engine.vision if self.engine is not None else self.vision_tower
            tokens, deepstack = tower(inputs, grid)  # (N, D), (K, N, D) or None
            return ClipTokens(tokens, deepstack if deepstack is not None and len(deepstack)
                              else None)

    def _one_forward(self, clips: list) -> bool:
        """Whether ``clips`` go through the tower in one forward (:meth:`encode_clips`): two or
        more, of one shape, on the torch engine."""
        return self.fast.config.encode_together and len(clips) > 1 and self.engine is None and \
            len({tuple(getattr(p, "shape", ())) for p in clips}) == 1

    def _clip_trailer(self) -> torch.Tensor:
        """``(0 or 1, D)`` embeddings that follow the current clip (LLaVA-OV's newline)."""
        return torch.empty(0, self.hidden_size, device=self.device, dtype=self.dtype)

    def build_inputs(self, memory: torch.Tensor, visual: ClipTokens | torch.Tensor,
                     prompt: str) -> PrefillInputs:
        """``[prefix][memory][visual][trailer][suffix]`` as input embeddings, with the clip's
        span and DeepStack features (:class:`PrefillInputs`)."""
        visual = ClipTokens.of(visual)
        prefix, suffix = self.prompt_layout(prompt)
        memory = memory.to(self.device, self.dtype).reshape(-1, self.hidden_size)  # (M, D)
        tokens = visual.tokens.to(self.device, self.dtype)  # (N, D)
        parts = [self.embed_tokens(prefix), memory, tokens, self._clip_trailer(),
                 self.embed_tokens(suffix)]
        deepstack = None if visual.deepstack is None else \
            visual.deepstack.to(self.device, self.dtype)  # (K, N, D)
        return PrefillInputs(torch.cat(parts)[None], prefix.numel() + memory.shape[0],
                             visual.count, deepstack)

    def readout_for(self, inputs: PrefillInputs) -> ro.Readout:
        """A read-out of the clip's keys of ``inputs`` at this model's read-out layers."""
        return ro.Readout(self.readout_layers, inputs.key_start, inputs.num_keys, self.device)

    # ---- decoding ----------------------------------------------------------------------
    def clock(self) -> float:
        return clock(self.device)

    def prefill_kwargs(self, inputs: PrefillInputs) -> dict:
        """Extra language-model inputs of ``inputs``' prefill (Qwen3-VL: DeepStack); none by
        default."""
        return {}

    def prefill(self, inputs: PrefillInputs, cache, readout: ro.Readout | None = None):
        """Run the prompt into ``cache``, reading out into ``readout`` if given.

        :returns: ``(V,)`` next-token logits.
        """
        hidden = self.language_model(inputs_embeds=inputs.embeds, past_key_values=cache,
                                     use_cache=True, readout=readout,
                                     **self.prefill_kwargs(inputs)).last_hidden_state
        return self.model.lm_head(hidden[:, -1])[0]

    def decode_step(self, token: torch.Tensor, cache, readout: ro.Readout | None = None):
        """Feed one token id ``(1, 1)``; :returns: ``(V,)`` next-token logits."""
        hidden = self.language_model(inputs_embeds=self.embed_tokens(token), past_key_values=cache,
                                     use_cache=True, readout=readout).last_hidden_state
        return self.model.lm_head(hidden[:, -1])[0]

    def greedy(self, inputs: PrefillInputs, max_new_tokens: int, timings: dict,
               readout: ro.Readout | None = None, answering: bool = False,
               step=None) -> list[int]:
        """Greedy decoding: prefill, then one token per step; the last token is never fed.

        :param readout: where the caption's attention to the clip is summed, or None.
        :param answering: an answer (the answer decoder serves it), not a caption.
        :param step: ``step(count, ids)`` after each token (:func:`stream_step`), or None.
        """
        if self.engine is not None:
            return self.engine.greedy(self, inputs, max_new_tokens, timings, readout, step)
        ids = fast_hook.maybe_greedy(self, inputs, max_new_tokens, timings, readout, answering,
                                     step)
        if ids is not None:  # the CUDA fast path ran
            return ids
        cache = DynamicCache(config=self.model.config.text_config)
        start = self.clock()
        logits = self.prefill(inputs, cache, readout)
        token = logits.argmax(-1)
        ids = [int(token)]
        timings["prefill"] = self.clock() - start
        start = time.perf_counter()
        while len(ids) < max_new_tokens and ids[-1] not in self.eos_ids:
            if step is not None:
                step(len(ids), lambda: ids)
            token = self.decode_step(token.view(1, 1), cache, readout).argmax(-1)
            ids.append(int(token))
        timings["decode"] = self.clock() - start
        return ids

    def caption(self, memory, visual, prompt, max_new_tokens, readout):
        if max_new_tokens < 1:
            raise ModelError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        with model_errors("captioning"), torch.inference_mode():
            inputs = self.build_inputs(memory, visual, prompt)
            session = self.readout_for(inputs) if readout else None
            timings: dict = {}
            ids = self.greedy(inputs, max_new_tokens, timings, session)
            scores = session.scores() if session is not None else None
        return CaptionOutput(self._decode(ids), ids, scores, timings)

    def caption_many(self, items, prompt, max_new_tokens, readout) -> list[CaptionOutput]:
        """:meth:`caption` of several ``(memory, visual)`` clips: one batched decode on the fast
        path (cameras captioned together), else one after the other; same outputs."""
        if max_new_tokens < 1:
            raise ModelError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if len(items) > 1 and self.engine is None:
            with model_errors("captioning"), torch.inference_mode():
                outputs = fast_hook.caption_many(self, items, prompt, max_new_tokens, readout)
            if outputs is not None:
                return outputs
        return [self.caption(m, v, prompt, max_new_tokens, readout) for m, v in items]

    def prepare(self, cameras: int) -> float:
        if self.engine is not None:
            return 0.0
        with model_errors(f"building {self.name}'s decoders"), torch.inference_mode():
            return fast_hook.prepare(self, cameras)

    def generate(self, prompt: str, max_new_tokens: int, stream=None) -> str:
        if max_new_tokens < 1:
            raise ModelError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        ids = torch.tensor(self.prompt_ids(prompt), device=self.device)
        step = stream_step(stream, self._decode) if stream is not None else None
        with model_errors("answering"), torch.inference_mode(), \
                self.fast.gate.answering():  # captions on this model step aside meanwhile
            inputs = PrefillInputs(self.embed_tokens(ids)[None])
            out = self.greedy(inputs, max_new_tokens, {}, answering=True, step=step)
        if stream is not None and stream.on_text is not None:
            stream.on_text(self._decode(out))  # the whole answer, whatever ``every`` left out
        return self._decode(out)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        table = self.embed_tokens.weight
        rows = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for i, text in enumerate(texts):
                ids = self._encode(text)
                if ids:
                    index = torch.tensor(ids, device=table.device)
                    rows[i] = table[index].float().mean(0).cpu().numpy()
        return rows

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))
