"""The agent view: a server-rendered page where an agent works the queue, and its forms.

``GET /agent``: the agent's state (available / away buttons), the caller in hand
(state, reason, what the bot learned, a button that opens the identity code
through the audited ``POST /api/calls/{id}/personal-id``, and "done" with a
note), else the next caller's context and "accept", the waiting callers of
their queues, and the callbacks (claim, done, failed). A supervisor sees every
queue and callback here without the controls.

Forms post to ``/agent/...`` with the session's CSRF token and land back on the
page (303); the work is done by the same functions as the JSON API
(voicebot.web.agent_api). A little plain JavaScript opens the identity code and
reloads the page every few seconds while nothing is being typed.
"""

from __future__ import annotations

import html
from string import Template
from typing import Any

from aiohttp import web

from voicebot.privacy import mask_json
from voicebot.storage.base import CallStore
from voicebot.web.agent_api import (
    AGENT_URI_CHECK, DESK_STORE, DeskRefusal, accept, add_agent_api_routes, callbacks_for, claim, close,
    desk_of, finish, queue_views, set_agent_state, web_now,
)
from voicebot.web.auth import CSRF_FIELD, Principal, current_user, roles
from voicebot.web.pages import logout_form, page, see_other

#: the page reloads this often while nothing is typed (an agent must see a new caller without a click)
REFRESH_S = 5

_STYLE = ("<style>body{max-width:60rem}table{border-collapse:collapse;width:100%}"
          "td,th{border-bottom:1px solid #ccc;padding:.25rem .4rem;text-align:left;vertical-align:top}"
          "section{margin:1.5rem 0}form.inline{display:inline}textarea{width:100%;min-height:3rem}"
          ".muted{color:#666}.caller{background:#f4f7ff;padding:.6rem 1rem;border-radius:.4rem}"
          "ol.transcript li{margin:.15rem 0}</style>")

_DESK = Template("""$style<main id="desk" data-csrf="$csrf">
<h1>Agent desk</h1>
<p>Signed in as <strong>$name</strong> ($role)$about</p>
$error$controls
$current
$next
<section id="waiting"><h2>Waiting callers</h2>
$waiting</section>
<section id="callbacks"><h2>Callbacks</h2>
$callbacks</section>
$logout
</main>
<script>
(() => {
  const desk = document.getElementById("desk");
  const reveal = document.getElementById("reveal");
  if (reveal) reveal.addEventListener("click", async () => {
    const out = document.getElementById("revealed");
    const answer = await fetch("/api/calls/" + encodeURIComponent(reveal.dataset.call) + "/personal-id",
                               {method: "POST", headers: {"X-CSRF-Token": desk.dataset.csrf}});
    const data = await answer.json();
    out.textContent = answer.ok
      ? (Object.entries(data.personal_ids).map(([k, v]) => k + ": " + v).join(", ") || "no code given")
      : data.error;
  });
  const typing = () => document.activeElement && ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName)
    || [...document.querySelectorAll("textarea, input[type=text]")].some(f => f.value)
    || (document.getElementById("revealed") || {}).textContent;
  setInterval(() => { if (!typing()) location.replace("/agent"); }, $refresh_ms);
})();
</script>""")


def add_agent_routes(app: web.Application, store: CallStore) -> None:
    """The agent view and the JSON API behind it (voicebot.web.agent_api)."""
    add_agent_api_routes(app, store)
    app.add_routes([
        web.get("/agent", desk_page),
        web.post("/agent/state", state_form),
        web.post("/agent/accept", accept_form),
        web.post("/agent/done", done_form),
        web.post("/agent/callbacks/{callback_id}/{action}", callback_form),
    ])


# ---------------------------------------------------------------------- handlers


@roles("agent", "supervisor")
async def desk_page(request: web.Request) -> web.Response:
    return await _render(request)


@roles("agent")
async def state_form(request: web.Request) -> web.Response:
    form = await request.post()
    return await _act(request, set_agent_state(request.app[DESK_STORE], current_user(request), form.get("state")))


@roles("agent")
async def accept_form(request: web.Request) -> web.Response:
    return await _act(request, accept(request.app[DESK_STORE], current_user(request), request.app[AGENT_URI_CHECK]))


@roles("agent")
async def done_form(request: web.Request) -> web.Response:
    form = await request.post()
    entry_id = str(form.get("entry_id", ""))
    if not entry_id.isdigit():
        return await _render(request, "which caller is done?", 400)
    return await _act(request, finish(request.app[DESK_STORE], current_user(request), int(entry_id),
                                      form.get("note", "")))


@roles("agent")
async def callback_form(request: web.Request) -> web.Response:
    form = await request.post()
    raw, action = request.match_info["callback_id"], request.match_info["action"]
    if not raw.isdigit() or action not in ("claim", "done", "failed"):
        return await _render(request, "no such callback action", 404)
    store, user = request.app[DESK_STORE], current_user(request)
    step = claim(store, user, int(raw)) if action == "claim" else close(store, user, int(raw), action,  # type: ignore[arg-type]
                                                                         form.get("note", ""))
    return await _act(request, step)


async def _act(request: web.Request, step: Any) -> web.Response:
    """Do ``step``; back to the page (303) when done, the page with the reason when refused."""
    try:
        await step
    except DeskRefusal as e:
        return await _render(request, e.message, e.status)
    return see_other("/agent")


# ---------------------------------------------------------------------- the page


async def _render(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    store, user, now = request.app[DESK_STORE], current_user(request), web_now(request)
    csrf = html.escape(user.csrf_token)
    about = controls = current = following = ""
    if user.role == "agent":
        try:
            desk = mask_json((await desk_of(store, user, now)).to_json())
        except DeskRefusal as e:
            error = error or e.message
        else:
            agent = desk["agent"]
            about = (f" · queues {_e(', '.join(agent['queues']) or 'none')} · phone {_e(agent['sip_uri'] or 'none')}"
                     f" · <strong id=\"state\">{_e(agent['state'])}</strong>")
            controls = _state_buttons(csrf, agent["state"])
            if desk["current"] is not None:
                current = _current(csrf, desk["current"])
            elif agent["state"] == "busy":
                current = ('<section id="current"><p class="muted">Your last caller is no longer on the line. Set'
                           " yourself available to take the next one.</p></section>")
            if desk["current"] is None:
                following = _next(csrf, desk["next"], desk["waiting"])
    views = mask_json([v.to_json() for v in await queue_views(store, user, now)])
    callbacks = mask_json([c.to_json() for c in await callbacks_for(store, user)])
    body = _DESK.substitute(
        style=_STYLE, csrf=csrf, name=_e(user.name), role=_e(user.role), about=about,
        error=f'<p class="error" role="alert">{_e(error)}</p>\n' if error else "", controls=controls,
        current=current, next=following, waiting=_waiting_table(views),
        callbacks=_callbacks_table(csrf, user, callbacks), logout=logout_form(request),
        refresh_ms=REFRESH_S * 1000)
    return page("Agent desk", body, status)


def _e(value: object) -> str:
    return html.escape(str(value))


def _hidden(csrf: str) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{csrf}">'


def _state_buttons(csrf: str, state: str) -> str:
    buttons = "".join(f'<button type="submit" name="state" value="{s}"{" disabled" if s == state else ""}>'
                      f"{s.capitalize()}</button> " for s in ("available", "away"))
    return f'<form method="post" action="/agent/state" class="inline">{_hidden(csrf)}{buttons}</form>'


def _minutes(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def _context(caller: dict) -> str:
    """Reason, intents, the form and the transcript of one caller (already masked)."""
    rows = [("Queue", caller["queue"]), ("Reason", caller["reason"] or "-"), ("Caller", caller["caller_id"] or "-"),
            ("Waited", _minutes(caller["wait_s"])), ("Intents", ", ".join(caller["intents"]) or "-")]
    form = caller["form"]
    if form:
        rows.append(("Form", f"{form['form']} ({form['status']})"))
        rows += [(f"· {name.replace('_', ' ')}", value) for name, value in form["fields"].items()]
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    turns = "".join(
        f"<li><strong>{'Bot' if t['speaker'] == 'bot' else 'Caller'}:</strong> {_e(t['text'])}"
        + (f' <span class="muted">({_e(t["intent"])})</span>' if t.get("intent") else "") + "</li>"
        for t in caller["transcript"])
    transcript = f'<ol class="transcript">{turns}</ol>' if turns else '<p class="muted">No transcript.</p>'
    return f"<table>{table}</table><h3>What the bot heard and said</h3>{transcript}"


def _current(csrf: str, caller: dict) -> str:
    state = "ringing your phone" if caller["state"] == "connecting" else "connected to you"
    done = "" if caller["state"] != "connected" else (
        f'<form method="post" action="/agent/done">{_hidden(csrf)}'
        f'<input type="hidden" name="entry_id" value="{caller["entry_id"]}">'
        '<label for="note">Note</label><textarea id="note" name="note" maxlength="2000"></textarea>'
        '<button type="submit">Done</button></form>')
    return (f'<section id="current" class="caller"><h2>Your caller: {state}</h2>'
            f'<p><button type="button" id="reveal" data-call="{_e(caller["call_id"])}">Show personal identity code'
            f'</button> <span id="revealed"></span></p>{_context(caller)}{done}</section>')


def _next(csrf: str, caller: dict | None, waiting: int) -> str:
    if caller is None:
        return '<section id="next"><h2>Next caller</h2><p class="muted">Nobody is waiting in your queues.</p></section>'
    return (f'<section id="next" class="caller"><h2>Next caller</h2><p>{waiting} waiting in your queues.</p>'
            f'{_context(caller)}<form method="post" action="/agent/accept">{_hidden(csrf)}'
            '<button type="submit">Accept call</button></form></section>')


def _waiting_table(views: list[dict]) -> str:
    if not views:
        return '<p class="muted">Nobody is waiting.</p>'
    rows = "".join(f"<tr><td>{v['position']}</td><td>{_e(v['queue'])}</td><td>{_minutes(v['wait_s'])}</td>"
                   f"<td>{_e(v['reason'] or '-')}</td><td>{_e(v['call_id'])}</td></tr>" for v in views)
    return ("<table><tr><th>Position</th><th>Queue</th><th>Waited</th><th>Reason</th><th>Call</th></tr>"
            f"{rows}</table>")


def _callbacks_table(csrf: str, user: Principal, callbacks: list[dict]) -> str:
    if not callbacks:
        return '<p class="muted">No callbacks to make.</p>'
    rows = []
    for c in callbacks:
        action = ""
        if user.role == "agent" and c["state"] == "open":
            action = _callback_form(csrf, c["callback_id"], "claim", "Claim")
        elif user.role == "agent" and c["claimed_by"] == user.name:
            action = (_callback_form(csrf, c["callback_id"], "done", "Done", note=True)
                      + _callback_form(csrf, c["callback_id"], "failed", "Failed", note=True))
        who = f" by {_e(c['claimed_by'])}" if c["claimed_by"] else ""
        rows.append(f"<tr><td>{_e(c['number'])}</td><td>{_e(c['queue'])}</td><td>{_e(c['created_at'][:16])}</td>"
                    f"<td>{_e(c['state'])}{who}</td><td>{action}</td></tr>")
    return ("<table><tr><th>Number</th><th>Queue</th><th>Asked</th><th>State</th><th></th></tr>"
            f"{''.join(rows)}</table>")


def _callback_form(csrf: str, callback_id: int, action: str, label: str, *, note: bool = False) -> str:
    field = '<input type="text" name="note" placeholder="note" maxlength="2000"> ' if note else ""
    return (f'<form method="post" action="/agent/callbacks/{callback_id}/{action}" class="inline">{_hidden(csrf)}'
            f'{field}<button type="submit">{label}</button></form> ')
