"""The training model and its two kinds of step, interleaved by :mod:`.train`:

- **captioning**, on streams of fresh worlds processed clip by clip in lockstep: each clip is
  captioned (teacher forcing) with the stream's memory in front, laid out exactly as the backend
  lays out a prompt; the read-out of that same forward (the last prompt row and every caption row
  but the last, over heads and the read-out layers) picks the clip's top 1/16 tokens, which join
  the memory (16 clips, FIFO). The memories are made by the method itself, so at inference
  the model has learned to caption from what attention-based selection keeps. Auxiliary probes
  (not saved) teach what each visual token shows and how its object moves.
- **answering**, on the answerer's prompts (:func:`.model.qa_example`) over true captions, the
  prompt's own captions learned too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rats_ros.errors import ConfigError
from rats_ros.models import load_backend
from rats_ros.stream.captioner import DEFAULT_PROMPT
from rats_ros.stream.selection import keep_count
from rats_ros.world import scene
from rats_ros.world.model import build_untrained
from rats_ros.world.render import MOTIONS

MOTION_LAYER = 3  # the LM layer whose visual states must tell how objects move (of 6)


@dataclass
class TrainConfig:
    """Training settings (defaults: the committed checkpoint's).

    :param steps: optimizer steps in all.
    :param streams: worlds captioned side by side in a captioning step.
    :param stream_clips: clips of each of those worlds.
    :param qa_batch: questions in an answering step.
    :param qa_every: every ``qa_every``-th step is an answering step.
    :param lr: peak learning rate (warm-up, then cosine to a tenth).
    :param warmup: warm-up steps.
    :param memory_clips: memory length in clips (the node's default).
    :param seed: seed of the worlds, the questions and the initial weights.
    :param context_weight: weight of the prompt's own language-model loss in answering steps.
    :param max_seconds: a guard: stop and save after this long (``training.json`` then says
        how many steps ran; 0 = none).
    """

    steps: int = 3400
    streams: int = 48
    stream_clips: int = 24
    qa_batch: int = 24
    qa_every: int = 2
    lr: float = 2e-3
    warmup: int = 200
    memory_clips: int = 16
    seed: int = 0
    context_weight: float = 1.0
    max_seconds: float = 0.0

    def __post_init__(self):
        for name in ("steps", "streams", "stream_clips", "qa_batch", "qa_every", "memory_clips"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not 0 < self.lr < 1 or min(self.warmup, self.seed, self.max_seconds,
                                      self.context_weight) < 0:
            raise ConfigError("need 0 < lr < 1 and warmup, seed, context_weight and "
                              "max_seconds >= 0")


class Trainer:
    """The model, its optimizer and the two kinds of step.

    :param directory: where the untrained checkpoint is written and loaded from.
    """

    def __init__(self, config: TrainConfig, directory: Path, device: str):
        self.config, self.device = config, torch.device(device)
        build_untrained(directory, config.seed)
        self.backend = load_backend(str(directory), device, "float32")
        model = self.backend.model
        model.set_attn_implementation({"text_config": "eager", "vision_config": "sdpa"})
        model.train().requires_grad_(True)
        # Auxiliary heads (not saved): what each visual token shows, so the vision tower learns
        # colours and shapes from the first steps instead of the LM settling on the text prior;
        # and how its object moves, read from the LM's visual states (they see earlier frames).
        hidden = self.backend.hidden_size
        self.probes = torch.nn.ModuleList([torch.nn.Linear(hidden, 1 + len(scene.COLOURS)),
                                           torch.nn.Linear(hidden, 1 + len(scene.SHAPES)),
                                           torch.nn.Linear(hidden, 1 + len(MOTIONS))])
        self.probes.to(self.device)
        self.optimizer = torch.optim.AdamW([*model.parameters(), *self.probes.parameters()],
                                           lr=config.lr, betas=(0.9, 0.95), weight_decay=0.01)
        self.prefix, self.suffix = self.backend.prompt_layout(DEFAULT_PROMPT)
        self.eos = self.backend.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                       enabled=self.device.type == "cuda")

    # ---- captioning ------------------------------------------------------------------------
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, S, S, 3)`` uint8 -> ``(B, N, D)``: the backend's own encoding, batched."""
        return self.backend.encode_frames(frames.permute(0, 1, 4, 2, 3).float())

    def caption_step(self, frames, captions: list[str], memory: torch.Tensor,
                     token_classes: torch.Tensor | None = None):
        """One teacher-forced step on a clip of every stream.

        :param memory: ``(B, M, D)`` kept tokens of earlier clips.
        :param token_classes: ``(3, B, N)`` from :func:`token_labels` (auxiliary loss) or None.
        :returns: the loss, the ``(B, k, D)`` tokens the read-out keeps and the ``(B, N)``
            read-out scores.
        """
        backend, device = self.backend, self.device
        targets = [backend._encode(c) + [self.eos] for c in captions]
        lengths = torch.tensor([len(t) for t in targets], device=device)
        width = int(lengths.max())
        ids = torch.tensor([t + [self.eos] * (width - len(t)) for t in targets], device=device)
        with self.autocast:
            visual = self.encode(frames)  # (B, N, D)
            b, n, d = visual.shape
            embed = backend.embed_tokens
            parts = [embed(self.prefix).expand(b, -1, -1), memory.to(visual.dtype), visual,
                     backend._clip_trailer()[None].expand(b, -1, -1),
                     embed(self.suffix).expand(b, -1, -1), embed(ids)]
            embeds = torch.cat(parts, dim=1)  # (B, L, D)
            prompt = embeds.shape[1] - width
            mask = torch.ones(b, embeds.shape[1], device=device, dtype=torch.long)
            mask[:, prompt:] = (torch.arange(width, device=device) < lengths[:, None]).long()
            out = backend.language_model(inputs_embeds=embeds, attention_mask=mask,
                                         output_attentions=True,
                                         output_hidden_states=token_classes is not None)
            logits = backend.model.lm_head(out.last_hidden_state[:, prompt - 1:-1])  # (B, W, V)
            labels = ids.masked_fill(mask[:, prompt:] == 0, -100)
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                                   ignore_index=-100)
        self.last_caption_loss = loss.item()
        key_start = self.prefix.numel() + memory.shape[1]
        if token_classes is not None:
            mixed = out.hidden_states[MOTION_LAYER][:, key_start:key_start + n]  # (B, N, D)
            loss = loss + self.auxiliary(visual, mixed, token_classes)
        scores = self.readout(out.attentions, prompt, lengths, key_start, n)  # (B, N)
        k = keep_count(n, 1 / 16)
        kept = scores.topk(k, dim=1).indices.sort(dim=1).values  # temporal order
        return loss, visual.detach().gather(1, kept[..., None].expand(-1, -1, d)), scores

    def auxiliary(self, visual, mixed, classes) -> torch.Tensor:
        """The probes' loss: colour and shape from the tower's ``(B, N, D)`` tokens, motion from
        the LM's ``(B, N, D)`` states of the clip's later half (earlier frames in sight)."""
        half = visual.shape[1] // 2
        terms = ((self.probes[0], visual, classes[0]), (self.probes[1], visual, classes[1]),
                 (self.probes[2], mixed[:, half:], classes[2][:, half:]))
        return sum(F.cross_entropy(probe(x.float()).flatten(0, 1), target.flatten())
                   for probe, x, target in terms)

    @torch.no_grad()
    def readout(self, attentions, prompt: int, lengths, key_start: int, n: int) -> torch.Tensor:
        """The captioner's read-out from a teacher-forced forward: mean attention of the last
        prompt row and every caption row but the last, over heads and read-out layers.

        :returns: ``(B, N)`` scores.
        """
        width = attentions[0].shape[2] - prompt
        rows = (torch.arange(width + 1, device=self.device) < lengths[:, None]).float()  # (B, W+1)
        total = 0.0
        for layer in self.backend.readout_layers:
            probs = attentions[layer][:, :, prompt - 1:, key_start:key_start + n].float()
            total = total + torch.einsum("bhwn,bw->bn", probs, rows[:, :probs.shape[2]])
        heads, layers = attentions[0].shape[1], len(self.backend.readout_layers)
        return total / (rows.sum(1, keepdim=True) * heads * layers)

    # ---- answering -------------------------------------------------------------------------
    def qa_step(self, examples: list[tuple[str, str]]):
        """One step on ``(user message, answer)`` pairs rendered with the chat template: the
        answer's loss plus ``context_weight`` times the loss of the prompt itself (predicting
        each caption line from the earlier ones teaches looking back, as answering must)."""
        backend, device = self.backend, self.device
        rows, starts = [], []
        for message, answer in examples:
            prompt = backend.prompt_ids(message)
            rows.append(prompt + backend._encode(answer) + [self.eos])
            starts.append(len(prompt))
        width = max(map(len, rows))
        ids = torch.tensor([r + [self.eos] * (width - len(r)) for r in rows], device=device)
        position = torch.arange(width, device=device)
        lengths = torch.tensor(list(map(len, rows)), device=device)
        mask = (position < lengths[:, None]).long()
        answering = position >= torch.tensor(starts, device=device)[:, None]
        labels = [ids.masked_fill(~answering | (mask == 0), -100)[:, 1:].flatten(),
                  ids.masked_fill(answering | (mask == 0), -100)[:, 1:].flatten()]
        self._text_attention("sdpa")  # no read-out here, and eager is slow at 1k+ tokens
        with self.autocast:
            out = backend.language_model(input_ids=ids, attention_mask=mask)
            logits = backend.model.lm_head(out.last_hidden_state[:, :-1]).float().flatten(0, 1)
            answer, context = (F.cross_entropy(logits, rows, ignore_index=-100)
                               for rows in labels)
        self._text_attention("eager")
        self.last_qa_loss = answer.item()
        return answer + self.config.context_weight * context

    def _text_attention(self, kind: str) -> None:
        self.backend.model.set_attn_implementation({"text_config": kind,
                                                    "vision_config": "sdpa"})

    def update(self, loss, step: int) -> None:
        cfg = self.config
        scale = min(1.0, (step + 1) / max(1, cfg.warmup))
        progress = min(1.0, step / cfg.steps)
        lr = cfg.lr * scale * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.backend.model.parameters(), 1.0)
        self.optimizer.step()

    def save(self, directory: Path) -> None:
        """Write the trained weights in fp16 with the tokenizer and configs."""
        model = self.backend.model.eval().requires_grad_(False)
        model.set_attn_implementation({"text_config": "sdpa", "vision_config": "sdpa"})
        model.to(torch.float16).save_pretrained(directory)
        model.to(torch.float32)
        self.backend.tokenizer.save_pretrained(directory)
        (Path(directory) / "preprocessor_config.json").write_text(
            (self.backend.directory / "preprocessor_config.json").read_text())
