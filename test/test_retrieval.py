"""Retrieval with the real MiniLM embedder over a real SQLite store: relevance, the causal window,
the token budget, MMR against near-duplicates, and the incremental index under retention."""
import itertools
import random

import numpy as np
import pytest
from helpers import make_caption as Caption

from rats_ros.errors import QuestionError
from rats_ros.recall.embedders import SentenceEmbedder
from rats_ros.recall.retrieval import RetrievalIndex, format_caption, mmr_picks, select_under_budget
from rats_ros.recall.store import CaptionStore, RetentionPolicy
from rats_ros.records import CaptionRecord

SEC = 1_000_000_000
FRIDGE = "A person opens the fridge and takes out a bottle of milk."


def words(text: str) -> int:
    """Token counter for exact budget arithmetic (QA tests use the model's tokenizer)."""
    return len(text.split())




def timeline(n: int, seed: int = 0) -> list[str]:
    """n varied everyday captions (no fridge in them)."""
    who = ["A man", "A woman", "A child", "An old man", "A robot", "A dog", "Two people"]
    what = ["walks along the hallway", "sits on the sofa reading a book", "waters the plants",
            "folds laundry on the bed", "types on a laptop at the desk", "sweeps the floor",
            "looks out of the window", "carries a box up the stairs", "plays with a red ball",
            "washes dishes in the sink", "ties shoe laces by the door", "talks on the phone"]
    where = ["in the living room", "near the front door", "in a bright office", "in the garden",
             "on the balcony", "in a narrow corridor"]
    combos = list(itertools.product(who, what, where))
    random.Random(seed).shuffle(combos)
    return [f"{a} {b} {c}." for a, b, c in itertools.islice(itertools.cycle(combos), n)]


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder.default()


def fill(store, embedder, texts, first=0, with_embeddings=True):
    emb = embedder.embed(texts) if with_embeddings else [None] * len(texts)
    for k, (text, e) in enumerate(zip(texts, emb, strict=True)):
        i = first + k
        store.add(Caption(i, 32 * i * SEC, (32 * i + 30) * SEC, text), e,
                  embedder.name if with_embeddings else "", model="test")


def ask(index, embedder, question, **kw):
    return index.select(embedder.embed([question])[0], **kw)


def test_relevant_caption_found_among_hundreds(tmp_path, embedder):
    texts = timeline(300)
    texts[137] = FRIDGE
    with CaptionStore(tmp_path / "c.db") as store:
        fill(store, embedder, texts)
        index = RetrievalIndex(store, embedder, words)
        sel = ask(index, embedder, "When was the fridge opened?", budget_tokens=60)
        assert sel.used_mmr and sel.candidates == 300
        assert FRIDGE in [c.text for c in sel.captions]
        assert 0 < sel.tokens <= 60
        assert sel.tokens == sum(words(format_caption(c, 0)) + 1
                                 for c in sel.captions)
        starts = [c.start_ns for c in sel.captions]
        assert starts == sorted(starts)  # back in time order
        # The most relevant caption is MMR's first pick.
        q = embedder.embed(["When was the fridge opened?"])[0]
        _, _, _, _, emb = index.arrays()
        assert next(mmr_picks(emb, q)) == 137
        # A generous budget takes everything, in time order, without ranking.
        sel = ask(index, embedder, "When was the fridge opened?", budget_tokens=10**6)
        assert not sel.used_mmr and [c.clip_index for c in sel.captions] == list(range(300))


def test_time_window_is_exact_and_causal(tmp_path, embedder):
    with CaptionStore(tmp_path / "c.db") as store:
        index = RetrievalIndex(store, embedder, words)
        with pytest.raises(QuestionError, match="no captions stored yet"):
            ask(index, embedder, "anything?")
        fill(store, embedder, timeline(10))  # clip i spans [32 i, 32 i + 30] s

        def window(since, until):
            sel = ask(index, embedder, "what happens?", since_ns=since, until_ns=until)
            return [c.clip_index for c in sel.captions]

        assert window(64 * SEC, 126 * SEC) == [2, 3]
        assert window(64 * SEC, 126 * SEC - 1) == [2]  # clip 3 had not ended yet
        assert window(64 * SEC + 1, 126 * SEC) == [3]  # clip 2 started before since
        assert window(288 * SEC, 0) == [9]
        assert window(0, 30 * SEC) == [0]
        with pytest.raises(QuestionError, match="no captions in the window.*widen"):
            window(0, 29 * SEC)
        with pytest.raises(QuestionError, match="inverted.*swap"):
            window(100 * SEC, 50 * SEC)
        with pytest.raises(QuestionError, match=">= 0"):
            window(-1, 0)
        fill(store, embedder, ["A cat jumps onto the kitchen table."], first=10)
        assert window(320 * SEC, 0) == [10]  # the index picked up the new caption


def test_budget_and_max_captions(tmp_path, embedder):
    texts = timeline(40)
    with CaptionStore(tmp_path / "c.db") as store:
        fill(store, embedder, texts)
        index = RetrievalIndex(store, embedder, words)
        per_caption = [words(format_caption(CaptionRecord(i, 32 * i * SEC, (32 * i + 30) * SEC, t,
                                                          1, 1, 1, 0, 0.0), 0)) + 1
                       for i, t in enumerate(texts)]
        total = sum(per_caption)
        sel = ask(index, embedder, "who is in the garden?", budget_tokens=total)
        assert not sel.used_mmr and len(sel.captions) == 40 and sel.tokens == total
        sel = ask(index, embedder, "who is in the garden?", budget_tokens=total - 1)
        assert sel.used_mmr and sel.tokens <= total - 1 and len(sel.captions) < 40
        sel = ask(index, embedder, "who is in the garden?", budget_tokens=total, max_captions=5)
        assert sel.used_mmr and len(sel.captions) == 5
        assert sum(c.text.endswith("garden.") for c in sel.captions) >= 2
        with pytest.raises(QuestionError, match="longer than the context budget"):
            ask(index, embedder, "who?", budget_tokens=3)


def test_mmr_removes_near_duplicates(tmp_path, embedder):
    dupes = [f"The robot stands still in the empty corridor{p}" for p in
             (".", "!", " .", " today.", " again.", " now.", ", waiting.", " still.")] * 3
    distinct = ["The robot drives into the empty corridor and turns left.",
                "A cleaner pushes a trolley along the corridor.",
                "The robot's charging light blinks green in the corridor.",
                "Two visitors walk past the robot in the corridor."]
    texts = dupes[:12] + distinct + dupes[12:]
    with CaptionStore(tmp_path / "c.db") as store:
        fill(store, embedder, texts)
        index = RetrievalIndex(store, embedder, words)
        q = embedder.embed(["What does the robot do in the corridor?"])[0]
        budget = 60  # room for five captions (10-12 tokens each)
        relevance_sel = index.select(q, budget_tokens=budget, mmr_lambda=1.0)
        mmr_sel = index.select(q, budget_tokens=budget, mmr_lambda=0.5)
        relevance_only, mmr = relevance_sel.captions, mmr_sel.captions
        assert mmr_sel.used_mmr and 50 < mmr_sel.tokens <= budget >= relevance_sel.tokens
        dup_count = lambda caps: sum("stands still" in c.text for c in caps)  # noqa: E731
        assert dup_count(relevance_only) >= 3  # plain top-k fills up with repeats
        assert not set(distinct) <= {c.text for c in relevance_only}
        assert dup_count(mmr) == 1 and set(distinct) <= {c.text for c in mmr}
        five = index.select(q, budget_tokens=10**6, max_captions=5).captions
        assert dup_count(five) == 1 and {c.text for c in five} - set(dupes) == set(distinct)


def reference_mmr(emb, q, lam, k):
    """Textbook MMR: full max-similarity vector, argmax each step; the first pick is the most
    relevant caption (with nothing chosen yet the diversity term is empty)."""
    rel, taken, out = emb @ q, np.zeros(len(emb), bool), []
    maxsim = np.zeros(len(emb), np.float32)
    for _ in range(k):
        score = lam * rel - (1 - lam) * maxsim if out else rel.copy()
        score[taken] = -np.inf
        j = int(np.argmax(score))
        out.append(j)
        taken[j] = True
        maxsim = np.maximum(maxsim, emb @ emb[j]) if len(out) > 1 else emb @ emb[j]
    return out


@pytest.mark.parametrize("lazy", [True, False])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_mmr_equals_textbook_mmr(lam, lazy):
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((40, 32))
    emb = (np.repeat(centers, 60, 0) + 0.5 * rng.standard_normal((2400, 32))).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    q = emb[7] + 0.3 * rng.standard_normal(32).astype(np.float32)
    q /= np.linalg.norm(q)
    picks = mmr_picks(emb, q, lam, lazy=lazy)
    assert [next(picks) for _ in range(150)] == reference_mmr(emb, q, lam, 150)
    assert sorted(mmr_picks(emb[:50], q, lam, lazy=lazy)) == list(range(50))  # a full ranking
    chosen, used = select_under_budget(emb, np.full(2400, 10), q, budget=95, lam=lam)
    assert used and chosen.tolist() == reference_mmr(emb, q, lam, 9)


def test_index_is_incremental_lazy_and_follows_retention(tmp_path, embedder):
    policy = RetentionPolicy(max_rows=20, interval_s=3600)
    with CaptionStore(tmp_path / "c.db", retention=policy) as store:
        fill(store, embedder, timeline(30), with_embeddings=False)  # embedded lazily
        index = RetrievalIndex(store, embedder, words)
        assert index.refresh() == 30 and index.refresh() == 0 and len(index) == 30
        assert {r.embedder for r in store.rows_after(0)} == {embedder.name}  # written back
        stored = np.stack([r.embedding for r in store.rows_after(0)])
        np.testing.assert_allclose(stored, embedder.embed(timeline(30)), atol=1e-5)
        assert store.prune() == 10
        fill(store, embedder, [FRIDGE], first=30)
        sel = ask(index, embedder, "when was the fridge opened?", budget_tokens=10**6)
        assert len(index) == 21
        assert [c.clip_index for c in sel.captions] == list(range(10, 31))
        assert sel.captions[-1].text == FRIDGE
        # Prompt times stay relative to the stream's first caption ever, not the oldest kept.
        assert index.origin_ns == 0
