"""QuestionAnswerer: answer a question about the stream from its stored captions.

Retrieval (:mod:`rats_ros.recall.retrieval`) picks the captions of the question's causal time window
that fit the context budget; the backend's language model then answers greedily with those
captions, in time order and each prefixed by its time span, as its only context.
"""
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rats_ros.errors import AnswerCancelled, ConfigError, QuestionError
from rats_ros.recall.clock import TimeStyle
from rats_ros.recall.coverage import Coverage, plan_question
from rats_ros.recall.retrieval import Place, RetrievalIndex, format_caption
from rats_ros.recall.store import StoredCaption
from rats_ros.recall.target import asks_for_place, best_supported

DEFAULT_INSTRUCTION = (
    "These are captions of a video stream in time order; each starts with its time span in "
    "seconds from the start of the stream (and, where known, the camera and the robot's "
    "position in metres). Answer the question using only these captions.")
CLOCK_INSTRUCTION = (
    "These are captions of a video stream in time order; each starts with its time span in "
    "local clock time and how long ago it was (and, where known, the camera and the robot's "
    "position in metres). Answer the question using only these captions, giving times as "
    "clock times.")


def answer_prompt(instruction: str, question: str, lines: list[str]) -> str:
    """The answerer's user message: instruction, caption lines, question."""
    return f"{instruction}\n\n" + "\n".join(lines) + f"\n\nQuestion: {question.strip()}\nAnswer:"


def coverage_note(item: Coverage, style: TimeStyle, origin_ns: int, now_ns: int) -> str:
    """The prompt line that reports a temporal question's matches for one subject."""
    if not item.found:
        return f"(No caption mentions {item.subject}.)"
    span = style.between(item.first_ns, item.last_ns, origin_ns, now_ns)
    shown = "all shown" if item.shown == item.found else \
        f"{item.shown} shown: the first, the last and others spread between"
    return (f"({item.found} captions mention {item.subject}, in {item.episodes} separate "
            f"episodes, {span}; {shown}.)")


@dataclass
class QAConfig:
    """Question answering settings.

    :param context_tokens: token budget of the captions in the prompt (paper: 10,000).
    :param mmr_lambda: relevance weight of MMR (1: relevance only, 0: diversity only).
    :param mmr_pool: MMR ranks only this many candidates most relevant to the question (0: all
        of the window, the paper's exact rule); bench/bench_retrieval.py measures the choice.
    :param max_answer_tokens: bound of the greedy answer.
    :param max_question_chars: longer questions are refused.
    :param max_captions: default cap on the number of captions (0: only the budget limits).
    :param instruction: text placed before the captions (empty: the one for the time format).
    :param time_format: how caption spans read: ``auto``, ``clock``, ``stream``
        (:mod:`rats_ros.recall.clock`).
    :param timezone: IANA time zone of clock times (empty: the system's).
    :param temporal: read first / last / how many / before-after questions and give them
        evidence that covers their matches (:mod:`rats_ros.recall.coverage`); False: MMR alone.
    """

    context_tokens: int = 10000
    mmr_lambda: float = 0.5
    mmr_pool: int = 0
    max_answer_tokens: int = 64
    max_question_chars: int = 4000
    max_captions: int = 0
    instruction: str = ""
    time_format: str = "auto"
    timezone: str = ""
    temporal: bool = True

    def __post_init__(self):
        self.style = TimeStyle(self.time_format, self.timezone)  # raises ConfigError
        if self.context_tokens < 1:
            raise ConfigError(f"context_tokens must be >= 1, got {self.context_tokens}")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ConfigError(f"mmr_lambda must be in [0, 1], got {self.mmr_lambda}")
        if self.mmr_pool < 0:
            raise ConfigError(f"mmr_pool must be >= 0 (0: every candidate), got {self.mmr_pool}")
        if self.max_answer_tokens < 1:
            raise ConfigError(f"max_answer_tokens must be >= 1, got {self.max_answer_tokens}")
        if self.max_question_chars < 1:
            raise ConfigError(f"max_question_chars must be >= 1, got {self.max_question_chars}")
        if self.max_captions < 0:
            raise ConfigError(f"max_captions must be >= 0 (0: no cap), got {self.max_captions}")


def _no_stage(stage: str, evidence: int) -> None:
    return None


def _not_cancelled() -> bool:
    return False


@dataclass(frozen=True)
class AskProgress:
    """What an asker sees while its question is answered (the AskVideo action's feedback).

    :param on_stage: ``(stage, evidence count)`` at ``retrieving`` and ``answering``.
    :param on_text: the answer so far, after each generated token.
    :param cancelled: polled between stages and before each decode step; once true the
        question ends with :class:`~rats_ros.errors.AnswerCancelled`.
    """

    on_stage: Callable[[str, int], None] = _no_stage
    on_text: Callable[[str], None] | None = None
    cancelled: Callable[[], bool] = _not_cancelled

    @property
    def streams(self) -> bool:
        """Whether generation must report to it (text wanted or a cancel to poll): a question
        without either decodes with no per-step hook."""
        return self.on_text is not None or self.cancelled is not _not_cancelled

    def check(self, stage: str) -> None:
        """:raises AnswerCancelled: when cancelled (``stage``: what was next)."""
        if self.cancelled():
            raise AnswerCancelled(f"the question was cancelled before {stage}")


@dataclass
class Answer:
    """An answer with the captions it was given, in time order.

    ``processing_time`` (s) is the whole ``ask``; ``timings`` (s) splits it into ``retrieval``
    (index refresh + MMR + reading the captions) and ``generation``. ``context_tokens`` is the
    prompt size of the evidence, ``candidates`` the number of captions in the window and
    ``used_mmr`` whether they had to be ranked (False: all fitted the budget). ``target`` is the
    evidence caption with a pose that best supports the answer, for a question that asks where
    (:mod:`rats_ros.recall.target`), else None. ``kind`` is the question's kind and ``coverage``
    what its subjects matched (temporal kinds, :mod:`rats_ros.recall.coverage`).
    """

    text: str
    evidence: list[StoredCaption]
    processing_time: float
    timings: dict = field(default_factory=dict)
    context_tokens: int = 0
    candidates: int = 0
    used_mmr: bool = False
    target: StoredCaption | None = None
    kind: str = "plain"
    coverage: list[Coverage] = field(default_factory=list)


class QuestionAnswerer:
    """Retrieval over a :class:`~rats_ros.recall.store.CaptionStore` plus the backend's LLM.

    Thread-safe: the node's service threads may call :meth:`ask` at once while captions are
    being added.

    :param store: the caption store of the stream.
    :param embedder: question/caption embedder (``embed``, ``name``).
    :param backend: a ``VideoBackend`` (``generate``, ``count_tokens``).
    :param config: :class:`QAConfig` (defaults when None).
    """

    def __init__(self, store, embedder, backend, config: QAConfig | None = None):
        self.config = config or QAConfig()
        self.store = store
        self._embedder = embedder
        self._backend = backend
        self.index = RetrievalIndex(store, embedder, backend.count_tokens,
                                    style=self.config.style)

    def warm(self) -> int:
        """Load every stored caption into the retrieval index now (instead of at the first
        question). :returns: rows loaded."""
        return self.index.refresh()

    def ask(self, question: str, since_ns: int = 0, until_ns: int = 0,
            max_captions: int = 0, cameras=(), place: Place | None = None,
            now_ns: int | None = None, progress: AskProgress | None = None) -> Answer:
        """Answer ``question`` from the captions of clips inside ``[since_ns, until_ns]``.

        :param until_ns: latest clip end (0: everything stored so far).
        :param max_captions: cap on the captions used (0: ``config.max_captions``).
        :param cameras: only captions of these cameras (empty: every camera).
        :param place: only captions taken near this place (None: anywhere).
        :param now_ns: the question's time on the captions' clock, for ages (None: the
            system clock).
        :param progress: stages, the answer so far and a cancel (:class:`AskProgress`).
        :raises QuestionError: empty or too long question, bad window, no captions (in it).
        :raises AnswerCancelled: ``progress.cancelled()`` turned true.
        :raises StoreError: the store cannot be read.
        """
        started = time.perf_counter()
        self._check_question(question, max_captions)
        cfg = self.config
        now_ns = time.time_ns() if now_ns is None else now_ns
        progress = progress or AskProgress()
        progress.on_stage("retrieving", 0)
        plan = plan_question(question) if cfg.temporal else None
        subjects = list(plan.subjects) if plan is not None else []
        vectors = self._embedder.embed([question, *subjects])  # (1 + s, d): one call
        selection = self.index.select(vectors[0], since_ns, until_ns, cfg.context_tokens,
                                      cfg.mmr_lambda, max_captions or cfg.max_captions,
                                      cameras=tuple(cameras), place=place, plan=plan,
                                      subject_vecs=vectors[1:], mmr_pool=cfg.mmr_pool,
                                      now_ns=now_ns)
        if not selection.captions:
            raise QuestionError("the selected captions were just deleted by retention; ask "
                                "again or widen the window")
        retrieved = time.perf_counter()
        progress.check("answering")
        progress.on_stage("answering", len(selection.captions))
        prompt = self.build_prompt(question, selection.captions, now_ns, selection.coverage)
        text = self._backend.generate(prompt, cfg.max_answer_tokens,
                                      progress if progress.streams else None).strip()
        target = best_supported(text, selection.captions, self._embedder) \
            if asks_for_place(question) else None
        done = time.perf_counter()
        return Answer(text, selection.captions, done - started,
                      {"retrieval": retrieved - started, "generation": done - retrieved},
                      selection.tokens, selection.candidates, selection.used_mmr, target,
                      selection.kind, selection.coverage)

    def build_prompt(self, question: str, captions: list[StoredCaption],
                     now_ns: int | None = None, coverage: list[Coverage] = ()) -> str:
        """The user message: instruction (and the time now, for clock times), the notes on a
        temporal question's matches, captions in time order with time spans, question."""
        origin = self.index.origin_ns
        if origin is None:  # no index refresh yet (prompt built by hand): first caption shown
            origin = captions[0].start_ns
        style = self.config.style
        now_ns = time.time_ns() if now_ns is None else now_ns
        instruction = self.config.instruction or (
            CLOCK_INSTRUCTION if style.uses_clock(origin) else DEFAULT_INSTRUCTION)
        now = style.now_line(origin, now_ns)
        notes = [coverage_note(item, style, origin, now_ns) for item in coverage]
        lines = notes + [format_caption(c, origin, style, now_ns) for c in captions]
        return answer_prompt(f"{instruction} {now}".strip(), question, lines)

    def _check_question(self, question, max_captions: int):
        if not isinstance(question, str) or not question.strip():
            raise QuestionError("the question is empty; send a question in words, e.g. "
                                "'what is on the table?'")
        limit = self.config.max_question_chars
        if len(question) > limit:
            raise QuestionError(f"the question has {len(question)} characters, more than the "
                                f"limit of {limit}; shorten it")
        if max_captions < 0:
            raise QuestionError(f"max_captions must be >= 0 (0: no cap), got {max_captions}")
