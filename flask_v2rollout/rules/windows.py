"""Decision windows: when the autopilot may advance a rollout (pure: no Flask, no SQL, no clock).

The runbook decides on working days in office hours and holds over the weekend.
``V2ROLLOUT_DECISION_WINDOWS`` says so as text: windows separated by ``;``, each
``DAYS HH:MM-HH:MM [ZONE]``::

    Mon-Fri 09:00-17:00 Europe/London
    Mon,Wed 10:00-12:00 UTC; Fri 09:00-11:00 America/New_York

``DAYS`` is a day (``Mon``), a range (``Mon-Fri``) or a comma-separated list of
either; the zone is an IANA name read with :mod:`zoneinfo` (default ``UTC``), so a
window follows that zone's daylight saving time. A window ends before it starts
on the same day (``end`` after ``start``; ``24:00`` is the end of the day).

Only advances wait for a window; rollbacks are never held.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"(?P<days>[A-Za-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})(?:\s+(?P<zone>\S+))?")
#: how far ahead :meth:`DecisionWindows.next_open` looks (every weekly window opens within 8 days)
_LOOKAHEAD_DAYS = 8


@dataclass(frozen=True)
class Window:
    """One weekly window: days of the week (0 = Monday), start and end minute of the day, zone."""

    days: frozenset[int]
    start_min: int
    end_min: int
    zone: str

    def bounds(self, day: date) -> tuple[datetime, datetime]:
        """This window's start and end on local ``day``, as aware datetimes (wall-clock times of its zone)."""
        midnight = datetime.combine(day, time(), tzinfo=ZoneInfo(self.zone))
        return midnight + timedelta(minutes=self.start_min), midnight + timedelta(minutes=self.end_min)


@dataclass(frozen=True)
class DecisionWindows:
    """The windows in which the autopilot may advance; none at all means always."""

    windows: tuple[Window, ...]
    text: str

    def is_open(self, ts: float) -> bool:
        """Whether epoch second ``ts`` falls inside some window."""
        return self.next_open(ts) == ts

    def next_open(self, ts: float) -> float:
        """``ts`` itself when inside a window, else the epoch second the next window opens."""
        if not self.windows:
            return ts
        now = datetime.fromtimestamp(ts, UTC)
        best: float | None = None
        for window in self.windows:
            local = now.astimezone(ZoneInfo(window.zone)).date()
            for offset in range(-1, _LOOKAHEAD_DAYS):
                day = local + timedelta(days=offset)
                if day.weekday() not in window.days:
                    continue
                start, end = window.bounds(day)
                if start <= now < end:
                    return ts
                if start > now:
                    at = start.timestamp()
                    best = at if best is None else min(best, at)
                    break
        assert best is not None  # a window has at least one day, so it opens within a week
        return best


def parse_windows(text: str) -> DecisionWindows:
    """``"Mon-Fri 09:00-17:00 Europe/London"`` → :class:`DecisionWindows`; ``ValueError`` says what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"decision windows are text such as 'Mon-Fri 09:00-17:00 Europe/London', got {text!r}")
    windows = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        match = _WINDOW.fullmatch(part)
        if match is None:
            raise ValueError(f"decision window {part!r} must look like 'Mon-Fri 09:00-17:00 Europe/London'")
        zone = match["zone"] or "UTC"
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"decision window {part!r}: unknown time zone {zone!r}") from None
        start, end = _minute(match["start"], part), _minute(match["end"], part)
        if end <= start:
            raise ValueError(f"decision window {part!r}: the end must be after the start on the same day")
        windows.append(Window(_days(match["days"], part), start, end, zone))
    return DecisionWindows(tuple(windows), text.strip())


def _minute(text: str, part: str) -> int:
    hours, minutes = (int(x) for x in text.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"decision window {part!r}: {text} is not a time of day")
    return hours * 60 + minutes


def _days(text: str, part: str) -> frozenset[int]:
    out: set[int] = set()
    for item in text.lower().split(","):
        ends = item.split("-")
        if len(ends) > 2 or not all(e in DAYS for e in ends):
            raise ValueError(f"decision window {part!r}: days are Mon … Sun, a range Mon-Fri or a list Mon,Wed")
        first, last = DAYS.index(ends[0]), DAYS.index(ends[-1])
        if last < first:
            raise ValueError(f"decision window {part!r}: the day range {item} runs backwards")
        out.update(range(first, last + 1))
    return frozenset(out)
