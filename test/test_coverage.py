"""Temporal questions: their reading, evidence that covers their matches, clock times in the
prompt. Real SQLite stores, the real MiniLM embedder, the tiny random LLaVA-OneVision for the
answerer's plumbing (its answers are meaningless; the tests check what it was given)."""
import datetime as dt

import numpy as np
import pytest
from helpers import make_caption as Caption

from rats_ros.errors import ConfigError, QuestionError
from rats_ros.models import load_backend
from rats_ros.recall.clock import NS, TimeStyle, age_text, parse_when
from rats_ros.recall.coverage import (
    MATCH_COS,
    WordIndex,
    _coarse_to_fine,
    match,
    plan_question,
)
from rats_ros.recall.embedders import SentenceEmbedder
from rats_ros.recall.qa import QAConfig, QuestionAnswerer
from rats_ros.recall.retrieval import RetrievalIndex, format_caption
from rats_ros.recall.store import CaptionStore
from rats_ros.world import diary, recall

NOON = 1_796_644_800 * NS  # 2026-12-07 12:00:00 UTC


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder.default()


@pytest.fixture(scope="module")
def backend(model_cache):
    return load_backend("tiny-random")


@pytest.mark.parametrize("question, kind, subjects", [
    ("When did you first see the red mug?", "first", ("red mug",)),
    ("When did the robot first see a red mug?", "first", ("red mug",)),
    ("Where was the blue backpack last seen?", "last", ("blue backpack",)),
    ("What is the most recent thing the dog did?", "last", ("dog",)),
    ("How many times did the front door open?", "count", ("front door open",)),
    ("How often did someone water the plants?", "count", ("water plants",)),
    ("Did the plumber come before the electrician?", "order", ("plumber", "electrician")),
    ("Which came first, the red mug or the delivery robot?", "order",
     ("red mug", "delivery robot")),
    ("What is on the table?", "plain", ()),
    ("Describe the kitchen.", "plain", ()),
])
def test_a_question_is_read_for_its_kind_and_subjects(question, kind, subjects):
    plan = plan_question(question)
    assert (plan.kind, plan.subjects) == (kind, subjects)


def text_has(text: str, subject: str) -> bool:
    """``match`` on one caption whose embedding is near the subject but not sure: the words
    decide, through the word index the retrieval index keeps."""
    words = WordIndex()
    words.add([1], [text])
    return len(match(subject, np.array([MATCH_COS]), np.array([1]), words)) == 1


def test_subject_words_verbs_optional_nouns_required():
    assert text_has("A visitor comes in through the front door.", "front door open")
    assert text_has("The front doors swing open.", "front door open")
    assert not text_has("The floor is wet near the door.", "front door open")
    assert not text_has("A blue mug sits on the shelf.", "red mug")
    words = WordIndex()
    words.add([3, 7, 9], ["a red mug", "the mugs are red", "a blue mug"])
    ids = np.array([3, 7, 9, 11])
    assert words.holds(ids, "mug").tolist() == [True, True, True, False]
    assert words.holds(ids, "red").tolist() == [True, True, False, False]
    assert words.holds(ids, "green").tolist() == [False] * 4


def test_spread_order_reaches_both_ends_first_and_every_position_once():
    for m in (1, 2, 3, 10, 37):
        order = _coarse_to_fine(m)
        assert sorted(order) == list(range(m)) and order[:2] == [0, m - 1][:min(m, 2)]


def test_every_kind_is_covered_over_a_day_of_a_steady_captioner(embedder):
    """A day (2,700 captions) of two diaries: the evidence holds the first and the last sighting,
    every episode of the repeated event, both one-off events and the rare one; the note reports
    the episodes exactly."""
    results = recall.evaluate(embedder, embedder.count_tokens, horizons=("day",), seeds=(3, 4),
                              repeats=1)
    covering = [r for r in results if r.method == "covering"]
    assert {r.kind for r in covering} == {"first", "last", "count", "order", "plain"}
    assert all(r.recall == 1.0 for r in covering), [(r.kind, r.recall) for r in covering]
    counts = [r for r in covering if r.kind == "count"]
    assert all(r.reported == r.episodes for r in counts), [(r.reported, r.episodes)
                                                           for r in counts]


def test_when_matches_do_not_fit_the_note_says_so_and_both_ends_stay(tmp_path, embedder):
    d = diary.generate(5, "day")
    path = str(tmp_path / "day.db")
    recall.write_store(path, d, embedder)
    probe = next(p for p in d.probes if p.kind == "first")
    truth_first = probe.truth[0][0]
    last = next(p for p in d.probes if p.kind == "last").truth[0][0]
    with CaptionStore(path, create=False, readonly=True) as store:
        index = RetrievalIndex(store, embedder, embedder.count_tokens)
        plan = plan_question(probe.question)
        query = embedder.embed([probe.question])[0]
        selection = index.select(query, budget_tokens=1500, plan=plan)  # ~40 captions fit
    shown = [c.clip_index for c in selection.captions]
    assert truth_first in shown and last in shown and shown == sorted(shown)
    (item,) = selection.coverage
    assert item.subject == plan.subjects[0] and item.found > item.shown > 0
    assert selection.tokens <= 1500


def test_the_prompt_gives_clock_times_ages_and_the_matches_note(tmp_path, backend, embedder):
    store = CaptionStore(tmp_path / "c.db")
    texts = ["A red mug sits on the counter.", "The kitchen is empty.",
             "A red mug is on the shelf again.", "A person reads a newspaper."]
    for i, (text, emb) in enumerate(zip(texts, embedder.embed(texts), strict=True)):
        start = NOON - (4 - i) * 3600 * NS  # 08:00, 09:00, 10:00, 11:00 UTC
        store.add(Caption(i, start, start + 30 * NS, text), emb, embedder.name, model="m")
    qa = QuestionAnswerer(store, embedder, backend, QAConfig(timezone="UTC"))
    answer = qa.ask("When did you first see the red mug?", now_ns=NOON + 5 * 60 * NS)
    prompt = qa.build_prompt("When did you first see the red mug?", answer.evidence,
                             NOON + 5 * 60 * NS, answer.coverage)
    assert "It is now Monday 2026-12-07 12:05:00 UTC." in prompt
    assert "[08:00, 4 h 4 min ago] A red mug sits on the counter." in prompt
    assert "(2 captions mention red mug, in 2 separate episodes, between 08:00 and 10:00; " \
        "all shown.)" in prompt
    assert answer.kind == "first" and [c.clip_index for c in answer.evidence] == [0, 1, 2, 3]
    stream = QuestionAnswerer(store, embedder, backend, QAConfig(time_format="stream",
                                                                 temporal=False))
    plain = stream.ask("When did you first see the red mug?", now_ns=NOON)
    lines = stream.build_prompt("q", plain.evidence, NOON).splitlines()
    assert "[0.0s-30.0s] A red mug sits on the counter." in lines and plain.coverage == []
    store.close()


def test_simulation_stamps_keep_stream_seconds_under_auto():
    style = TimeStyle()
    assert style.span(12 * NS, 44 * NS, 0, 100 * NS) == "12.0s-44.0s"
    assert style.now_line(0, 100 * NS) == ""
    assert style.uses_clock(NOON) and not TimeStyle("stream").uses_clock(NOON)


def test_ages_and_clock_text():
    assert [age_text(s) for s in (-3, 0, 35, 125, 7500, 3 * 86400 + 4 * 3600 + 9)] == [
        "just now", "just now", "35 s ago", "2 min ago", "2 h 5 min ago", "3 d 4 h ago"]
    berlin = TimeStyle("clock", "Europe/Berlin")
    assert berlin.clock_text(NOON, NOON + 90 * NS) == "2026-12-07 13:00:00 CET (1 min ago)"
    yesterday = TimeStyle("clock", "UTC").span(NOON - 86400 * NS, NOON - 86370 * NS, 0, NOON)
    assert yesterday == "2026-12-06 12:00, 23 h 59 min ago"
    assert TimeStyle("clock", "UTC").span(NOON, NOON, 0, None).startswith("2026-12-07 12:00")


@pytest.mark.parametrize("text, expected", [
    ("2h", NOON - 2 * 3600 * NS), ("90min", NOON - 90 * 60 * NS), ("1h30m", NOON - 5400 * NS),
    ("1d", NOON - 86400 * NS), ("0", 0), ("1733562000", 1733562000 * NS),
    ("2026-12-07T09:00", NOON - 3 * 3600 * NS), ("2026-12-07T09:00+01:00", NOON - 4 * 3600 * NS),
])
def test_cli_times_are_durations_iso_times_or_seconds(text, expected):
    assert parse_when(text, NOON, "UTC") == expected


@pytest.mark.parametrize("text", ["yesterday", "nan", "inf", "-1", "1e300", "2 parsecs"])
def test_a_bad_cli_time_says_what_to_give(text):
    with pytest.raises(QuestionError, match="seconds"):
        parse_when(text, NOON)


def test_an_unknown_timezone_or_format_is_a_config_error():
    with pytest.raises(ConfigError, match="IANA"):
        QAConfig(timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="time_format"):
        QAConfig(time_format="sundial")
    assert dt.datetime.fromtimestamp(NOON / NS, dt.timezone.utc).hour == 12


def test_eval_recall_and_ask_json_report_kinds_and_coverage(tmp_path, capsys, model_cache):
    """``rats-ros eval recall --keep`` leaves a diary store and its questions; ``rats-ros ask
    --json`` on it reports the question's kind and what its subject matched."""
    import json

    from rats_ros.tools.cli import main

    assert main(["eval", "recall", "--horizons", "day", "--seeds", "6", "--json",
                 "--keep", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["kind"], r["method"]) for r in rows} >= {("count", "covering"), ("last", "mmr")}
    assert all(r["recall_mean"] == 1.0 for r in rows if r["method"] == "covering")
    probes = json.loads((tmp_path / "day_6.json").read_text())
    count = next(p for p in probes if p["kind"] == "count")
    code = main(["ask", count["question"], "--store", str(tmp_path / "day_6.db"), "--json",
                 "--model", "tiny-random", "--max-new-tokens", "2", "--context-tokens", "3000",
                 "--now", "2025-12-02T08:00:00+00:00"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["kind"] == "count"
    (item,) = out["coverage"]
    assert item["episodes"] == len(count["truth"]) and item["shown"] == item["found"]
    shown = {e["clip_index"] for e in out["evidence"]}
    assert all(set(group) <= shown for group in count["truth"])
    assert main(["eval", "recall", "--horizons", "year"]) == 2
    assert "--horizons takes day, week, month" in capsys.readouterr().err


def test_lines_of_the_questions_day_cost_no_date_and_counts_stay_upper_bounds(tmp_path,
                                                                              backend, embedder):
    """Token counts assume a date and the longest age; for a question on the captions' day the
    date is dropped from the count, and every line still costs at most what was counted."""
    store = CaptionStore(tmp_path / "d.db")
    texts = [f"A person walks through the hallway, scene {i}." for i in range(40)]
    for i, (text, emb) in enumerate(zip(texts, embedder.embed(texts), strict=True)):
        start = NOON - (40 - i) * 60 * NS  # the 40 minutes before noon
        store.add(Caption(i, start, start + 30 * NS, text), emb, embedder.name, model="m")
    style = TimeStyle("clock", "UTC")
    index = RetrievalIndex(store, embedder, backend.count_tokens, style=style)
    query = embedder.embed(["Who walked?"])[0]
    undated = index.select(query, budget_tokens=100_000, now_ns=NOON)
    dated = index.select(query, budget_tokens=100_000, now_ns=NOON + 86400 * NS)  # next day
    assert undated.tokens < dated.tokens == index.select(query, budget_tokens=100_000).tokens
    for selection, now in ((undated, NOON), (dated, NOON + 86400 * NS)):
        real = sum(backend.count_tokens(format_caption(c, index.origin_ns, style, now)) + 1
                   for c in selection.captions)
        assert real <= selection.tokens
    store.close()
