"""QuestionAnswerer end to end: real SQLite store, real MiniLM embedder, the tiny random-weight
LLaVA-OneVision answering (its answers are meaningless; the tests check the plumbing: which
captions it was given, in which order, under which budget, and the errors)."""
import threading

import numpy as np
import pytest
from helpers import make_caption as Caption

from rats_ros.errors import ConfigError, QuestionError, StoreError
from rats_ros.models import load_backend
from rats_ros.recall.embedders import ModelEmbedder, SentenceEmbedder, make_embedder
from rats_ros.recall.qa import QAConfig, QuestionAnswerer
from rats_ros.recall.retrieval import format_caption
from rats_ros.recall.store import CaptionStore

SEC = 1_000_000_000
FRIDGE = "A person opens the fridge and takes out a bottle of milk."
EVENTS = ["A man waters the plants on the balcony.", "A woman folds laundry on the bed.",
          "A dog plays with a red ball in the garden.", "A child reads a book on the sofa.",
          "Two people talk near the front door.", "A robot sweeps the corridor floor.",
          "An old man washes dishes in the sink.", "A woman types on a laptop at the desk."]




@pytest.fixture(scope="module")
def backend(model_cache):
    return load_backend("tiny-random")


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder.default()


def fill(store, embedder, texts, first=0):
    for k, (text, emb) in enumerate(zip(texts, embedder.embed(texts), strict=True)):
        i = first + k
        store.add(Caption(i, 32 * i * SEC, (32 * i + 30) * SEC, text), emb, embedder.name,
                  model="tiny-random")


def timeline(n: int) -> list[str]:
    texts = [f"{EVENTS[i % len(EVENTS)][:-1]}, scene {i}." for i in range(n)]
    texts[n // 2] = FRIDGE
    return texts


def test_answer_uses_relevant_evidence_under_the_budget(tmp_path, backend, embedder):
    config = QAConfig(context_tokens=400, max_answer_tokens=8)
    with CaptionStore(tmp_path / "c.db") as store:
        fill(store, embedder, timeline(120))
        qa = QuestionAnswerer(store, embedder, backend, config)
        question = "When was the fridge opened?"
        answer = qa.ask(question)
        assert FRIDGE in [c.text for c in answer.evidence]
        assert answer.used_mmr and answer.candidates == 120
        lines = [format_caption(c, 0) for c in answer.evidence]
        assert answer.context_tokens == sum(backend.count_tokens(x) + 1 for x in lines) <= 400
        assert [c.start_ns for c in answer.evidence] == sorted(c.start_ns for c in answer.evidence)
        prompt = qa.build_prompt(question, answer.evidence)
        assert prompt.index(lines[0]) < prompt.index(lines[-1]) < prompt.index(question)
        assert "[1920.0s-1950.0s] " + FRIDGE in prompt  # clip 60, seconds from stream start
        # Greedy and deterministic: the answer is the model's answer to exactly that prompt.
        assert answer.text == backend.generate(prompt, 8).strip()
        assert answer.processing_time >= answer.timings["generation"] > 0
        # A window before the fridge clip cannot see it (causal), and max_captions caps.
        early = qa.ask(question, until_ns=60 * 32 * SEC, max_captions=3)
        assert len(early.evidence) == 3 and FRIDGE not in [c.text for c in early.evidence]
        assert all(c.end_ns <= 60 * 32 * SEC for c in early.evidence)


def test_small_store_gives_every_caption_in_time_order(tmp_path, backend, embedder):
    with CaptionStore(tmp_path / "c.db") as store:
        fill(store, embedder, EVENTS)
        qa = QuestionAnswerer(store, embedder, backend, QAConfig(context_tokens=4000,
                                                                 max_answer_tokens=4))
        answer = qa.ask("What happened in the garden?", since_ns=64 * SEC)
        assert not answer.used_mmr
        assert [c.text for c in answer.evidence] == EVENTS[2:]


def test_bad_questions_and_stores_say_what_to_do(tmp_path, backend, embedder):
    with pytest.raises(ConfigError):
        QAConfig(mmr_lambda=1.5)
    with pytest.raises(ConfigError):
        QAConfig(context_tokens=0)
    with pytest.raises(ConfigError, match="needs the loaded backend"):
        make_embedder("model")
    with CaptionStore(tmp_path / "c.db") as store:
        qa = QuestionAnswerer(store, embedder, backend, QAConfig(max_answer_tokens=4))
        with pytest.raises(QuestionError, match="no captions stored yet.*ask again"):
            qa.ask("What happened?")
        fill(store, embedder, EVENTS[:3])
        too_long = ("x" * 4001, "4001 characters.*shorten")
        for bad, match in [("", "empty"), ("   \n", "empty"), too_long]:
            with pytest.raises(QuestionError, match=match):
                qa.ask(bad)
        assert qa.ask("y" * 4000).evidence  # the limit itself is allowed
        with pytest.raises(QuestionError, match="inverted"):
            qa.ask("What happened?", since_ns=90 * SEC, until_ns=10 * SEC)
        with pytest.raises(QuestionError, match="no captions in the window"):
            qa.ask("What happened?", since_ns=1000 * SEC)
        with pytest.raises(QuestionError, match="max_captions"):
            qa.ask("What happened?", max_captions=-1)
    with pytest.raises(StoreError, match="no caption store at"):
        CaptionStore(tmp_path / "missing.db", create=False)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 500)
    with pytest.raises(StoreError, match="corrupt"):
        CaptionStore(corrupt, create=False)


def test_twenty_concurrent_questions_while_captions_are_written(tmp_path, backend, embedder):
    with CaptionStore(tmp_path / "c.db", synchronous="NORMAL") as store:
        fill(store, embedder, timeline(40))
        qa = QuestionAnswerer(store, embedder, backend,
                              QAConfig(context_tokens=300, max_answer_tokens=6))
        answers, errors = [], []
        writing = threading.Event()

        def write():
            writing.set()
            fill(store, embedder, [f"A bird lands on the window sill, moment {i}."
                                   for i in range(60)], first=40)

        def ask(k):
            writing.wait()
            try:
                answers.append(qa.ask(f"What happened near the {EVENTS[k % 8].split()[-1]}"))
            except (QuestionError, StoreError) as err:  # collected: the test fails on any
                errors.append(err)

        threads = [threading.Thread(target=write)] + [
            threading.Thread(target=ask, args=(k,)) for k in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == [] and len(answers) == 20
        stored = {c.id: c.text for c in store.query()}
        assert store.count() == 100
        for answer in answers:
            assert isinstance(answer.text, str) and answer.evidence
            assert answer.context_tokens <= 300
            assert all(stored[c.id] == c.text for c in answer.evidence)


def test_model_embedder_answers_too(tmp_path, backend):
    embedder = make_embedder("model", backend=backend)
    assert isinstance(embedder, ModelEmbedder) and embedder.name == f"model:{backend.name}"
    rows = embedder.embed(["a red ball", "a blue cup"])
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    with CaptionStore(tmp_path / "c.db") as store:
        fill(store, embedder, timeline(30))
        qa = QuestionAnswerer(store, embedder, backend, QAConfig(context_tokens=200,
                                                                 max_answer_tokens=4))
        answer = qa.ask("When was the fridge opened?")
        assert answer.used_mmr and answer.evidence and answer.context_tokens <= 200


def test_a_where_question_gets_the_pose_that_best_supports_its_answer():
    """The target is the evidence caption with a pose closest to the answer's text (the real
    MiniLM embedder); a question that asks no place gets none, and neither does evidence
    without poses."""
    from rats_ros.recall.target import asks_for_place, best_supported

    ns = 1_000_000_000
    embedder = SentenceEmbedder.default()
    evidence = [Caption(0, 0, 8 * ns, "a red ball rolls under the kitchen table",
                        has_pose=True, pose_x=1.0, pose_frame="map"),
                Caption(1, 10 * ns, 18 * ns, "someone puts the keys on the shelf by the door",
                        has_pose=True, pose_x=7.0, pose_frame="map"),
                Caption(2, 20 * ns, 28 * ns, "the keys are on the shelf")]  # no pose
    target = best_supported("the keys are on the shelf by the door", evidence, embedder)
    assert target is not None and target.pose_x == 7.0
    assert best_supported("the ball", evidence[2:], embedder) is None
    for question, place in (("Where did I leave the keys?", True), ("which room is the cat in",
                            True), ("What colour is the ball?", False),
                            ("How many times did the door open?", False)):
        assert asks_for_place(question) is place, question
