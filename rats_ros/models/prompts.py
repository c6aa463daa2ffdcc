"""Chat templates and prompt layout: how a family's own processor would write the prompt.

:class:`ChatPrompts` is the part of :class:`~rats_ros.models.hf.HFVideoBackend` that knows the
tokenizer and the chat template: which template applies (the processor's before the tokenizer's,
as ``AutoProcessor`` finds it), a probe rendering at load, and the prompt split at the video
token where the memory and the clip go.
"""
from __future__ import annotations

import json
from pathlib import Path

import jinja2
import torch

from rats_ros.errors import ModelError
from rats_ros.models import tiny

PROBE_PROMPT = "Describe what's happening in this video."
# What rendering a Jinja chat template raises: TemplateError (HF templates' raise_exception
# included), and Python errors of the template's own expressions (e.g. str + list).
_TEMPLATE_ERRORS = (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError,
                    IndexError)
_PROCESSOR_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "processor_config.json")


def processor_template(directory: Path) -> tuple[str, str] | None:
    """The processor's chat template of a checkpoint directory, in ``AutoProcessor``'s order.

    :returns: ``(template, file)`` or None when the checkpoint has no processor template.
    :raises ModelError: when such a file exists but cannot be read.
    """
    for name in _PROCESSOR_TEMPLATE_FILES:
        path = Path(directory) / name
        if not path.is_file():
            continue
        try:
            text = path.read_text()
            template = text if name.endswith(".jinja") else json.loads(text).get("chat_template")
        except (OSError, ValueError, AttributeError) as exc:
            raise ModelError(f"{path} cannot be read ({exc}); restore it from the checkpoint's "
                             "repository") from exc
        if isinstance(template, str) and template.strip():
            return template, str(path)
    return None


class ChatPrompts:
    """Mixin of the HF backends; needs ``directory``, ``tokenizer``, ``_tokenizer_lock``,
    ``model``, ``embed_tokens``, ``device``, ``chat_template``, ``template_source`` and
    ``_layouts`` (set by :class:`~rats_ros.models.hf.HFVideoBackend`)."""

    #: the video token of the family's tokenizer (what config.json's video token id must be)
    video_token = ""

    def _encode(self, text: str) -> list[int]:
        with self._tokenizer_lock:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _decode(self, ids: list[int]) -> str:
        with self._tokenizer_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _render(self, user_text: str, video: bool = False) -> str:
        """:raises ModelError: when the chat template cannot render the message."""
        content = [{"type": "video"}] if video else []
        content.append({"type": "text", "text": user_text})
        messages = [{"role": "user", "content": content}]
        try:
            with self._tokenizer_lock:
                return self.tokenizer.apply_chat_template(
                    messages, chat_template=self.chat_template, tokenize=False,
                    add_generation_prompt=True)
        except _TEMPLATE_ERRORS as exc:
            raise ModelError(
                f"the chat template from {self.template_source} cannot render a user message "
                f"with {'a video and ' if video else ''}text ({type(exc).__name__}: {exc}); "
                "pass a checkpoint whose processor template supports video content (e.g. its "
                "chat_template.json)") from exc

    #: what a chat template writes for a video item, for checkpoints that ship no template
    default_video_markup = ""

    def _chat_template(self) -> tuple[str, str]:
        """The chat template as the family's ``AutoProcessor`` finds it: the processor's
        (``chat_template.jinja``, ``chat_template.json``, ``processor_config.json``) before the
        tokenizer's, which for llava-hf checkpoints is the LLM's text-only template.

        :returns: ``(template, where it came from)``.
        """
        found = processor_template(self.directory)
        if found is not None:
            return found
        if self.tokenizer.chat_template:
            return self.tokenizer.chat_template, str(self.directory / "tokenizer_config.json")
        return tiny.chat_template(self.default_video_markup), "the built-in Qwen-style template"

    def _check_prompt(self) -> None:
        """Render a probe prompt once at load, so a checkpoint that cannot caption is refused
        with the file to fix instead of failing on the first clip.

        :raises ModelError: no video token in the config or tokenizer, an id outside the
            vocabulary, or a template that cannot render a video message.
        """
        video_id = getattr(self.model.config, "video_token_id", None)
        rows = self.embed_tokens.num_embeddings
        if not isinstance(video_id, int) or not 0 <= video_id < rows:
            raise ModelError(f"{self.directory / 'config.json'} names video token id {video_id!r}"
                             f", outside the model's {rows} embedding rows; the checkpoint's "
                             "config.json and weights do not belong together")
        token = self.tokenizer.convert_ids_to_tokens(video_id)
        if token is None or token != self.video_token:
            raise ModelError(
                f"the tokenizer in {self.directory} has {token!r} at id {video_id} where "
                f"config.json expects the video token {self.video_token!r}: this checkpoint "
                "revision predates video support; download the repository's current revision "
                "(its tokenizer files add the video token)")
        self.prompt_layout(PROBE_PROMPT)

    def prompt_layout(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Chat template applied to a user message of a video and ``prompt``, split at the
        model's video token: the memory and the clip go where the video's tokens would.

        :returns: prefix and suffix token ids ``(P,)``, ``(S,)``.
        :raises ModelError: when the template does not write the video token exactly once.
        """
        if prompt not in self._layouts:
            if len(self._layouts) >= 16:  # bounded: prompts rarely change
                self._layouts.clear()
            parts = self._render(prompt, video=True).split(self.video_token)
            if len(parts) != 2:
                raise ModelError(f"the chat template from {self.template_source} writes the "
                                 f"video token {self.video_token!r} {len(parts) - 1} times for "
                                 "one video, expected once; pass a checkpoint whose processor "
                                 "template supports video content")
            ids = [torch.tensor(self._encode(p), dtype=torch.long, device=self.device)
                   for p in parts]
            self._layouts[prompt] = (ids[0], ids[1])
        return self._layouts[prompt]

    def prompt_ids(self, user_text: str) -> list[int]:
        """Token ids of a text-only user message with the chat template and the assistant turn
        opened: what :meth:`generate` feeds (and what training on answers learns from)."""
        return self._encode(self._render(user_text))
