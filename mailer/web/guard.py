"""The edge of the web app, before any route runs (a pure ASGI middleware):

- a request body limit: small for what anyone may post (signup, one-click unsubscribe,
  preferences), larger for the editor's API and dashboard (issues, CSV imports) and for
  the providers' webhooks (SNS messages are up to 256 KB). A body
  over it is 413 before it is read in full; a declared Content-Length over it is 413
  before any of it is read;
- no control characters (NUL above all: PostgreSQL cannot store it) in the path, the
  query string, or the fields of a form or JSON body: 400 with one line, so nothing
  further down has to cope with them (a webhook's signed body excepted: the inbound
  handler keeps it as bytes and takes control characters out of what it stores as text);
- security headers on every response that has none of its own: a Content-Security-Policy
  that allows only this site's own script, X-Content-Type-Options and Referrer-Policy.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote, unquote_plus

# C0 controls but TAB, LF and CR (form text areas carry those), and DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The same characters written as JSON escapes.
_JSON_CONTROL = re.compile(r"\\u00(?:0[0-8bBcCeEfF]|1[0-9a-fA-F]|7[fF])")
_TEXT_BODIES = ("application/x-www-form-urlencoded", "application/json")
_EDITOR = ("/api/admin", "/admin")
# Relay providers' webhooks: a signed body, checked byte for byte by its signature and
# stored as raw bytes when it cannot be acted on; refusing one for a control character
# (a bounce quoting a binary attachment) would drop the event after the provider's retries.
_WEBHOOKS = ("/webhooks/",)
# Swagger UI's page loads its script and styles from a CDN; it sets no policy of its own.
_NO_POLICY = ("/docs", "/redoc")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; "
       "frame-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; "
       "frame-ancestors 'none'")
HEADERS = ((b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"same-origin"))


class TooLarge(Exception):
    pass


class EdgeGuard:
    def __init__(self, app, *, public_limit: int, editor_limit: int, webhook_limit: int = 1024 * 1024):
        self.app, self.public_limit, self.editor_limit = app, public_limit, editor_limit
        self.webhook_limit = webhook_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        if _CONTROL.search(unquote(path)) or _CONTROL.search(unquote_plus(query)):
            return await _refuse(send, 400, "control characters (such as NUL) are not allowed in a URL")
        webhook = path.startswith(_WEBHOOKS)
        limit = (self.webhook_limit if webhook else self.editor_limit if path.startswith(_EDITOR)
                 else self.public_limit)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            return await _refuse(send, 413, f"the request body is over {limit} bytes")
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        send = _with_headers(send, secure=not path.startswith(_NO_POLICY))
        if content_type in _TEXT_BODIES and not webhook:
            # A form or JSON body is small: read it whole, look at it, then hand it on.
            try:
                body = await _read(receive, limit)
            except TooLarge:
                return await _refuse(send, 413, f"the request body is over {limit} bytes")
            if _has_control(body, content_type):
                return await _refuse(send, 400, "control characters (such as NUL) are not allowed in a form field")
            return await self.app(scope, _replay(body, receive), send)
        return await self.app(scope, _counting(receive, limit), send)


def _has_control(body: bytes, content_type: str) -> bool:
    text = body.decode("utf-8", "replace")
    if content_type == "application/json":
        return bool(_CONTROL.search(text) or _JSON_CONTROL.search(text))
    return bool(_CONTROL.search(unquote_plus(text)))


async def _read(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge()
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _counting(receive, limit: int):
    """A streamed body (a file upload without a declared length): past the limit the app
    sees the client go away instead of more bytes."""
    size = 0

    async def counted():
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                return {"type": "http.disconnect"}
        return message

    return counted


def _with_headers(send, *, secure: bool):
    async def sending(message):
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            extra = [(n, v) for n, v in HEADERS if n not in present and (secure or n != b"content-security-policy")]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


async def _refuse(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *HEADERS]})
    await send({"type": "http.response.body", "body": body})
