"""A day's figures for the supervisors' dashboard: calls, containment, transfers, abandons and waits.

Each backend counts in SQL, grouped by the hour of the window the call started or
the caller joined the queue in (``CallGroup``, ``WaitGroup``: a few rows per hour,
however many calls there were); ``fold_figures`` turns those groups into the
figures, the same for every backend. What the figures mean:

- calls: calls that started in the window;
- containment: of those calls that have ended, the share the bot handled end to
  end (ended normally with outcome ``completed``: not transferred, not hung up on,
  not cut by a crash); None before any call has ended;
- transfers by reason: calls handed towards a person, by the transfer's reason (a
  caller still waiting in the queue counts from the moment they joined it);
- abandon rate: of the callers who joined a queue in the window and are no longer
  waiting, the share who hung up before an agent took them (a callback request is
  not an abandon); None before any caller has left the line;
- average wait: over the callers whose wait has ended (an agent took them, they
  hung up or asked for a callback); the longest wait also counts the callers
  still waiting, up to ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Iterable

#: transfers whose reason was not recorded
UNSPECIFIED_REASON = "unspecified"


@dataclass(frozen=True, slots=True)
class CallGroup:
    """Calls that started in one hour of the window with the same status, outcome and transfer reason."""

    #: hours from the window's start (0 = the first hour)
    hour: int
    status: str
    outcome: str | None
    #: the transfer reason (the ended call's, else its queue entry's); None: not transferred
    reason: str | None
    calls: int


@dataclass(frozen=True, slots=True)
class WaitGroup:
    """Queue entries that joined in one hour of the window and are now in the same state."""

    hour: int
    state: str
    entries: int
    #: the sum and number of the waits that have ended (entries no longer waiting with a wait_s)
    ended_wait_total_s: float
    ended_waits: int
    #: the longest wait: an ended one, or one still going on up to ``now``
    longest_wait_s: float | None


@dataclass(frozen=True, slots=True)
class HourFigures:
    """One hour of the day, for the chart."""

    #: the hour's start in the day's time zone
    start: datetime
    calls: int = 0
    transfers: int = 0
    abandoned: int = 0
    average_wait_s: float | None = None
    longest_wait_s: float | None = None

    def to_json(self) -> dict:
        return {"start": self.start.isoformat(), "calls": self.calls, "transfers": self.transfers,
                "abandoned": self.abandoned, "average_wait_s": _round(self.average_wait_s),
                "longest_wait_s": _round(self.longest_wait_s)}


@dataclass(frozen=True, slots=True)
class DayFigures:
    """The figures of one window (a day, in the service's time zone), see the module's doc."""

    since: datetime
    until: datetime
    calls: int = 0
    #: calls that have ended (the containment's denominator)
    ended: int = 0
    #: calls the bot handled end to end
    contained: int = 0
    transfers_by_reason: dict[str, int] = field(default_factory=dict)
    #: callers who joined a queue
    queued: int = 0
    #: callers still waiting now
    waiting: int = 0
    #: callers an agent took
    answered: int = 0
    abandoned: int = 0
    callbacks: int = 0
    average_wait_s: float | None = None
    longest_wait_s: float | None = None
    hours: tuple[HourFigures, ...] = ()

    @property
    def transfers(self) -> int:
        return sum(self.transfers_by_reason.values())

    @property
    def containment(self) -> float | None:
        return self.contained / self.ended if self.ended else None

    @property
    def abandon_rate(self) -> float | None:
        left = self.queued - self.waiting
        return self.abandoned / left if left > 0 else None

    def to_json(self) -> dict:
        return {
            "since": self.since.isoformat(), "until": self.until.isoformat(),
            "calls": self.calls, "ended": self.ended, "contained": self.contained,
            "containment": _round(self.containment), "transfers": self.transfers,
            "transfers_by_reason": dict(sorted(self.transfers_by_reason.items())),
            "queued": self.queued, "waiting": self.waiting, "answered": self.answered,
            "abandoned": self.abandoned, "callbacks": self.callbacks, "abandon_rate": _round(self.abandon_rate),
            "average_wait_s": _round(self.average_wait_s), "longest_wait_s": _round(self.longest_wait_s),
            "hours": [h.to_json() for h in self.hours],
        }


def day_window(day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """Midnight to midnight of ``day`` in ``tz`` (23 or 25 hours on a daylight-saving change)."""
    since = datetime.combine(day, time(0), tz)
    until = datetime.combine(day + timedelta(days=1), time(0), tz)
    return since, until


def hour_starts(since: datetime, until: datetime) -> list[datetime]:
    """The start of each whole hour from ``since`` on (hour ``k`` of the window starts at since + k h)."""
    start, end = since.astimezone(timezone.utc), until.astimezone(timezone.utc)  # elapsed time, not wall time
    count = max(0, -(-int((end - start).total_seconds()) // 3600))
    return [(start + timedelta(hours=k)).astimezone(since.tzinfo) for k in range(count)]


def text_margin(since: datetime, until: datetime) -> tuple[str, str]:
    """Bounds on the ISO text of times in the window, whatever their UTC offset (a day either side): the calls'
    times are their reports' text, so an index on it narrows the search before the parsed time decides."""
    margin = timedelta(days=1)
    return ((since - margin).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
            (until + margin).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))


def fold_figures(since: datetime, until: datetime, calls: Iterable[CallGroup],
                 waits: Iterable[WaitGroup]) -> DayFigures:
    """The day's figures from the backend's groups (pure: the same groups give the same figures)."""
    starts = hour_starts(since, until)
    per_hour = [dict(calls=0, transfers=0, abandoned=0, wait_total=0.0, waits=0, longest=None) for _ in starts]

    def slot(hour: int) -> dict | None:
        return per_hour[hour] if 0 <= hour < len(per_hour) else None

    total = ended = contained = 0
    reasons: dict[str, int] = {}
    for g in calls:
        total += g.calls
        if g.status != "active":
            ended += g.calls
        if g.status == "ended" and g.outcome == "completed" and g.reason is None:
            contained += g.calls
        if g.reason is not None:
            reason = g.reason or UNSPECIFIED_REASON
            reasons[reason] = reasons.get(reason, 0) + g.calls
        if (h := slot(g.hour)) is not None:
            h["calls"] += g.calls
            h["transfers"] += g.calls if g.reason is not None else 0

    queued = waiting = answered = abandoned = callbacks = 0
    wait_total, wait_count, longest = 0.0, 0, None
    for w in waits:
        queued += w.entries
        if w.state == "waiting":
            waiting += w.entries
        elif w.state == "abandoned":
            abandoned += w.entries
        elif w.state == "callback":
            callbacks += w.entries
        else:
            answered += w.entries
        wait_total += w.ended_wait_total_s
        wait_count += w.ended_waits
        longest = _max(longest, w.longest_wait_s)
        if (h := slot(w.hour)) is not None:
            h["abandoned"] += w.entries if w.state == "abandoned" else 0
            h["wait_total"] += w.ended_wait_total_s
            h["waits"] += w.ended_waits
            h["longest"] = _max(h["longest"], w.longest_wait_s)

    hours = tuple(
        HourFigures(start, h["calls"], h["transfers"], h["abandoned"],
                    h["wait_total"] / h["waits"] if h["waits"] else None, h["longest"])
        for start, h in zip(starts, per_hour))
    return DayFigures(since, until, total, ended, contained, reasons, queued, waiting, answered, abandoned,
                      callbacks, wait_total / wait_count if wait_count else None, longest, hours)


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
