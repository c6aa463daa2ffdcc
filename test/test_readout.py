"""The attention read-out against an eager ``output_attentions`` reference; masks; threads."""
import threading

import numpy as np
import pytest
import torch
from transformers import (
    LlavaOnevisionForConditionalGeneration,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLForConditionalGeneration,
)

from rats_ros.models import load_backend, readout
from rats_ros.stream.selection import select

PROMPT = "Describe what's happening in this video."
EAGER_CLASS = {"tiny-random": LlavaOnevisionForConditionalGeneration,
               "tiny-random-qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
               "tiny-random-qwen3_vl": Qwen3VLForConditionalGeneration}




@pytest.fixture(scope="module", params=sorted(EAGER_CLASS))
def pair(request, model_cache):
    """The backend (read-out attention over SDPA) and an eager copy of the same checkpoint."""
    backend = load_backend(request.param)
    eager = EAGER_CLASS[request.param].from_pretrained(
        backend.directory, attn_implementation="eager").eval()
    return backend, eager


def clip(seed):
    return np.random.default_rng(seed).integers(0, 256, (16, 48, 64, 3), dtype=np.uint8)


def eager_reference(backend, eager, memory, clip_tokens, max_new_tokens):
    """Greedy decoding without a cache on the eager model, then one full forward with
    ``output_attentions``: scores averaged over the read-out layers, all heads and the rows of
    the last prompt position and every fed-back token. Offsets are found by matching rows."""
    prefix, suffix = backend.prompt_layout(PROMPT)
    visual = clip_tokens.tokens  # (N, D)
    embed = backend.embed_tokens
    trailer = [backend._clip_trailer()]
    prompt = torch.cat([embed(prefix), memory, visual, *trailer, embed(suffix)])[None]
    n = visual.shape[0]
    starts = [p for p in range(prompt.shape[1] - n + 1)
              if torch.equal(prompt[0, p:p + n], visual)]
    assert len(starts) == 1

    def deepstack(fed):  # Qwen3-VL: the clip's DeepStack features at the clip's positions
        if clip_tokens.deepstack is None:
            return {}
        mask = torch.zeros(fed.shape[:2], dtype=torch.bool)
        mask[0, starts[0]:starts[0] + n] = True
        return {"visual_pos_masks": mask, "deepstack_visual_embeds": list(clip_tokens.deepstack)}

    ids = []
    with torch.no_grad():
        while len(ids) < max_new_tokens and (not ids or ids[-1] not in backend.eos_ids):
            fed = torch.cat([prompt, embed(torch.tensor(ids, dtype=torch.long,
                                                        device=prompt.device))[None]], 1)
            hidden = eager.model.language_model(inputs_embeds=fed,
                                                **deepstack(fed)).last_hidden_state
            ids.append(int(eager.lm_head(hidden[0, -1]).argmax()))
        fed = torch.cat([prompt, embed(torch.tensor(ids[:-1], dtype=torch.long,
                                                    device=prompt.device))[None]], 1)
        out = eager.model.language_model(inputs_embeds=fed, output_attentions=True,
                                         **deepstack(fed))
    rows = torch.arange(prompt.shape[1] - 1, fed.shape[1], device=prompt.device)
    attn = torch.stack([out.attentions[layer][0][:, rows, starts[0]:starts[0] + n]
                        for layer in backend.readout_layers])  # (layers, H, rows, N)
    return ids, attn.mean(dim=(0, 1, 2)), starts[0]


@pytest.mark.parametrize("memory_tokens", [0, 37])
def test_readout_matches_eager_reference(pair, memory_tokens):
    backend, eager = pair
    with torch.no_grad():
        visual = backend.encode_clip(clip(1))
        memory = backend.encode_clip(clip(2)).tokens[:memory_tokens]  # real projector outputs
    out = backend.caption(memory, visual, PROMPT, 12, readout=True)
    ids, reference, start = eager_reference(backend, eager, memory, visual, 12)
    assert out.token_ids == ids
    assert start == backend.prompt_layout(PROMPT)[0].numel() + memory.shape[0]
    assert torch.allclose(out.scores, reference, rtol=1e-5, atol=1e-7)
    k = max(1, round(visual.count / 16))
    ranked = reference.sort(descending=True).values
    error = (out.scores - reference).abs().max()
    assert ranked[k - 1] - ranked[k] > 100 * error  # top-k is not decided by rounding noise
    assert torch.equal(select(out.scores, k), select(reference, k))
    # one position off (the reference code's slip once memory is present) is a different answer
    assert not torch.allclose(out.scores, reference.roll(1), rtol=1e-3)


def test_readout_does_not_change_outputs(pair):
    backend, _ = pair
    visual, memory = backend.encode_clip(clip(3)), backend.encode_clip(clip(4)).tokens[:20]
    with_readout = backend.caption(memory, visual, PROMPT, 10, readout=True)
    without = backend.caption(memory, visual, PROMPT, 10, readout=False)
    assert with_readout.token_ids == without.token_ids and without.scores is None
    assert set(with_readout.timings) == {"prefill", "decode"}
    again = backend.caption(memory, visual, PROMPT, 10, readout=True)
    assert torch.equal(again.scores, with_readout.scores)  # each call sums into its own read-out


def test_caption_and_generate_concurrently_equal_sequential(pair):
    backend, _ = pair
    visual, memory = backend.encode_clip(clip(5)), backend.encode_clip(clip(6)).tokens[:30]
    question = "Where did the person put the keys?"
    expected_caption = backend.caption(memory, visual, PROMPT, 12, readout=True)
    expected_answer = backend.generate(question, 24)
    results, errors = {"captions": [], "answers": []}, []
    barrier = threading.Barrier(2)

    def run(kind):
        try:
            barrier.wait()
            for _ in range(4):
                if kind == "captions":
                    results[kind].append(backend.caption(memory, visual, PROMPT, 12, True))
                else:
                    results[kind].append(backend.generate(question, 24))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(kind,)) for kind in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for got in results["captions"]:
        assert got.token_ids == expected_caption.token_ids
        assert torch.equal(got.scores, expected_caption.scores)
    assert results["answers"] == [expected_answer] * 4


def test_default_readout_layers_rule():
    assert readout.default_readout_layers(28) == [4, 8, 13, 19]
    assert readout.default_readout_layers(24) == [3, 7, 11, 16]
    assert readout.default_readout_layers(8) == [0, 2, 3, 5]
    assert readout.default_readout_layers(2) == [0]
    assert readout.default_readout_layers(28, 2) == [4, 19]
    assert readout.default_readout_layers(1, 4) == [0]
    with pytest.raises(ValueError):
        readout.default_readout_layers(0)


def full_softmax_last_row(query, key, mask, scale):
    heads, kv_heads = query.shape[1], key.shape[1]
    key = key.repeat_interleave(heads // kv_heads, dim=1)
    logits = query @ key.transpose(-1, -2) * scale  # (1, H, q, kv)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool \
            else logits + mask
    return torch.softmax(logits, -1)[0, :, -1]


def test_last_row_probabilities_masks_and_gqa():
    gen = torch.Generator().manual_seed(0)
    query, key = torch.randn(1, 4, 5, 8, generator=gen), torch.randn(1, 2, 9, 8, generator=gen)
    keep = torch.rand(1, 1, 5, 9, generator=gen) > 0.3
    keep[..., 0] = True
    additive = torch.zeros(1, 1, 5, 9).masked_fill(~keep, torch.finfo(torch.float32).min)
    for mask in (keep, additive):
        got = readout.last_row_probabilities(query, key, mask, 0.3)
        assert torch.allclose(got, full_softmax_last_row(query, key, mask, 0.3), atol=1e-7)
    # no mask, several rows, longer cache (static-cache prefill): causal, upper-left aligned
    got = readout.last_row_probabilities(query, key, None, None)
    causal = torch.ones(5, 9, dtype=torch.bool).tril()[None, None]
    assert torch.allclose(got, full_softmax_last_row(query, key, causal, 8 ** -0.5), atol=1e-7)
    assert got[:, 5:].eq(0).all()
    # a single decoding row without a mask sees every key
    got = readout.last_row_probabilities(query[:, :, -1:], key, None, None)
    assert torch.allclose(got, full_softmax_last_row(query[:, :, -1:], key, None, 8 ** -0.5))


def test_readout_only_reads_its_layers_and_keys():
    session = readout.Readout([1], key_start=2, num_keys=3)

    class Layer:
        layer_idx = 1

    query, key = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 6, 4)
    session.accumulate(Layer(), query, key, None, None)
    probs = readout.last_row_probabilities(query, key, None, None)
    assert torch.allclose(session.scores(), probs[:, 2:5].mean(0))
    with pytest.raises(RuntimeError, match="beyond"):
        readout.Readout([1], key_start=5, num_keys=3).accumulate(Layer(), query, key, None, None)
    with pytest.raises(RuntimeError, match="no read-out row"):
        readout.Readout([1], 0, 3).scores()
