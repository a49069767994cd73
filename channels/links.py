"""The links a message carries: UTM-tagged, so a registration can be attributed to the wave
and channel that brought it, and short ones for SMS (the webhook server redirects them)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from promo.domain.event import EventSpec
from promo.settings import Settings

# the UTM medium names the kind of wave (promotion or reminder); utm_content names the wave
WAVE_MEDIUM = {"announce": "promotion", "last_call": "promotion", "reminder": "reminder"}


def utm_medium(wave: str) -> str:
    return WAVE_MEDIUM.get(wave, wave)


def with_utm(url: str, *, source: str, medium: str, campaign: str,
             content: str | None = None) -> str:
    """The URL with the UTM tags set (any it had are replaced)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if not k.startswith("utm_")]
    query += [("utm_source", source), ("utm_medium", medium), ("utm_campaign", campaign)]
    if content:
        query.append(("utm_content", content))
    return urlunsplit(parts._replace(query=urlencode(query)))


def tagged(url: str, event: EventSpec, wave: str, channel: str) -> str:
    """A link as a message of this wave on this channel carries it."""
    return with_utm(url, source=channel, medium=utm_medium(wave), campaign=event.slug,
                    content=wave)


# served by the webhook server (`promo/webhooks/links.py`)
SHORT_LINK_PATH = "/go/{slug}/{channel}/{wave}"


def short_link(settings: Settings, event: EventSpec, wave: str, channel: str) -> str:
    """A short link for SMS, where every character counts: the webhook server redirects it
    to the registration page with the UTM tags of this wave and channel (`resolve_short_link`)."""
    path = SHORT_LINK_PATH.format(slug=event.slug, channel=channel, wave=wave)
    return settings.public_url.rstrip("/") + path


def resolve_short_link(event: EventSpec, channel: str, wave: str) -> str:
    """Where `short_link` leads."""
    return tagged(str(event.registration_url), event, wave, channel)
