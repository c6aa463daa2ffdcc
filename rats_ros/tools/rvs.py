"""``rats-ros eval rvs``: the paper's streaming QA protocol (RVS-Ego / RVS-Movie) on your data.

Annotations are the JSON list that ReKV's streaming evaluation reads (its ``rekv_stream_vqa.py``:
per video ``video_id``, ``video_path`` and ``conversations``, each with ``question``, ``answer``
and ``end_time``, the second of the video at which it is asked). Each video streams frame by
frame through the real :class:`~rats_ros.stream.clips.ClipAssembler` and
:class:`~rats_ros.stream.captioner.RecurrentCaptioner` into a SQLite
:class:`~rats_ros.recall.store.CaptionStore`; each question is answered by the
:class:`~rats_ros.recall.qa.QuestionAnswerer` when the stream reaches its ``end_time``, from the
captions of clips that ended by then (causal). Predictions are JSON lines with the fields
Flash-VStream's GPT judge reads (``eval_activitynet_qa.py``: ``id``, ``question``, ``answer``,
``pred``, ``answer_type``), plus ``video_id``, ``end_time`` and what the answer was given.
"""
from __future__ import annotations

import json
import tempfile
from collections import deque
from pathlib import Path

from rats_ros.errors import InputError, QuestionError
from rats_ros.io.bags import open_input
from rats_ros.recall.store import CaptionStore

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov")
_NS = 1_000_000_000


def load_annotations(path) -> list[dict]:
    """Read and check an annotation file.

    :raises InputError: unreadable JSON, or a video or question without the fields it needs.
    """
    try:
        samples = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the annotations {path}: {exc}") from exc
    if not isinstance(samples, list) or not samples:
        raise InputError(f"{path} must hold a non-empty JSON list of videos")
    for n, sample in enumerate(samples):
        talks = sample.get("conversations") if isinstance(sample, dict) else None
        if not isinstance(sample, dict) or not isinstance(sample.get("video_id"), str) \
                or not isinstance(talks, list):
            raise InputError(f"video {n} of {path} needs a string video_id and a list "
                             "conversations")
        for talk in talks:
            if not isinstance(talk, dict) or not isinstance(talk.get("question"), str) \
                    or not isinstance(talk.get("end_time"), (int, float)) \
                    or talk["end_time"] < 0:
                raise InputError(f"a question of video {sample['video_id']!r} in {path} needs "
                                 "a string question and an end_time >= 0 (seconds)")
    return samples


def video_file(sample: dict, root: Path | None) -> Path:
    """The video of ``sample``: its ``video_path`` (relative to ``root``), else
    ``root/<video_id>.<suffix>``. :raises InputError: when there is none."""
    if sample.get("video_path"):
        path = Path(sample["video_path"])
        return path if path.is_absolute() or root is None else root / path
    for suffix in VIDEO_SUFFIXES:
        if root is not None and (root / f"{sample['video_id']}{suffix}").exists():
            return root / f"{sample['video_id']}{suffix}"
    raise InputError(f"no video for {sample['video_id']!r}: give video_path or put "
                     f"<video_id>{{{','.join(VIDEO_SUFFIXES)}}} under --video-root")


def run(pipeline, samples: list[dict], root: Path | None, out, log=lambda line: None) -> int:
    """Stream every video through ``pipeline`` (a :class:`~rats_ros.pipeline.Pipeline`) and
    answer its questions at their times.

    :param out: a text file; one JSON line per question, flushed as it is written.
    :returns: the number of questions answered.
    """
    answered = 0
    for sample in samples:
        with tempfile.TemporaryDirectory(prefix="rats_rvs_") as tmp, \
                CaptionStore(Path(tmp) / "captions.db", synchronous="NORMAL") as store:
            for line in _video(pipeline, sample, root, store):
                out.write(json.dumps(line) + "\n")
                out.flush()
                answered += 1
        log(f"{sample['video_id']}: {len(sample['conversations'])} questions")
    return answered


def _video(pipeline, sample, root, store):
    """Caption one video as a stream; yield each question's prediction at its time."""
    frames, _ = open_input(video_file(sample, root))
    captioner, assembler = pipeline.captioner(), pipeline.assembler()
    answerer = pipeline.answerer(store)
    pending = deque(sorted(sample["conversations"], key=lambda q: q["end_time"]))
    origin = None
    for frame in frames:
        origin = frame.stamp_ns if origin is None else origin
        while pending and pending[0]["end_time"] * _NS < frame.stamp_ns - origin:
            yield _answer(answerer, sample, pending.popleft(), origin)
        clip = assembler.push(frame)
        if clip is not None:
            store.add(captioner.step(clip))
    clip = assembler.flush()
    if clip is not None:
        store.add(captioner.step(clip))
    while pending:
        yield _answer(answerer, sample, pending.popleft(), origin or 0)


def _answer(answerer, sample, talk, origin: int) -> dict:
    """One prediction: the answer from the captions of clips ended by ``end_time``."""
    until = origin + round(talk["end_time"] * _NS)
    line = {"id": sample["video_id"], "video_id": sample["video_id"],
            "question": talk["question"], "answer": talk.get("answer", ""),
            "answer_type": talk.get("answer_type"), "end_time": talk["end_time"]}
    try:
        # until_ns=0 would mean "no bound": a question at the stream's first stamp keeps one
        answer = answerer.ask(talk["question"], until_ns=max(until, 1))
    except QuestionError as error:  # nothing captioned yet: an empty prediction, said why
        return {**line, "pred": "", "error": str(error), "evidence": 0}
    last = max(c.end_ns for c in answer.evidence)
    return {**line, "pred": answer.text, "evidence": len(answer.evidence),
            "evidence_end_s": round((last - origin) / _NS, 3),
            "seconds": round(answer.processing_time, 3)}
