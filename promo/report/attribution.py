"""Which wave and channel brought a registration.

In this order:
1. its UTM tags (what the registration platform passed on of the link the person came by):
   `utm_source` names our channel, `utm_content` our wave, `utm_campaign` this event (or
   is absent). Tags that name the channel and not the wave take the wave of the last
   message the person got on that channel. Tags of someone else's link (another event, an
   ad, a partner) make the registration unattributed: it did not come from our messages;
2. its short link (`/go/<event>/<channel>/<wave>`), where the platform passes the referrer;
3. the last message this person got for this event before registering;
4. none: unattributed (wave and channel None).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from promo.domain.names import BROADCAST_CHANNELS, DIRECT_CHANNELS, WAVES

CHANNELS = (*DIRECT_CHANNELS, *BROADCAST_CHANNELS)
# statuses of a message that went out (an uncertain one most likely did)
REACHED = ("sent", "delivered", "uncertain")
_SHORT = re.compile(r"/go/(?P<slug>[a-z0-9][a-z0-9-]*)/(?P<channel>[a-z_]+)/(?P<wave>[a-z_]+)")


@dataclass(frozen=True, slots=True)
class Attribution:
    wave: str | None
    channel: str | None
    how: str  # utm | short_link | last_message | other_link | none


NONE = Attribution(None, None, "none")


def from_tags(slug: str, source: str | None, campaign: str | None,
              content: str | None) -> Attribution | None:
    """From UTM tags; None when there are none."""
    if not source and not campaign and not content:
        return None
    src = (source or "").strip().lower()
    if src not in CHANNELS or (campaign and campaign.strip().lower() != slug):
        return Attribution(None, None, "other_link")
    wave = (content or "").strip().lower()
    return Attribution(wave if wave in WAVES else None, src, "utm")


def from_short_link(slug: str, link: str | None) -> Attribution | None:
    if not link:
        return None
    m = _SHORT.search(link)
    if m is None or m["slug"] != slug or m["channel"] not in CHANNELS or m["wave"] not in WAVES:
        return Attribution(None, None, "other_link")
    return Attribution(m["wave"], m["channel"], "short_link")


def from_messages(registered_at: datetime,
                  messages: Sequence[tuple[datetime, str, str]]) -> Attribution | None:
    """The last of the person's messages (sent_at, wave, channel; oldest first) before
    `registered_at`."""
    i = bisect_right([m[0] for m in messages], registered_at)
    if i == 0:
        return None
    _, wave, channel = messages[i - 1]
    return Attribution(wave, channel, "last_message")


def attribute(slug: str, *, registered_at: datetime, utm_source: str | None = None,
              utm_campaign: str | None = None, utm_content: str | None = None,
              short_link: str | None = None,
              messages: Sequence[tuple[datetime, str, str]] = ()) -> Attribution:
    """The wave and channel that brought one registration (see the module's docstring)."""
    tags = from_tags(slug, utm_source, utm_campaign, utm_content)
    if tags is not None and tags.how == "utm":
        if tags.wave is None:
            last = from_messages(registered_at, [m for m in messages if m[2] == tags.channel])
            if last is not None:
                return Attribution(last.wave, tags.channel, "utm")
        return tags
    link = from_short_link(slug, short_link)
    if link is not None and link.how == "short_link":
        return link
    if tags is not None or link is not None:  # came by someone else's link
        return Attribution(None, None, "other_link")
    return from_messages(registered_at, messages) or NONE
