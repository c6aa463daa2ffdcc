"""``rats-ros eval synthetic``: what selection and recurrence do, measured on an unseen world.

A fresh world (seed ``10**9 + seed``: training never uses those) is streamed frame by frame
through the real :class:`~rats_ros.stream.clips.ClipAssembler` and
:class:`~rats_ros.stream.captioner.RecurrentCaptioner`; captions go into a real SQLite
:class:`~rats_ros.recall.store.CaptionStore` and questions through the real
:class:`~rats_ros.recall.qa.QuestionAnswerer`. Per configuration (selection x recurrence):

- caption accuracy: true facts whose object's colour was named, entries and exits stated,
  true facts stated (present part: colour, shape, action, direction), facts that need memory
  stated exactly, and the share of generated sentences that are true;
- the share of kept tokens that show an object (from the ground-truth masks), beside the share
  of all tokens that do;
- QA accuracy (exact answers), per question kind;
- per-clip latency.
"""
from __future__ import annotations

import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rats_ros.errors import ConfigError
from rats_ros.models.base import BackendConfig
from rats_ros.pipeline import Pipeline, PipelineConfig
from rats_ros.recall.qa import QAConfig
from rats_ros.recall.store import CaptionStore
from rats_ros.stream.captioner import CaptionerConfig
from rats_ros.stream.selection import METHODS
from rats_ros.world import language, scene
from rats_ros.world.model import TRAINED_PROMPT

EVAL_SEED_BASE = 10**9
FRAME_SIZE = 128
OBJECT_SHARE = 0.1  # a token shows an object when objects cover this share of its cell


@dataclass
class EvalConfig:
    """What to evaluate.

    :param seed: the world (``10**9 + seed``).
    :param minutes: stream length.
    :param selections: selection methods to compare.
    :param recurrences: memory on and/or off.
    """

    seed: int = 0
    minutes: float = 16.0
    selections: tuple[str, ...] = ("attention", "uniform", "random", "all")
    recurrences: tuple[bool, ...] = (True, False)

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {self.seed!r}")
        if not 1 <= self.minutes * 60 / language.CLIP_SECONDS <= 10_000:
            raise ConfigError(f"minutes must give 1 to 10000 clips of "
                              f"{language.CLIP_SECONDS:g} s, got {self.minutes!r}")
        unknown = [s for s in self.selections if s not in METHODS]
        if unknown or not self.selections or not self.recurrences:
            raise ConfigError(f"selections must be some of {list(METHODS)} (got "
                              f"{list(self.selections)}) and recurrences non-empty")

    @property
    def clips(self) -> int:
        return int(self.minutes * 60 // language.CLIP_SECONDS)


def pipeline_config(backend: BackendConfig) -> PipelineConfig:
    """The pipeline a world is evaluated with: its frame rate and clip length, the model's
    own embedder (the paper's), answers of at most 16 tokens (a world's answers are short), the
    prompt the model was trained on (:data:`~rats_ros.world.model.TRAINED_PROMPT`)."""
    return PipelineConfig(backend, qa=QAConfig(max_answer_tokens=16, **TRAINED_PROMPT),
                          embedder="model", fps=1 / scene.FRAME_INTERVAL_S,
                          clip_frames=scene.CLIP_FRAMES)


def evaluate(pipeline: Pipeline, config: EvalConfig, log=lambda line: None) -> list[dict]:
    """Run every configuration on one world through ``pipeline`` (built from
    :func:`pipeline_config`). :returns: one result per configuration."""
    world = scene.generate(EVAL_SEED_BASE + config.seed, config.clips)
    frames = list(scene.frames(world, FRAME_SIZE))
    truth = [language.clip_facts(world, c) for c in range(world.clips)]
    asked = language.questions(world)
    results = []
    for selection in config.selections:
        for recurrence in config.recurrences:
            result = _run(pipeline, world, frames, truth, asked, selection, recurrence, config)
            log(f"{selection:9s} recurrence {'on ' if recurrence else 'off'}: "
                f"present {result['caption_present']:.2f} memory {result['caption_memory']:.2f}"
                f" qa {result['qa']:.2f}")
            results.append(result)
    return results


def _run(pipeline, world, frames, truth, asked, selection, recurrence, config) -> dict:
    captioner = pipeline.captioner(config=CaptionerConfig(
        selection=selection, recurrence=recurrence, seed=config.seed))
    assembler = pipeline.assembler()
    score, coverage, latencies = language.CaptionScore(), Coverage(world), []
    with tempfile.TemporaryDirectory(prefix="rats_eval_") as tmp, \
            CaptionStore(Path(tmp) / "captions.db", synchronous="NORMAL") as store:
        for frame in frames:
            clip = assembler.push(frame)
            if clip is None:
                continue
            out = captioner.step(clip)
            score.add(truth[out.clip_index], language.parse(out.text))
            coverage.add(out)
            latencies.append(out.processing_time)
            store.add(out)
        answers = _answers(pipeline.answerer(store), asked)
    return {"selection": selection, "recurrence": recurrence, "seed": config.seed,
            "minutes": config.minutes, "clips": len(latencies), "model": pipeline.backend.name,
            "caption_colours": _ratio(score.colours, score.facts),
            "caption_arrivals": _ratio(score.arrivals, score.arrival_facts),
            "caption_present": _ratio(score.present, score.facts),
            "caption_memory": _ratio(score.memory, score.memory_facts),
            "caption_precision": _ratio(score.right, score.stated),
            "facts": score.facts, "memory_facts": score.memory_facts,
            "kept_on_objects": _ratio(coverage.kept_hits, coverage.kept),
            "tokens_on_objects": _ratio(coverage.all_hits, coverage.all),
            "qa": _ratio(sum(ok for _, ok in answers), len(answers)),
            "qa_by_kind": _by_kind(answers), "questions": len(answers),
            "latency_ms_p50": round(1000 * statistics.median(latencies), 1),
            "latency_ms_mean": round(1000 * statistics.fmean(latencies), 1)}


def _answers(answerer, asked) -> list[tuple[str, bool]]:
    return [(q.kind, language.normalise(answerer.ask(q.text).text) == q.answer)
            for q in asked]


class Coverage:
    """How many kept tokens (and all tokens) show an object, from the ground-truth masks."""

    def __init__(self, world: scene.World):
        self.world, self.kept, self.kept_hits, self.all, self.all_hits = world, 0, 0, 0, 0

    def add(self, caption) -> None:
        """Count one captioned clip (a ``ClipCaption``)."""
        groups, rows, cols = caption.token_grid
        on = np.zeros((groups, rows, cols), dtype=bool)
        for g in range(groups):
            owner = scene.masks(self.world, caption.clip_index, g * caption.frames_per_group,
                                FRAME_SIZE)  # (S, S)
            cells = (owner >= 0).reshape(rows, FRAME_SIZE // rows, cols, FRAME_SIZE // cols)
            on[g] = cells.mean(axis=(1, 3)) >= OBJECT_SHARE
        flat = on.reshape(-1)
        self.all += flat.size
        self.all_hits += int(flat.sum())
        self.kept += len(caption.kept_indices)
        self.kept_hits += int(flat[caption.kept_indices].sum())


def _ratio(part: int, whole: int) -> float | None:
    """:returns: ``part / whole`` (None when there is nothing to count: valid JSON, unlike NaN)."""
    return round(part / whole, 4) if whole else None


def _cell(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _by_kind(answers) -> dict:
    kinds = defaultdict(list)
    for kind, ok in answers:
        kinds[kind].append(ok)
    return {k: _ratio(sum(v), len(v)) for k, v in sorted(kinds.items())}


def table(results: list[dict]) -> str:
    """:returns: the results as a Markdown table."""
    lines = ["| selection | recurrence | colours | entries/exits | present facts | memory facts "
             "| precision | kept on objects | QA | ms/clip |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        cells = [_cell(r[k]) for k in ("caption_colours", "caption_arrivals", "caption_present",
                                       "caption_memory", "caption_precision", "kept_on_objects",
                                       "qa")]
        lines.append(f"| {r['selection']} | {'on' if r['recurrence'] else 'off'} | "
                     + " | ".join(cells) + f" | {r['latency_ms_p50']:.0f} |")
    base = results[0]["tokens_on_objects"] if results else None
    lines.append(f"\nAll tokens on objects: {_cell(base)}.")
    return "\n".join(lines)
