"""The short links of SMS (`{public_url}/go/<event>/<channel>/<wave>`): the webhook server
redirects each to the event's registration page with the UTM tags of that wave and channel.
Nothing is stored per link: the path says everything, the event comes from the store. Each
click is counted (`link_clicks`) for the report: clicks per wave and channel. Link previews
(messengers fetching the page) count too: the figure is an upper bound."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from channels.links import SHORT_LINK_PATH, resolve_short_link
from promo.domain.event import EventSpec
from promo.domain.names import BROADCAST_CHANNELS, DIRECT_CHANNELS, WAVES
from promo.settings import Settings

__all__ = ["SHORT_LINK_PATH", "short_link_redirect"]

CHANNELS = (*DIRECT_CHANNELS, *BROADCAST_CHANNELS)


def _event(settings: Settings, slug: str, channel: str, wave: str) -> EventSpec | None:
    """The event, with the click counted."""
    from sqlalchemy import select

    from flows.store import event_spec
    from promo.db import session_scope
    from promo.db.models import Event, LinkClick

    with session_scope(settings.database_url) as s:
        row = s.scalar(select(Event).where(Event.slug == slug))
        if row is None:
            return None
        s.add(LinkClick(event_id=row.id, wave=wave, channel=channel))
        return event_spec(row)


async def short_link_redirect(request: Request) -> Response:
    slug = request.path_params["slug"]
    channel = request.path_params["channel"]
    wave = request.path_params["wave"]
    if channel not in CHANNELS or wave not in WAVES:
        return PlainTextResponse("no such link", status_code=404)
    spec = await run_in_threadpool(_event, request.app.state.settings, slug, channel, wave)
    if spec is None:
        return PlainTextResponse("no such event", status_code=404)
    return RedirectResponse(resolve_short_link(spec, channel, wave), status_code=302)
