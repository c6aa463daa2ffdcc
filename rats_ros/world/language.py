"""The world's language: one caption per clip in a small fixed grammar, caption parsing into
facts, and questions with exact answers.

A caption states, for each object seen during the clip (in colour order: red, green, blue,
yellow, white, which the frames show, unlike the drawing order), one sentence:

=====================  ========================================  =================
action                 sentence                                  needs the past
=====================  ========================================  =================
enter                  ``the red square enters[ again].``        seen before?
leave                  ``the red square leaves.``                no
move                   ``the red square {starts|keeps} moving left.``  moved that way?
still                  ``the red square {stops|is still}.``      moving before?
=====================  ========================================  =================

A clip with nobody in it is ``the room is empty.``. Each sentence is one *fact*: its present
part (object, action, direction) can be read off the clip alone; the qualifier (again,
starts/keeps, stops/is still) needs the earlier clips, i.e. memory.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from rats_ros.world.scene import CLIP_FRAMES, COLOURS, FRAME_INTERVAL_S, World

EMPTY = "the room is empty."
CLIP_SECONDS = CLIP_FRAMES * FRAME_INTERVAL_S
_SENTENCE = re.compile(r"the (\w+ \w+) (enters again|enters|leaves|starts moving (\w+)|"
                       r"keeps moving (\w+)|stops|is still)$")
_COUNT_WORDS = ("never", "once", "twice", "three times", "four times", "five times",
                "six times", "seven times", "eight times", "nine times", "ten times")


@dataclass(frozen=True)
class Fact:
    """One sentence of a caption.

    :param thing: e.g. ``red square``.
    :param action: ``enter``, ``leave``, ``move`` or ``still``.
    :param direction: for ``move``.
    :param qualifier: the part that needs the past (``again``/``first``, ``keeps``/``starts``,
        ``stops``/``still``); empty for ``leave``.
    """

    thing: str
    action: str
    direction: str = ""
    qualifier: str = ""

    @property
    def present(self) -> tuple[str, str, str]:
        """:returns: what the clip alone shows."""
        return self.thing, self.action, self.direction

    @property
    def colour(self) -> str:
        return self.thing.split()[0]

    @property
    def needs_memory(self) -> bool:
        return bool(self.qualifier)

    def sentence(self) -> str:
        """:returns: the fact in the grammar."""
        if self.action == "enter":
            verb = "enters again" if self.qualifier == "again" else "enters"
        elif self.action == "leave":
            verb = "leaves"
        elif self.action == "move":
            verb = f"{self.qualifier} moving {self.direction}"
        else:
            verb = "stops" if self.qualifier == "stops" else "is still"
        return f"the {self.thing} {verb}."


def clip_facts(world: World, clip: int) -> list[Fact]:
    """The true facts of one clip, in colour order."""
    facts = []
    palette = list(COLOURS)
    for index in sorted(range(len(world.things)),
                        key=lambda i: palette.index(world.things[i].colour)):
        thing = world.things[index]
        action = world.actions[clip][index]
        earlier = [world.actions[c][index] for c in range(clip)]
        previous = earlier[-1] if earlier else None
        if action.kind == "enter":
            seen = any(a.kind != "absent" for a in earlier)
            facts.append(Fact(thing.name, "enter", qualifier="again" if seen else "first"))
        elif action.kind == "leave":
            facts.append(Fact(thing.name, "leave"))
        elif action.kind == "move":
            same = previous is not None and previous.kind == "move" \
                and previous.direction == action.direction
            facts.append(Fact(thing.name, "move", action.direction,
                              "keeps" if same else "starts"))
        elif action.kind == "still":
            moving = previous is not None and previous.kind in ("move", "enter")
            facts.append(Fact(thing.name, "still", qualifier="stops" if moving else "still"))
    return facts


def caption(facts: list[Fact]) -> str:
    """:returns: the caption text of a clip's facts."""
    return " ".join(f.sentence() for f in facts) if facts else EMPTY


def parse(text: str) -> list[Fact]:
    """Read a caption back into facts; sentences outside the grammar are dropped."""
    facts = []
    for sentence in (s.strip() for s in text.lower().split(".")):
        match = _SENTENCE.match(sentence)
        if match is None:
            continue
        thing, verb = match.group(1), match.group(2)
        if verb.startswith("enters"):
            facts.append(Fact(thing, "enter", qualifier="again" if "again" in verb else "first"))
        elif verb == "leaves":
            facts.append(Fact(thing, "leave"))
        elif "moving" in verb:
            facts.append(Fact(thing, "move", verb.split()[-1], verb.split()[0]))
        else:
            facts.append(Fact(thing, "still", qualifier="stops" if verb == "stops" else "still"))
    return facts


@dataclass
class CaptionScore:
    """Counts for comparing a generated caption with the truth.

    ``present``: true facts whose object, action and direction were stated; ``memory``: true
    facts that need the past and were stated exactly (qualifier included); ``stated``/``right``:
    generated sentences in the grammar and those that are true. Coarser: ``colours``: true facts
    whose object's colour (unique in a world) was named; ``arrivals``: true enter and leave facts
    whose colour and action were stated.
    """

    facts: int = 0
    colours: int = 0
    arrival_facts: int = 0
    arrivals: int = 0
    present: int = 0
    memory_facts: int = 0
    memory: int = 0
    stated: int = 0
    right: int = 0

    def add(self, truth: list[Fact], generated: list[Fact]) -> None:
        said, said_present = set(generated), {f.present for f in generated}
        said_colours = {(f.colour, f.action) for f in generated}
        self.facts += len(truth)
        self.colours += sum(f.colour in {c for c, _ in said_colours} for f in truth)
        coming = [f for f in truth if f.action in ("enter", "leave")]
        self.arrival_facts += len(coming)
        self.arrivals += sum((f.colour, f.action) in said_colours for f in coming)
        self.present += sum(f.present in said_present for f in truth)
        self.memory_facts += sum(f.needs_memory for f in truth)
        self.memory += sum(f.needs_memory and f in said for f in truth)
        self.stated += len(generated)
        self.right += sum(f in set(truth) for f in generated)


# ---- questions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    """A question about a whole world with its exact answer, and its kind."""

    text: str
    answer: str
    kind: str


def questions(world: World, clips: int | None = None) -> list[Question]:
    """Questions whose answers follow from the captions of the first ``clips`` clips.

    Answers name their object first ("a yellow circle", "the red square entered twice"), as a
    person answers: the object's words, once written, point to where the captions mention it.
    """
    clips = world.clips if clips is None else clips
    history = [clip_facts(world, c) for c in range(clips)]
    enters = [(c, f.thing) for c, facts in enumerate(history) for f in facts
              if f.action == "enter"]
    leaves = [(c, f.thing) for c, facts in enumerate(history) for f in facts
              if f.action == "leave"]
    out = []
    for thing in world.things:
        times = [c for c, name in enters if name == thing.name]
        if times:
            out.append(Question(f"When did the {thing.name} first appear?",
                                f"the {thing.name} first appeared at "
                                f"{times[0] * CLIP_SECONDS:.1f}s", "first_appearance"))
        out.append(Question(f"How many times did the {thing.name} enter?",
                            f"the {thing.name} entered {_count(len(times))}", "count"))
        if times:
            out.append(Question(f"What shape is the {thing.colour} object?",
                                f"a {thing.name}", "shape"))
    for order, name, events in (("first", "entered", enters), ("last", "left", leaves)):
        if events:
            clip = events[0][0] if order == "first" else events[-1][0]
            who = [n for c, n in events if c == clip]
            if len(who) == 1:
                out.append(Question(f"Which object {name} {order}?", f"the {who[0]}",
                                    f"{name}_{order}"))
    return out


def _count(n: int) -> str:
    return _COUNT_WORDS[n] if n < len(_COUNT_WORDS) else f"{n} times"


def normalise(answer: str) -> str:
    """:returns: the answer lower-cased without surrounding blanks and final full stop."""
    return answer.strip().lower().rstrip(".").strip()
