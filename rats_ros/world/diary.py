"""Caption diaries: days to months of one camera's captions with exact ground truth, for
measuring whether a question's evidence holds what its answer needs (``rats-ros eval recall``).

A diary is what a steady captioner writes: most clips describe the room in a few stock phrasings;
objects are sighted now and then, each sighting worded like every other object's ("A red mug sits
on the counter." beside "A blue mug sits on the counter."); a repeated event happens a few times
a day in three wordings; two one-off events happen once each; a rare event happens once. Each
seed draws its own rooms, objects, colours and events, so no threshold is tuned to one world.
Questions come with the clips that answer them:

- ``first`` / ``last``: the first / last sighting of an object;
- ``count``: every episode of the repeated event (an episode: 1-3 consecutive clips);
- ``order``: the clips of the two one-off events;
- ``plain``: the rare event (a question with no time word: MMR's case).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rats_ros.records import CaptionRecord

NS = 1_000_000_000
CLIP_S = 32  # 16 frames at 0.5 fps
HORIZON_DAYS = {"day": 1, "week": 7, "month": 30}
START_NS = 1_764_547_200 * NS  # 2025-12-01 00:00 UTC

_ROOMS = ["kitchen", "hallway", "living room", "office", "workshop", "garage", "lab", "lobby"]
_OBJECTS = ["mug", "backpack", "umbrella", "toolbox", "laptop", "helmet", "suitcase", "kettle",
            "basket", "drill"]
_COLOURS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
_SURFACES = ["counter", "shelf", "floor", "desk", "bench", "cart"]
_SCENES = ["The {room} is quiet and nobody is around.",
           "The {room} is empty; the lights are on.",
           "Nothing moves in the {room}.",
           "The camera looks across the {room}; all is still.",
           "A calm view of the {room} with no people in it."]
_DETAILS = ["The light is {light}.", "A {colour} jacket hangs on a hook.", "It is raining "
            "outside.", "The blinds are half closed.", "A radio plays quietly.", "Sunlight falls "
            "across the {surface}.", "A {colour} chair stands by the window.", "The floor is "
            "wet near the door.", "Two boxes are stacked in a corner.", "A plant grows by the "
            "{surface}.", "", "", ""]
_LIGHTS = ["bright", "dim", "warm", "cold", "flickering"]
_SIGHTING = ["A {thing} sits on the {surface} in the {room}.",
             "There is a {thing} on the {surface} of the {room}.",
             "The {thing} is on the {surface} in the {room} again."]
_EVENTS = [("front door", ["The front door opens and a visitor walks in.",
                           "A visitor comes in through the front door.",
                           "The front door swings open; someone steps inside."]),
           ("coffee machine", ["Someone makes a drink at the coffee machine.",
                               "A person uses the coffee machine in the corner.",
                               "The coffee machine is running while a person waits."]),
           ("forklift", ["A forklift drives past carrying a pallet.",
                         "The forklift moves a pallet across the floor.",
                         "A pallet goes by on a forklift."])]
_ONE_OFF = [("plumber", "A plumber in overalls repairs the sink."),
            ("pizza delivery", "A pizza delivery arrives and is left on the table."),
            ("window cleaner", "A window cleaner wipes the large windows."),
            ("electrician", "An electrician opens the fuse box on the wall."),
            ("cat", "A grey cat jumps onto the windowsill.")]
_RARE = [("smoke alarm", "The smoke alarm on the ceiling flashes and beeps."),
         ("fire drill", "People walk out calmly during a fire drill."),
         ("broken glass", "A glass falls off the table and breaks on the floor.")]


@dataclass
class Probe:
    """A question and the clip indices its evidence must hold: one group per thing to find
    (a sighting, an episode, an event); recall is the share of groups with a clip shown."""

    kind: str
    question: str
    truth: list[list[int]]


@dataclass
class Diary:
    """One camera's captions (clip index = position) and the probes over them."""

    captions: list[CaptionRecord]
    probes: list[Probe]


def generate(seed: int, horizon: str) -> Diary:
    """The diary of ``horizon`` (``day``, ``week``, ``month``) for world ``seed``."""
    rng = np.random.default_rng(seed)
    days = HORIZON_DAYS[horizon]
    clips = days * 86400 // CLIP_S
    rooms = list(rng.choice(_ROOMS, 3, replace=False))
    texts = [_scene(rng, rooms) for _ in range(clips)]
    probes, used = _events(rng, texts, days)
    probes = _sightings(rng, rooms, texts, used) + probes
    texts = [f"{text} {_detail(rng)}".strip() for text in texts]  # free text: no two alike
    captions = [CaptionRecord(i, START_NS + i * CLIP_S * NS, START_NS + (i * CLIP_S + 30) * NS,
                              text, 16, 3136, 196, 392, 0.4) for i, text in enumerate(texts)]
    return Diary(captions, probes)


def _detail(rng) -> str:
    return str(rng.choice(_DETAILS)).format(light=rng.choice(_LIGHTS),
                                             colour=rng.choice(_COLOURS),
                                             surface=rng.choice(_SURFACES))


def _scene(rng, rooms) -> str:
    return str(rng.choice(_SCENES)).format(room=rng.choice(rooms))


def _sightings(rng, rooms, texts, used: set[int]) -> list[Probe]:
    """Objects sighted in random clips free of events; the tracked one asked about first and
    last."""
    objects = list(rng.choice(_OBJECTS, 3, replace=False))
    colours = list(rng.choice(_COLOURS, 3, replace=False))
    things = [f"{c} {o}" for c in colours for o in objects]  # the tracked one and look-alikes
    tracked = things[0]
    seen = {}
    free = np.array(sorted(set(range(len(texts))) - used))
    for i in rng.choice(free, size=len(texts) // 4, replace=False):
        thing = things[int(rng.integers(len(things)))]
        texts[i] = str(rng.choice(_SIGHTING)).format(thing=thing, surface=rng.choice(_SURFACES),
                                                     room=rng.choice(rooms))
        seen.setdefault(thing, []).append(int(i))
    clips = sorted(seen[tracked])
    return [Probe("first", f"When did you first see the {tracked}?", [[clips[0]]]),
            Probe("last", f"Where was the {tracked} last seen?", [[clips[-1]]])]


def _events(rng, texts, days: int) -> tuple[list[Probe], set[int]]:
    """The repeated event (counted), two one-off events (ordered), a rare one (plain);
    :returns: the probes and the clips they took."""
    n = len(texts)
    name, wordings = _EVENTS[int(rng.integers(len(_EVENTS)))]
    times = int(rng.integers(3, 7)) * days  # 3-6 a day
    starts = np.sort(rng.choice(np.arange(0, n - 3, 8), size=times, replace=False))
    episodes = []
    for s in starts:
        length = int(rng.integers(1, 4))
        episodes.append([int(s) + k for k in range(length)])
        for k in episodes[-1]:
            texts[k] = str(rng.choice(wordings))
    used = {k for e in episodes for k in e}
    free = [i for i in range(n) if i not in used and all(i + d not in used for d in (-1, 1))]
    picks = rng.choice(free, size=3, replace=False)
    (a, a_text), (b, b_text) = (_ONE_OFF[i] for i in rng.choice(len(_ONE_OFF), 2, replace=False))
    rare, rare_text = _RARE[int(rng.integers(len(_RARE)))]
    for clip, text in zip(picks, (a_text, b_text, rare_text), strict=True):
        texts[int(clip)] = text
    verb = {"front door": "open", "coffee machine": "get used", "forklift": "drive past"}[name]
    probes = [Probe("count", f"How many times did the {name} {verb}?", episodes),
              Probe("order", f"Did the {a} come before the {b}?", [[int(picks[0])],
                                                                    [int(picks[1])]]),
              Probe("plain", f"What happened with the {rare}?", [[int(picks[2])]])]
    return probes, used | {int(p) for p in picks}
