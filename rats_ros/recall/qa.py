"""QuestionAnswerer: answer a question about the stream from its stored captions.

Retrieval (:mod:`rats_ros.recall.retrieval`) picks the captions of the question's causal time window
that fit the context budget; the backend's language model then answers greedily with those
captions, in time order and each prefixed by its time span, as its only context.
"""
import time
from dataclasses import dataclass, field

from rats_ros.errors import ConfigError, QuestionError
from rats_ros.recall.retrieval import Place, RetrievalIndex, format_caption
from rats_ros.recall.store import StoredCaption
from rats_ros.recall.target import asks_for_place, best_supported

DEFAULT_INSTRUCTION = (
    "These are captions of a video stream in time order; each starts with its time span in "
    "seconds from the start of the stream (and, where known, the camera and the robot's "
    "position in metres). Answer the question using only these captions.")


def answer_prompt(instruction: str, question: str, lines: list[str]) -> str:
    """The answerer's user message: instruction, caption lines, question."""
    return f"{instruction}\n\n" + "\n".join(lines) + f"\n\nQuestion: {question.strip()}\nAnswer:"


@dataclass
class QAConfig:
    """Question answering settings.

    :param context_tokens: token budget of the captions in the prompt (paper: 10,000).
    :param mmr_lambda: relevance weight of MMR (1: relevance only, 0: diversity only).
    :param max_answer_tokens: bound of the greedy answer.
    :param max_question_chars: longer questions are refused.
    :param max_captions: default cap on the number of captions (0: only the budget limits).
    :param instruction: text placed before the captions.
    """

    context_tokens: int = 10000
    mmr_lambda: float = 0.5
    max_answer_tokens: int = 64
    max_question_chars: int = 4000
    max_captions: int = 0
    instruction: str = DEFAULT_INSTRUCTION

    def __post_init__(self):
        if self.context_tokens < 1:
            raise ConfigError(f"context_tokens must be >= 1, got {self.context_tokens}")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ConfigError(f"mmr_lambda must be in [0, 1], got {self.mmr_lambda}")
        if self.max_answer_tokens < 1:
            raise ConfigError(f"max_answer_tokens must be >= 1, got {self.max_answer_tokens}")
        if self.max_question_chars < 1:
            raise ConfigError(f"max_question_chars must be >= 1, got {self.max_question_chars}")
        if self.max_captions < 0:
            raise ConfigError(f"max_captions must be >= 0 (0: no cap), got {self.max_captions}")


@dataclass
class Answer:
    """An answer with the captions it was given, in time order.

    ``processing_time`` (s) is the whole ``ask``; ``timings`` (s) splits it into ``retrieval``
    (index refresh + MMR + reading the captions) and ``generation``. ``context_tokens`` is the
    prompt size of the evidence, ``candidates`` the number of captions in the window and
    ``used_mmr`` whether they had to be ranked (False: all fitted the budget). ``target`` is the
    evidence caption with a pose that best supports the answer, for a question that asks where
    (:mod:`rats_ros.recall.target`), else None.
    """

    text: str
    evidence: list[StoredCaption]
    processing_time: float
    timings: dict = field(default_factory=dict)
    context_tokens: int = 0
    candidates: int = 0
    used_mmr: bool = False
    target: StoredCaption | None = None


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
        self.index = RetrievalIndex(store, embedder, backend.count_tokens)

    def warm(self) -> int:
        """Load every stored caption into the retrieval index now (instead of at the first
        question). :returns: rows loaded."""
        return self.index.refresh()

    def ask(self, question: str, since_ns: int = 0, until_ns: int = 0,
            max_captions: int = 0, cameras=(), place: Place | None = None) -> Answer:
        """Answer ``question`` from the captions of clips inside ``[since_ns, until_ns]``.

        :param until_ns: latest clip end (0: everything stored so far).
        :param max_captions: cap on the captions used (0: ``config.max_captions``).
        :param cameras: only captions of these cameras (empty: every camera).
        :param place: only captions taken near this place (None: anywhere).
        :raises QuestionError: empty or too long question, bad window, no captions (in it).
        :raises StoreError: the store cannot be read.
        """
        started = time.perf_counter()
        self._check_question(question, max_captions)
        cfg = self.config
        query = self._embedder.embed([question])[0]  # (d,)
        selection = self.index.select(query, since_ns, until_ns, cfg.context_tokens,
                                      cfg.mmr_lambda, max_captions or cfg.max_captions,
                                      cameras=tuple(cameras), place=place)
        if not selection.captions:
            raise QuestionError("the selected captions were just deleted by retention; ask "
                                "again or widen the window")
        retrieved = time.perf_counter()
        prompt = self.build_prompt(question, selection.captions)
        text = self._backend.generate(prompt, cfg.max_answer_tokens).strip()
        target = best_supported(text, selection.captions, self._embedder) \
            if asks_for_place(question) else None
        done = time.perf_counter()
        return Answer(text, selection.captions, done - started,
                      {"retrieval": retrieved - started, "generation": done - retrieved},
                      selection.tokens, selection.candidates, selection.used_mmr, target)

    def build_prompt(self, question: str, captions: list[StoredCaption]) -> str:
        """The user message: instruction, captions in time order with time spans, question."""
        origin = self.index.origin_ns
        if origin is None:  # no index refresh yet (prompt built by hand): first caption shown
            origin = captions[0].start_ns
        lines = [format_caption(c, origin) for c in captions]
        return answer_prompt(self.config.instruction, question, lines)

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
