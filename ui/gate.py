"""With `RAG_API_KEY` set, nothing on the UI's port answers without the key.

Gradio serves its own routes beside the page (`/gradio_api/queue/join`, `/gradio_api/call/...`,
uploads, files, the config), and any of them can run any event handler by its index, the remove
and empty-trash handlers included: a key that guarded only `/api` and `/v1` left a door open
through which anyone who reached the port deleted documents (issue 27, point 1). This ASGI
middleware sits in front of everything on the port:

- a request passes with `Authorization: Bearer <key>` (scripts, `gradio_client(headers=...)`) or
  with the session cookie that the login page sets once the key is typed there (browsers);
- a browser without either is sent to `/login`, anything else gets a 401 in the API's shape;
- every wrong key, from the header or the login form, counts against the caller: more than
  `FAILED_KEYS` a minute gets 429 (guessing the key costs time, whatever RAG_API_RATE says);
- Gradio's calls (every POST on the port) go through RAG_API_RATE's bucket, as the API's do.

The cookie is `expiry.HMAC(key, expiry)`: stateless, so every replica behind a balancer accepts
it, and changing the key signs everyone out. It is HttpOnly and SameSite=Strict (another site's
page cannot make the browser send it with a request of its own).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import math
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.security import FAILED_KEYS, Limits, RateLimiter, client_of, key_matches, refuse, retry_after, too_many
from core.i18n import LANGUAGE_NAMES, LANGUAGES, normalise_language, t

COOKIE = "rag_session"
SESSION_SECONDS = 7 * 24 * 3600  # a week: a person signs in once per browser, not per visit
LOGIN_PATH = "/login"
# The page language chosen in the app, kept where the login page (served without script) can read it.
LANGUAGE_COOKIE = "rag-lang"
MAX_LOGIN_BODY = 8192  # a form with one field; anything larger is not a login


def for_port(server: ASGIApp, api: FastAPI, key: str) -> KeyGate:
    """The gate of a port that serves the UI with the API mounted (`api`, from api.app.create_app):
    one rate limit and one wrong-key count per client for both, the API's own (issue 27: a client
    guessing keys got 10 a minute on the API's paths and 10 more on the UI's)."""
    limits: Limits = api.state.limits
    return KeyGate(server, key, limits.limiter, limits.guarded, failures=limits.failures)


def session_token(key: str, expires: int) -> str:
    """The cookie's value: when it expires, signed with the key (no server-side state)."""
    signature = hmac.new(key.encode(), f"rag-ui-session:{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{signature}"


def session_valid(token: str, key: str, now: float) -> bool:
    expires, _, _ = token.partition(".")
    if not expires.isdigit() or int(expires) < now:
        return False
    return hmac.compare_digest(token.encode(), session_token(key, int(expires)).encode())


class KeyGate:
    """Key or session cookie before anything on the port; the login page for browsers without it."""

    def __init__(
        self,
        app: ASGIApp,
        key: str,
        limiter: RateLimiter | None,
        guarded_elsewhere: Callable[[str], bool],
        clock: Callable[[], float] = time.time,
        failures: RateLimiter | None = None,
    ) -> None:
        self.app = app
        self.key = key
        self.limiter = limiter
        # Wrong keys: the API's own count when it is mounted on this port (`for_port`), so a client
        # gets FAILED_KEYS per minute on the port, not that many on each side of it.
        self.failures = failures or RateLimiter(*FAILED_KEYS)
        # The API's own middleware checks the key, rate and size on its paths, in its error shape.
        self.guarded_elsewhere = guarded_elsewhere
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.key:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if scope["type"] == "http" and self.guarded_elsewhere(path):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if path == LOGIN_PATH and scope["type"] == "http":
            await self._login(scope, receive, send, headers, login_language(scope, headers))
            return
        given = headers.get("authorization")
        if key_matches(given, self.key) or self._cookie_ok(headers):
            if scope["type"] == "http" and scope["method"] == "POST" and self.limiter is not None:
                wait = self.limiter.take(client_of(scope))
                if wait > 0:
                    await _too_many(send, wait)
                    return
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if given is not None and (wait := self.failures.take(client_of(scope))) > 0:
            await _too_many(send, wait)
            return
        if scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
            await _redirect(send, LOGIN_PATH)
            return
        message = (
            "Missing API key: send 'Authorization: Bearer <RAG_API_KEY>', or sign in at /login."
            if given is None
            else "Incorrect API key: send the server's RAG_API_KEY as 'Authorization: Bearer <key>'."
        )
        await refuse(send, 401, message, "invalid_request_error", "invalid_api_key", {"www-authenticate": "Bearer"})

    def _cookie_ok(self, headers: dict[str, str]) -> bool:
        token = cookie_value(headers, COOKIE)
        return token is not None and session_valid(token, self.key, self.clock())

    async def _login(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], lang: str) -> None:
        if scope["method"] != "POST":
            await _page(send, 200, login_page(lang, ""))
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_LOGIN_BODY:
                await _page(send, 413, login_page(lang, t(lang, "login_wrong")))
                return
        fields = parse_qs(body.decode("utf-8", "replace"))
        given = (fields.get("key") or [""])[0]
        if not hmac.compare_digest(given.encode(), self.key.encode()):
            wait = self.failures.take(client_of(scope))
            if wait > 0:
                await _page(send, 429, login_page(lang, t(lang, "login_wait", seconds=math.ceil(wait))))
            else:
                await _page(send, 401, login_page(lang, t(lang, "login_wrong")))
            return
        expires = int(self.clock()) + SESSION_SECONDS
        secure = "; Secure" if scope.get("scheme") == "https" or headers.get("x-forwarded-proto") == "https" else ""
        cookie = (
            f"{COOKIE}={session_token(self.key, expires)}; Max-Age={SESSION_SECONDS}; Path=/; "
            f"HttpOnly; SameSite=Strict{secure}"
        )
        await _redirect(send, "/", {"set-cookie": cookie})


def cookie_value(headers: dict[str, str], name: str) -> str | None:
    """The value of cookie `name`, None when absent or when the Cookie header is malformed."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header carries nothing
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def login_language(scope: Scope, headers: dict[str, str]) -> str:
    """The login page's language: its own switch (?lang=), else the one chosen in the app (the
    page's script keeps it in the LANGUAGE_COOKIE cookie), else the browser's."""
    for choice in (
        *parse_qs(scope.get("query_string", b"").decode("latin-1")).get("lang", []),
        cookie_value(headers, LANGUAGE_COOKIE),
    ):
        if choice in LANGUAGES:
            return choice
    return normalise_language(headers.get("accept-language", "").split(",")[0])


def login_page(lang: str, error: str) -> str:
    """One field, in the chosen language with a link to the other; no script, nothing fetched from
    elsewhere."""
    direction = "rtl" if lang == "ar" else "ltr"
    other = "en" if lang == "ar" else "ar"
    notice = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="{lang}" dir="{direction}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(t(lang, "login_title"))}</title>
<style>
body {{ font-family: "Noto Naskh Arabic", "Noto Sans", Tahoma, sans-serif; max-width: 26em; margin: 4em auto;
  padding: 0 1em; line-height: 1.7; }}
input {{ width: 100%; font-size: 1.1em; padding: .4em; box-sizing: border-box; }}
button {{ margin-top: .8em; font-size: 1.05em; padding: .4em 1.2em; background: #4338ca; color: #fff;
  border: 0; border-radius: 6px; }}
.error {{ color: #b91c1c; }}
*:focus-visible {{ outline: 2px solid #2563eb; outline-offset: 2px; }}
</style></head><body>
<p><a href="{LOGIN_PATH}?lang={other}" lang="{other}">{LANGUAGE_NAMES[other]}</a></p>
<h1>{html.escape(t(lang, "login_title"))}</h1>
<p>{html.escape(t(lang, "login_prompt"))}</p>{notice}
<form method="post" action="{LOGIN_PATH}?lang={lang}">
<label for="key">{html.escape(t(lang, "login_key"))}</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus dir="ltr">
<button type="submit">{html.escape(t(lang, "login_submit"))}</button>
</form></body></html>"""


async def _page(send: Send, status: int, page: str) -> None:
    body = page.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str, extra: dict[str, str] | None = None) -> None:
    headers = [(b"location", location.encode()), (b"content-length", b"0"), (b"cache-control", b"no-store")]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _too_many(send: Send, wait: float) -> None:
    await refuse(send, 429, too_many(wait), "rate_limit_error", "rate_limit_exceeded", retry_after(wait))
