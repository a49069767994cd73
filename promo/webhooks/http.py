"""What every webhook endpoint shares: the one refusal, the public URL, the settings."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promo.settings import Settings

log = logging.getLogger("promo.webhooks")


def forbidden(provider: str, why: str) -> PlainTextResponse:
    """The one answer to a request whose signature does not check out (or cannot be checked).

    The caller learns nothing about what was wrong; the operator's log does.
    """
    log.warning("%s webhook refused: %s", provider, why)
    return PlainTextResponse("forbidden", status_code=403)


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def public_request_url(settings: Settings, request: Request) -> str:
    """The URL the provider called, as it knows it: `public_url` + path + query.

    Behind a proxy or a tunnel the app sees another host and scheme; providers sign the
    address they were given, which is `public_url`'s.
    """
    url = settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    return url


# the largest request body an endpoint reads (bytes): a provider's event is a few KB; SendGrid
# batches events (up to a few hundred KB each post), so its endpoint takes more
MAX_BODY = 64 * 1024
MAX_BODY_PER_PATH = {"/sendgrid/events": 4 * 1024 * 1024}
# the longest path and query: a link we sign is well under 1 KB
MAX_URL = 8 * 1024
# what the HTTP server reads of a request line and headers before giving up on it: more than
# MAX_URL, so that an over-long URL is read whole and answered 414, not cut off with a reset
MAX_HEAD = 1024 * 1024


class _TooLarge(Exception):
    pass


class Limits:
    """ASGI middleware: refuses an over-long URL (414) and an over-large body (413) before
    any endpoint reads it: by its Content-Length when given, and by counting as it streams
    (a chunked body has no length). Signatures are checked only on what fits."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") > MAX_URL:
            await _answer(send, 414, "URI too long")
            return
        limit = MAX_BODY_PER_PATH.get(scope["path"], MAX_BODY)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.strip().isdigit():
                    await _answer(send, 400, "bad Content-Length")
                    return
                if int(value) > limit:
                    log.warning("webhook refused: a body of %s bytes to %s", int(value),
                                scope["path"])
                    await _answer(send, 413, "request body too large")
                    return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except _TooLarge:
            log.warning("webhook refused: a streamed body over %s bytes to %s", limit,
                        scope["path"])
            if not started:
                await _answer(send, 413, "request body too large")


async def _answer(send: Send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": text.encode()})


def json_body(body: bytes) -> Any:
    """The body's JSON, or None when it is not JSON (nested too deep counts as not)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def as_dict(value: Any) -> dict[str, Any]:
    """A JSON object of a payload, or an empty one for anything else (a list, a string)."""
    return value if isinstance(value, dict) else {}


def form_params(body: bytes) -> ImmutableMultiDict:
    """An `application/x-www-form-urlencoded` body, every value of every name kept
    (a signature covers repeated names too)."""
    return ImmutableMultiDict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
