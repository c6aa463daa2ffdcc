"""Times as a robot's people read them: local clock times and ages, and the CLI's time words.

A caption line in the answerer's prompt carries its clip's time. With ``time_format`` ``clock``
it is the local start time to the minute in the configured time zone and the age of its end
relative to the question (``[14:03, 2 h 5 min ago, ...]``, the date added when it is not the
question's day: fewer tokens than seconds since the stream began, bench_recall.py); with
``stream`` it is seconds from the stream's first caption (the paper's format, which
the synthetic-world model was trained on); ``auto`` is ``clock`` unless the stamps are
simulation time (before 2000-01-01), where a clock time would read as 1970.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rats_ros.errors import ConfigError, QuestionError

NS = 1_000_000_000
TIME_FORMATS = ("auto", "clock", "stream")
EPOCH_2000_NS = 946_684_800 * NS  # stamps before this are simulation time, not a clock
_LONGEST_AGE = "365 d 23 h ago"  # token counting's worst case: lines never exceed the budget
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|min|m|s)", re.IGNORECASE)
_UNIT_S = {"d": 86400, "h": 3600, "min": 60, "m": 60, "s": 1}


def zone(name: str) -> dt.tzinfo:
    """The time zone called ``name`` (an IANA name such as ``Europe/Berlin``, or ``UTC``);
    empty: the system's. :raises ConfigError: an unknown name."""
    if not name:
        return dt.datetime.now().astimezone().tzinfo
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ConfigError(f"unknown timezone {name!r}: give an IANA name such as "
                          "'Europe/Berlin' or 'UTC', or '' for the system's") from err


def age_text(seconds: float) -> str:
    """``seconds`` before now in words: ``35 s ago``, ``12 min ago``, ``2 h 5 min ago``,
    ``3 d 4 h ago``; a time not before now (clock skew) is ``just now``."""
    s = int(seconds)
    if s <= 0:
        return "just now"
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min ago"
    return f"{s // 86400} d {s % 86400 // 3600} h ago"


@dataclass(frozen=True)
class TimeStyle:
    """How caption spans read in the answerer's prompt.

    :param time_format: ``auto``, ``clock`` or ``stream`` (module docstring).
    :param timezone: IANA name for clock times; empty: the system's.
    :raises ConfigError: an unknown format or time zone.
    """

    time_format: str = "auto"
    timezone: str = ""

    def __post_init__(self):
        if self.time_format not in TIME_FORMATS:
            raise ConfigError(f"time_format must be one of {TIME_FORMATS}, got "
                              f"{self.time_format!r}")
        zone(self.timezone)

    def uses_clock(self, origin_ns: int) -> bool:
        """Whether spans of a stream starting at ``origin_ns`` read as clock times."""
        if self.time_format == "auto":
            return origin_ns >= EPOCH_2000_NS
        return self.time_format == "clock"

    def span(self, start_ns: int, end_ns: int, origin_ns: int, now_ns: int | None) -> str:
        """One caption's time. :param now_ns: the question's time (None: the worst-case age
        and date, for counting a line's tokens before a question exists)."""
        if not self.uses_clock(origin_ns):
            return f"{(start_ns - origin_ns) / NS:.1f}s-{(end_ns - origin_ns) / NS:.1f}s"
        age = _LONGEST_AGE if now_ns is None else age_text((now_ns - end_ns) / NS)
        return f"{self._minute(start_ns, now_ns)}, {age}"

    def between(self, first_ns: int, last_ns: int, origin_ns: int, now_ns: int) -> str:
        """A span of several captions, for the prompt's notes: ``between 08:00 and 10:30``."""
        if not self.uses_clock(origin_ns):
            first, last = (first_ns - origin_ns) / NS, (last_ns - origin_ns) / NS
            return f"between {first:.1f}s and {last:.1f}s"
        return f"between {self._minute(first_ns, now_ns)} and {self._minute(last_ns, now_ns)}"

    def _minute(self, stamp_ns: int, now_ns: int | None) -> str:
        """``14:03`` on the question's day, else ``2026-12-05 14:03`` (a line's start: clips
        are shorter than a minute, and lines are in time order, so minutes place them)."""
        tz = zone(self.timezone)
        when = dt.datetime.fromtimestamp(stamp_ns / NS, tz)
        today = None if now_ns is None else dt.datetime.fromtimestamp(now_ns / NS, tz).date()
        return when.strftime("%H:%M" if when.date() == today else "%Y-%m-%d %H:%M")

    def day_start_ns(self, now_ns: int) -> int:
        """Local midnight of ``now_ns``'s day: lines from then on are written without a date."""
        now = dt.datetime.fromtimestamp(now_ns / NS, zone(self.timezone))
        return round(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * NS)

    def now_line(self, origin_ns: int, now_ns: int) -> str:
        """The prompt's statement of the question's time (clock format only, else empty)."""
        if not self.uses_clock(origin_ns):
            return ""
        now = dt.datetime.fromtimestamp(now_ns / NS, zone(self.timezone))
        return f"It is now {now.strftime('%A %Y-%m-%d %H:%M:%S %Z')}."

    def clock_text(self, stamp_ns: int, now_ns: int) -> str:
        """One stamp for people: ``2026-12-07 14:03:12 CET (2 h 5 min ago)``."""
        when = dt.datetime.fromtimestamp(stamp_ns / NS, zone(self.timezone))
        return f"{when.strftime('%Y-%m-%d %H:%M:%S %Z')} ({age_text((now_ns - stamp_ns) / NS)})"


def parse_when(text: str, now_ns: int | None = None, timezone: str = "") -> int:
    """A CLI time in ns since the epoch: a duration back from now (``2h``, ``90min``,
    ``1h30m``, ``1d``), an ISO time (``2026-12-07T09:00``, local to ``timezone`` unless it
    names its offset), or seconds on the input's clock (``1733562000``, ``0`` = open end).

    :raises QuestionError: none of these, or a time before the epoch.
    """
    text = text.strip()
    now_ns = time.time_ns() if now_ns is None else now_ns
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not 0.0 <= seconds <= 1e11:  # also false for nan
            raise QuestionError(f"{text!r}: seconds must lie in [0, 1e11]")
        return round(seconds * NS)
    parts = _DURATION.findall(text)
    if parts and _DURATION.sub("", text).strip() == "":
        back = sum(float(v) * _UNIT_S[u.lower()] for v, u in parts)
        return max(0, now_ns - round(back * NS))
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise QuestionError(f"{text!r} is not a time: give a duration back from now (2h, "
                            "90min, 1d), an ISO time (2026-12-07T09:00) or seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone(timezone))
    stamp = round(when.timestamp() * NS)
    if stamp < 0:
        raise QuestionError(f"{text!r} is before 1970")
    return stamp
