"""What every webhook endpoint shares: the one refusal, the public URL, the settings."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse

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


def form_params(body: bytes) -> ImmutableMultiDict:
    """An `application/x-www-form-urlencoded` body, every value of every name kept
    (a signature covers repeated names too)."""
    return ImmutableMultiDict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
