"""Answers first: a caption in flight steps aside, between two of its layers or tokens, while a
question is being answered on the same model.

Why: the caption and answer decoders have their own locks and buffers, so an answer never waits
for a whole caption; but on one GPU both threads' kernels interleave, and each runs slower (an
answer's p99 was 1.61x idle while 4 cameras captioned at 7B size, bench/RESULTS.md). Here the
caption thread checks a gate before each prefill layer and each decode step and waits while any
answer runs. The host launches kernels far ahead of the GPU (a 7B prefill is queued in a few ms
and runs for ~165 ms), so a check alone would come too late: :class:`Pacer` also keeps the
caption at most ``lead`` units (layers or tokens) ahead of the GPU, and an answer waits for at
most those, not for the rest of the caption. A caption's vision encode is not paced (one
transformers forward): an answer can still wait behind it.

Captions wait as long as answers keep coming: questions are rare next to clips, and a late
caption is only late (its frames are already in its clip), while a robot waits on an answer.
"""
from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager

import torch


class AnswerFirst:
    """Counts the answers in flight on one model; caption threads wait while there are any.

    :param hold: False: count answers but never hold captions back (bench_busy_ask's
        baseline in the same run: captions and answers share the GPU unordered).
    """

    def __init__(self, hold: bool = True):
        self.hold = hold
        self._idle = threading.Condition()
        self._answers = 0
        self.waits = 0  # times a caption stepped aside (tests, diagnostics)

    @contextmanager
    def answering(self):
        """Hold captions back for the duration of the ``with`` block."""
        with self._idle:
            self._answers += 1
        try:
            yield
        finally:
            with self._idle:
                self._answers -= 1
                if self._answers == 0:
                    self._idle.notify_all()

    @property
    def busy(self) -> bool:
        """Whether an answer is running now."""
        return self._answers > 0

    def wait_for_answers(self) -> None:
        """Return once no answer runs (at once when none does: one unlocked read)."""
        if self._answers == 0 or not self.hold:
            return
        with self._idle:
            if self._answers:
                self.waits += 1
            while self._answers:
                self._idle.wait()


class Pacer:
    """Called by a caption between units of work: keeps it at most ``lead`` units ahead of the
    GPU (CUDA events; nothing to do on the CPU, which runs in order) and waits for answers.

    :param gate: the model's :class:`AnswerFirst`, or None (then calls cost nothing).
    :param device: the model's device.
    :param lead: units queued on the GPU before the host waits (2: the GPU never idles, since
        the host queues the next unit while the previous runs).
    """

    def __init__(self, gate: AnswerFirst | None, device: torch.device, lead: int = 2):
        self.gate = gate
        self.lead = lead
        self._cuda = gate is not None and device.type == "cuda"
        self._queued: deque = deque()

    def __call__(self) -> None:
        if self.gate is None:
            return
        if self._cuda:
            event = torch.cuda.Event()
            event.record()  # on this thread's current stream
            self._queued.append(event)
            if len(self._queued) > self.lead:
                self._queued.popleft().synchronize()
        self.gate.wait_for_answers()
