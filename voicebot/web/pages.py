"""The login and logout pages: small, server-rendered, no JavaScript.

The login form is protected against login CSRF (a foreign page logging a browser
into an account of the attacker's) by a double-submitted token: a random value in
a short-lived SameSite=Strict cookie and in the form, compared on POST.
"""

from __future__ import annotations

import html
import re
from string import Template

from aiohttp import web
from yarl import URL

from voicebot.web.auth import (
    AUTH, CSRF_FIELD, SESSION_COOKIE, LoginRefused, LoginThrottled, current_user, new_secret, public, same_secret,
)

LOGIN_CSRF_COOKIE = "voicebot_login_csrf"
#: how long a login form may stay open before it must be reloaded
LOGIN_FORM_LIFETIME_S = 3600
#: longest user name accepted from the form
MAX_NAME_CHARS = 64
#: what new_secret() makes (a login form's token is taken back from its cookie only in this shape)
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem;line-height:1.4}"
          "label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;box-sizing:border-box}"
          "button{margin-top:1rem;padding:.45rem 1rem}.error{color:#a00}")

_PAGE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · voicebot</title><style>$style</style></head>
<body>
$body
</body></html>
""")

_LOGIN = Template("""<h1>Sign in</h1>
$error<form method="post" action="/login">
<input type="hidden" name="$csrf_field" value="$csrf">
<input type="hidden" name="next" value="$next">
<label for="username">Name</label>
<input id="username" name="username" autocomplete="username" required autofocus value="$name">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>""")

_HOME = Template("""<h1>voicebot</h1>
<p>Signed in as <strong>$name</strong> ($role)$queues.</p>
$logout""")

_LOGOUT = Template("""<form method="post" action="/logout">
<input type="hidden" name="$csrf_field" value="$csrf">
<button type="submit">Sign out</button>
</form>""")


def add_page_routes(app: web.Application) -> None:
    app.add_routes([
        web.get("/login", login_form),
        web.post("/login", login),
        web.post("/logout", logout),
        web.get("/", home),
    ])


def page(title: str, body_html: str, status: int = 200) -> web.Response:
    """A whole page around ``body_html`` (already escaped)."""
    text = _PAGE.substitute(title=html.escape(title), style=_STYLE, body=body_html)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def see_other(location: str) -> web.Response:
    """303: after a POST the browser GETs ``location``."""
    return web.Response(status=303, headers={"Location": location})


def message_page(status: int, message: str) -> web.Response:
    return page("Not allowed" if status in (401, 403) else "Error",
                f"<h1>{status}</h1><p>{html.escape(message)}</p><p><a href=\"/\">voicebot</a></p>", status)


def logout_form(request: web.Request) -> str:
    """A sign-out button for any page (carries the session's CSRF token)."""
    return _LOGOUT.substitute(csrf_field=CSRF_FIELD, csrf=html.escape(current_user(request).csrf_token))


def safe_next(target: str | None) -> str:
    """A path on this site to go to after login, or "" for none (another site, "//host" count as none:
    the user's own home page is used then)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return ""
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in target):
        return ""
    url = URL(target)
    return "" if url.is_absolute() or url.scheme else target


# ---------------------------------------------------------------------- handlers


@public
async def login_form(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    target = safe_next(request.query.get("next"))
    user = await auth.from_request(request)
    if user is not None:
        raise web.HTTPSeeOther(location=target or auth.policy.home_of(user.role))
    return _login_page(request, target)


@public
async def login(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    form = await request.post()
    # the page that sent the person here, if any; else where their role works (known once signed in)
    target = safe_next(_text(form.get("next")))
    name = _text(form.get("username")).strip()[:MAX_NAME_CHARS]
    if not same_secret(_text(form.get(CSRF_FIELD)), request.cookies.get(LOGIN_CSRF_COOKIE, "")):
        return _login_page(request, target, name, "This sign-in form has expired; please try again.", 403)
    try:
        made = await auth.login(name, _text(form.get("password")), request.remote or "unknown")
    except LoginThrottled as e:
        response = _login_page(request, target, name, f"Too many failed attempts. Try again in "
                                                      f"{max(1, round(e.retry_after_s))} seconds.", 429)
        response.headers["Retry-After"] = str(max(1, round(e.retry_after_s)))
        return response
    except LoginRefused:
        return _login_page(request, target, name, "Wrong name or password.", 401)
    old = await auth.from_request(request)
    if old is not None:
        await auth.logout(old)
    response = see_other(target or auth.policy.home_of(made.role))
    response.set_cookie(SESSION_COOKIE, made.cookie, max_age=int(auth.policy.session_lifetime_s), path="/",
                        secure=request.secure, httponly=True, samesite="Lax")
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    await request.app[AUTH].logout(current_user(request))
    response = see_other("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def home(request: web.Request) -> web.StreamResponse:
    """A placeholder start page until the dashboard takes over "/"."""
    user = current_user(request)
    queues = f", queues {html.escape(', '.join(user.queues))}" if user.role == "agent" else ""
    return page("voicebot", _HOME.substitute(name=html.escape(user.name), role=user.role, queues=queues,
                                             logout=logout_form(request)))


def _login_page(request: web.Request, target: str, name: str = "", error: str = "",
                status: int = 200) -> web.Response:
    # the form already open in this browser stays good: a browser also loads /login on its own (the
    # redirect of its /favicon.ico request), which must not turn the form the person is filling in stale
    kept = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    token = kept if _TOKEN_SHAPE.fullmatch(kept) else new_secret()
    body = _LOGIN.substitute(
        error=f'<p class="error" role="alert">{html.escape(error)}</p>\n' if error else "",
        csrf_field=CSRF_FIELD, csrf=token, next=html.escape(target), name=html.escape(name))
    response = page("Sign in", body, status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=LOGIN_FORM_LIFETIME_S, path="/login",
                        secure=request.secure, httponly=True, samesite="Strict")
    return response


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
