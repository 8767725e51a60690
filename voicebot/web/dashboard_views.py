"""What the supervisors' dashboard shows, as data and as HTML: pure functions over store records.

Every view is built from the store's records once, masked as it is built
(personal identity codes by ``voicebot.privacy``, written and spoken; callers'
phone numbers down to their first and last digits), and both its JSON and its
HTML come from that masked view, so neither can show what the other hides.
All text goes into HTML through ``html.escape``; the chart is SVG made of
numbers and escaped labels.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from html import escape
from typing import Iterable, Mapping, Sequence
from urllib.parse import quote

from voicebot.privacy import mask_json, mask_personal_data, mask_personal_id
from voicebot.storage.base import ApplicationRecord, CallRecord
from voicebot.storage.figures import DayFigures
from voicebot.storage.records import Agent, Callback, QueueEntry

#: a phone number keeps this many digits at each end when masked
PHONE_KEPT_DIGITS = 3
#: cells a spreadsheet would run as a formula start with one of these (CSV injection)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_DIGIT = re.compile(r"\d")
#: a phone number written in text: eight or more digits, maybe grouped by spaces or dashes, maybe after a "+"
_WRITTEN_PHONE = re.compile(r"(?<![\w*])\+?\d(?:[ -]?\d){7,}(?!\w)")
#: the export's columns before the form's fields
EXPORT_COLUMNS = ("call_id", "form", "status", "reference", "caller", "call_status", "created_at", "updated_at",
                  "submitted_at")


def mask_phone(number: str) -> str:
    """"+358401234567" -> "+358******567": the first and last digits stay (enough to tell callers apart),
    a short number keeps only its last two. Text with no digits (a SIP name) is left as it is."""
    digits = len(_DIGIT.findall(number))
    keep_head, keep_tail = (PHONE_KEPT_DIGITS, PHONE_KEPT_DIGITS) if digits >= 9 else (0, min(2, digits - 1))
    out, seen = [], 0
    for ch in number:
        if ch.isdigit():
            seen += 1
            out.append(ch if seen <= keep_head or seen > digits - keep_tail else "*")
        else:
            out.append(ch)
    return "".join(out)


def mask_text(text: str) -> str:
    """Transcript text and field values as the dashboard shows them: identity codes masked written and spoken
    (voicebot.privacy), and phone numbers written out in digits masked as ``mask_phone`` does."""
    return _WRITTEN_PHONE.sub(lambda m: mask_phone(m.group()), mask_personal_data(text))


def mask_fields_for_view(fields: Mapping[str, object]) -> dict[str, object]:
    """A form's fields as the dashboard shows them (text masked as ``mask_text``)."""
    return {name: mask_text(value) if isinstance(value, str) else mask_json(value) for name, value in fields.items()}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


# ---------------------------------------------------------------------- views


@dataclass(frozen=True, slots=True)
class TurnView:
    speaker: str
    text: str
    start_s: float
    intent: str | None

    def to_json(self) -> dict:
        return {"speaker": self.speaker, "text": self.text, "start_s": round(self.start_s, 1), "intent": self.intent}


@dataclass(frozen=True, slots=True)
class CallView:
    """A call on the line: who, since when, and what has been said (the last turns), masked."""

    call_id: str
    caller: str
    started_at: str
    status: str
    intents: tuple[str, ...]
    form: str | None
    fields: dict[str, object]
    turns: tuple[TurnView, ...]
    #: turns left out before the shown ones
    earlier_turns: int

    @classmethod
    def of(cls, record: CallRecord, last_turns: int) -> "CallView":
        report = record.report
        shown = report.turns[-last_turns:] if last_turns > 0 else []
        intake = report.intake
        return cls(
            report.call_id, mask_phone(mask_personal_id(report.caller_id)), report.started_at, record.status,
            tuple(dict.fromkeys(report.intents)), intake.form if intake else None,
            mask_fields_for_view(intake.fields) if intake else {},
            tuple(TurnView(t.speaker, mask_text(t.text), t.start_s, t.intent) for t in shown),
            len(report.turns) - len(shown))

    def to_json(self) -> dict:
        return {"call_id": self.call_id, "caller": self.caller, "started_at": self.started_at, "status": self.status,
                "intents": list(self.intents), "form": self.form, "fields": self.fields,
                "turns": [t.to_json() for t in self.turns], "earlier_turns": self.earlier_turns}


@dataclass(frozen=True, slots=True)
class QueueRow:
    """A caller on the line in a queue, with the context the bot gathered."""

    entry_id: int
    call_id: str
    queue: str
    state: str
    #: 1 = next to be served in its queue; None once an agent has it
    position: int | None
    priority: int
    reason: str
    caller: str
    enqueued_at: datetime
    #: seconds waited so far (still waiting: up to now)
    wait_s: float
    agent: str | None
    intents: tuple[str, ...]
    last_caller_words: str
    form: str | None
    fields: dict[str, object]

    @classmethod
    def of(cls, entry: QueueEntry, position: int | None, record: CallRecord | None, now: datetime) -> "QueueRow":
        wait_s = (now - entry.enqueued_at).total_seconds() if entry.state == "waiting" else (entry.wait_s or 0.0)
        report = record.report if record is not None else None
        said = [t.text for t in report.turns if t.speaker == "caller" and t.text.strip()] if report else []
        intake = report.intake if report else None
        return cls(entry.entry_id, entry.call_id, entry.queue, entry.state, position, entry.priority, entry.reason,
                   mask_phone(mask_personal_id(entry.caller_id)), entry.enqueued_at, max(0.0, wait_s), entry.agent,
                   tuple(dict.fromkeys(report.intents)) if report else (),
                   mask_text(said[-1]) if said else "", intake.form if intake else None,
                   mask_fields_for_view(intake.fields) if intake else {})

    def to_json(self) -> dict:
        return {"entry_id": self.entry_id, "call_id": self.call_id, "queue": self.queue, "state": self.state,
                "position": self.position, "priority": self.priority, "reason": self.reason, "caller": self.caller,
                "enqueued_at": _iso(self.enqueued_at), "wait_s": round(self.wait_s, 1), "agent": self.agent,
                "context": {"intents": list(self.intents), "last_caller_words": self.last_caller_words,
                            "form": self.form, "fields": self.fields}}


@dataclass(frozen=True, slots=True)
class AgentRow:
    name: str
    state: str
    state_since: datetime | None
    queues: tuple[str, ...]
    #: the call the agent has (being rung or talking), if any
    call_id: str | None

    @classmethod
    def of(cls, agent: Agent, handling: Mapping[str, str]) -> "AgentRow":
        return cls(agent.name, agent.state, agent.state_since, agent.queues, handling.get(agent.name))

    def to_json(self) -> dict:
        return {"name": self.name, "state": self.state, "state_since": _iso(self.state_since),
                "queues": list(self.queues), "call_id": self.call_id}


@dataclass(frozen=True, slots=True)
class CallbackRow:
    callback_id: int
    call_id: str
    queue: str
    number: str
    state: str
    created_at: datetime
    claimed_by: str | None

    @classmethod
    def of(cls, callback: Callback) -> "CallbackRow":
        return cls(callback.callback_id, callback.call_id, callback.queue, mask_phone(callback.number),
                   callback.state, callback.created_at, callback.claimed_by)

    def to_json(self) -> dict:
        return {"callback_id": self.callback_id, "call_id": self.call_id, "queue": self.queue,
                "number": self.number, "state": self.state, "created_at": _iso(self.created_at),
                "claimed_by": self.claimed_by}


@dataclass(frozen=True, slots=True)
class ApplicationView:
    call_id: str
    form: str
    status: str
    reference: str | None
    caller: str
    call_status: str
    fields: dict[str, object]
    created_at: str
    updated_at: str
    submitted_at: str | None

    @classmethod
    def of(cls, record: ApplicationRecord) -> "ApplicationView":
        intake = record.intake
        return cls(record.call_id, intake.form, intake.status, intake.reference,
                   mask_phone(mask_personal_id(record.caller_id)), record.call_status,
                   mask_fields_for_view(intake.fields), record.created_at, record.updated_at, record.submitted_at)

    def to_json(self) -> dict:
        return {"call_id": self.call_id, "form": self.form, "status": self.status, "reference": self.reference,
                "caller": self.caller, "call_status": self.call_status, "fields": self.fields,
                "created_at": self.created_at, "updated_at": self.updated_at, "submitted_at": self.submitted_at}


def queue_rows(entries: Sequence[QueueEntry], waiting_in_order: Sequence[QueueEntry],
               records: Mapping[str, CallRecord], now: datetime) -> list[QueueRow]:
    """Waiting callers by queue and position, then those an agent has, oldest first."""
    positions: dict[int, int] = {}
    per_queue: dict[str, int] = {}
    for entry in waiting_in_order:
        per_queue[entry.queue] = per_queue.get(entry.queue, 0) + 1
        positions[entry.entry_id] = per_queue[entry.queue]
    rows = [QueueRow.of(e, positions.get(e.entry_id) if e.state == "waiting" else None, records.get(e.call_id), now)
            for e in entries]
    return sorted(rows, key=lambda r: (r.position is None, r.queue if r.position else "", r.position or 0,
                                       r.enqueued_at, r.entry_id))


# ---------------------------------------------------------------------- HTML


def duration_text(seconds: float | None) -> str:
    """12 -> "12 s", 75 -> "1 min 15 s", 3725 -> "1 h 02 min"."""
    if seconds is None:
        return "–"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def percent_text(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.0f} %"


def clock_text(moment: datetime | None, tz: tzinfo) -> str:
    return "–" if moment is None else moment.astimezone(tz).strftime("%H:%M:%S")


def _stamp_text(text: str | None, tz: tzinfo) -> str:
    """A stored ISO time as the day's clock time (and date when it is not today's); the text if unreadable."""
    if not text:
        return "–"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return escape(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return escape(moment.astimezone(tz).strftime("%Y-%m-%d %H:%M"))


def _fields_html(fields: Mapping[str, object]) -> str:
    if not fields:
        return ""
    items = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in fields.items())
    return f'<dl class="fields">{items}</dl>'


def _since(moment: datetime, seconds: float) -> str:
    """A wait that the page's script keeps counting from ``moment``."""
    return f'<span class="ticking" data-since="{escape(moment.isoformat())}">{escape(duration_text(seconds))}</span>'


def _table(kind: str, headings: Sequence[str], rows: Sequence[str], empty: str) -> str:
    """A table of already rendered rows, or the ``empty`` note when there are none."""
    if not rows:
        return f'<p class="empty">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headings)
    return f'<table class="{kind}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render_queue(rows: Sequence[QueueRow]) -> str:
    body = []
    for r in rows:
        where = (f"#{r.position} in {escape(r.queue)}" if r.position is not None
                 else f"{escape(r.state)} to {escape(r.agent or '?')}")
        wait = _since(r.enqueued_at, r.wait_s) if r.state == "waiting" else escape(duration_text(r.wait_s))
        context = []
        if r.intents:
            context.append(f'<span class="intents">{escape(", ".join(r.intents))}</span>')
        if r.last_caller_words:
            context.append(f'<q>{escape(r.last_caller_words)}</q>')
        if r.form:
            context.append(f'<span class="form">{escape(r.form)}</span>{_fields_html(r.fields)}')
        body.append(
            f'<tr data-entry="{r.entry_id}" data-call="{escape(r.call_id)}" class="state-{escape(r.state)}">'
            f'<td class="position">{where}</td><td class="wait">{wait}</td>'
            f'<td class="reason">{escape(r.reason or "–")}</td><td class="caller">{escape(r.caller or "–")}</td>'
            f'<td class="context">{"".join(context) or "–"}</td></tr>')
    return _table("queue", ("Position", "Waiting", "Reason", "Caller", "What the bot learned"), body,
                  "Nobody is waiting.")


def render_call(view: CallView, tz: tzinfo) -> str:
    """One active call's card with its latest turns (the script swaps cards by ``data-call``)."""
    turns = "".join(
        f'<li class="{escape(t.speaker)}"><span class="who">{"Bot" if t.speaker == "bot" else "Caller"}</span> '
        f'{escape(t.text)}{f" <em>({escape(t.intent)})</em>" if t.intent else ""}</li>' for t in view.turns)
    earlier = f'<p class="earlier">{view.earlier_turns} earlier turn(s)</p>' if view.earlier_turns else ""
    intents = f'<p class="intents">{escape(", ".join(view.intents))}</p>' if view.intents else ""
    form = f'<p class="form">{escape(view.form)}</p>{_fields_html(view.fields)}' if view.form else ""
    return (f'<article class="call" data-call="{escape(view.call_id)}"><header><strong>{escape(view.caller or "–")}'
            f'</strong> since {_stamp_text(view.started_at, tz)} <code>{escape(view.call_id)}</code></header>'
            f'{intents}{earlier}<ol class="transcript">{turns}</ol>{form}</article>')


def render_calls(views: Iterable[CallView], tz: tzinfo) -> str:
    cards = "".join(render_call(v, tz) for v in views)
    return f'<div class="cards">{cards}</div><p class="empty">No calls with the bot right now.</p>'


def render_agents(rows: Sequence[AgentRow], tz: tzinfo) -> str:
    body = [f'<tr data-agent="{escape(r.name)}" class="agent-{escape(r.state)}"><td>{escape(r.name)}</td>'
            f'<td class="state">{escape(r.state)}</td><td>{clock_text(r.state_since, tz)}</td>'
            f'<td>{escape(", ".join(r.queues))}</td><td>{escape(r.call_id or "–")}</td></tr>' for r in rows]
    return _table("agents", ("Agent", "State", "Since", "Queues", "Call"), body, "No agents.")


def render_callbacks(rows: Sequence[CallbackRow], tz: tzinfo) -> str:
    body = [f'<tr data-callback="{r.callback_id}"><td>{escape(r.number)}</td><td>{escape(r.queue)}</td>'
            f'<td>{escape(r.state)}</td><td>{escape(r.claimed_by or "–")}</td>'
            f'<td>{escape(r.created_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"))}</td></tr>' for r in rows]
    return _table("callbacks", ("Number", "Queue", "State", "Agent", "Asked at"), body, "No callbacks to make.")


def application_path(call_id: str) -> str:
    return f"/dashboard/applications/{quote(call_id, safe='')}"


def render_applications(views: Sequence[ApplicationView], tz: tzinfo) -> str:
    links = ('<p class="exports">Export: <a href="/api/applications/export.csv">CSV</a> · '
             '<a href="/api/applications/export.json">JSON</a> · submitted only: '
             '<a href="/api/applications/export.csv?status=submitted">CSV</a> · '
             '<a href="/api/applications/export.json?status=submitted">JSON</a></p>')
    body = [f'<tr class="application-{escape(v.status)}"><td><a href="{escape(application_path(v.call_id))}">'
            f'{escape(v.reference or "(incomplete)")}</a></td><td>{escape(v.form)}</td><td>{escape(v.status)}</td>'
            f'<td>{escape(v.caller or "–")}</td><td>{_stamp_text(v.updated_at, tz)}</td>'
            f'<td>{_fields_html(v.fields)}</td></tr>' for v in views]
    return links + _table("applications", ("Reference", "Form", "Status", "Caller", "Updated", "Fields"), body,
                          "No applications yet.")


def render_application(view: ApplicationView, call: CallView | None, tz: tzinfo) -> str:
    """The detail page's body."""
    rows = "".join(f"<tr><th>{escape(label)}</th><td>{value}</td></tr>" for label, value in (
        ("Reference", escape(view.reference or "–")), ("Form", escape(view.form)), ("Status", escape(view.status)),
        ("Caller", escape(view.caller or "–")), ("Call", f"<code>{escape(view.call_id)}</code> ({escape(view.call_status)})"),
        ("Started", _stamp_text(view.created_at, tz)), ("Updated", _stamp_text(view.updated_at, tz)),
        ("Submitted", _stamp_text(view.submitted_at, tz))))
    fields = _fields_html(view.fields) or '<p class="empty">No fields filled.</p>'
    transcript = ""
    if call is not None:
        turns = "".join(f'<li class="{escape(t.speaker)}"><span class="who">{"Bot" if t.speaker == "bot" else "Caller"}'
                        f'</span> {escape(t.text)}</li>' for t in call.turns)
        transcript = f'<h2>Transcript</h2><ol class="transcript">{turns}</ol>'
    return (f'<p><a href="/dashboard">← Dashboard</a></p><h1>Application {escape(view.reference or "(incomplete)")}'
            f'</h1><table class="detail">{rows}</table><h2>Fields</h2>{fields}{transcript}')


def render_figures(figures: DayFigures, tz: tzinfo) -> str:
    reasons = "".join(f"<li>{escape(reason)}: {count}</li>" for reason, count in
                      sorted(figures.transfers_by_reason.items(), key=lambda kv: (-kv[1], kv[0])))
    tiles = [
        ("calls", "Calls", str(figures.calls), f"{figures.ended} ended"),
        ("containment", "Handled by the bot", percent_text(figures.containment),
         f"{figures.contained} of {figures.ended} ended calls"),
        ("transfers", "Transfers", str(figures.transfers), f'<ul class="reasons">{reasons}</ul>' if reasons else ""),
        ("abandon-rate", "Abandoned in queue", percent_text(figures.abandon_rate),
         f"{figures.abandoned} of {figures.queued - figures.waiting} who left the line"),
        ("average-wait", "Average wait", duration_text(figures.average_wait_s), f"{figures.answered} answered"),
        ("longest-wait", "Longest wait", duration_text(figures.longest_wait_s), f"{figures.waiting} waiting now"),
    ]
    html = "".join(f'<div class="tile" data-figure="{key}"><span class="label">{escape(label)}</span>'
                   f'<span class="value">{escape(value)}</span><span class="note">{note}</span></div>'
                   for key, label, value, note in tiles)
    day = figures.since.astimezone(tz).strftime("%A %d %B %Y")
    return (f'<p class="day">{escape(day)}</p><div class="tiles">{html}</div>'
            f'<figure>{hourly_chart_svg(figures, tz)}<figcaption>Calls (bars) and average wait (line) '
            'per hour</figcaption></figure>')


# ---------------------------------------------------------------------- the chart

CHART_WIDTH, CHART_HEIGHT = 720, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 48, 12, 28


def _nice_ceiling(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at least ``value`` (and at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def hourly_chart_svg(figures: DayFigures, tz: tzinfo) -> str:
    """Calls per hour as bars (left axis) and the average wait per hour as a line (right axis, minutes)."""
    hours = figures.hours
    plot_w, plot_h = CHART_WIDTH - _LEFT - _RIGHT, CHART_HEIGHT - _TOP - _BOTTOM
    slot = plot_w / max(1, len(hours))
    calls_top = _nice_ceiling(max((h.calls for h in hours), default=0))
    waits_min = [None if h.average_wait_s is None else h.average_wait_s / 60 for h in hours]
    wait_top = _nice_ceiling(max((w for w in waits_min if w is not None), default=0))
    base = _TOP + plot_h
    parts = [f'<line class="axis" x1="{_LEFT}" y1="{base}" x2="{_LEFT + plot_w}" y2="{base}"/>',
             f'<text class="axis-label" x="{_LEFT - 6}" y="{_TOP + 4}" text-anchor="end">{calls_top:g}</text>',
             f'<text class="axis-label" x="{_LEFT - 6}" y="{base}" text-anchor="end">0</text>',
]
    points = []
    for k, (hour, wait) in enumerate(zip(hours, waits_min)):
        x = _LEFT + k * slot
        height = plot_h * hour.calls / calls_top
        label = hour.start.astimezone(tz).strftime("%H")
        tip = (f"{label}:00 – {hour.calls} call(s), {hour.transfers} transfer(s), average wait "
               f"{duration_text(hour.average_wait_s)}")
        parts.append(f'<rect class="bar" data-hour="{escape(label)}" data-calls="{hour.calls}" x="{x + slot * 0.15:.1f}" '
                     f'y="{base - height:.1f}" width="{slot * 0.7:.1f}" height="{height:.1f}">'
                     f'<title>{escape(tip)}</title></rect>')
        if k % 3 == 0:
            parts.append(f'<text class="axis-label" x="{x + slot / 2:.1f}" y="{base + 16}" '
                         f'text-anchor="middle">{escape(label)}</text>')
        if wait is not None:
            points.append(f"{x + slot / 2:.1f},{base - plot_h * wait / wait_top:.1f}")
    if points:
        parts.append(f'<text class="axis-label wait" x="{_LEFT + plot_w + 6}" y="{_TOP + 4}">{wait_top:g} min</text>')
        parts.append(f'<polyline class="wait-line" fill="none" points="{" ".join(points)}"/>')
        parts.extend(f'<circle class="wait-point" cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="3"/>'
                     for p in points)
    label = f"Calls and average wait per hour, {figures.since.astimezone(tz).strftime('%Y-%m-%d')}"
    return (f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>')


# ---------------------------------------------------------------------- exports


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def applications_csv(views: Sequence[ApplicationView]) -> str:
    """One row per application: the fixed columns, then one per field name any of them has (sorted)."""
    names = sorted({name for v in views for name in v.fields})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*EXPORT_COLUMNS, *names])
    for v in views:
        data = v.to_json()
        writer.writerow([_cell(data[c]) for c in EXPORT_COLUMNS] + [_cell(v.fields.get(n)) for n in names])
    return out.getvalue()
