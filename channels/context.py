"""What a template is rendered with: the contact's language, dates in their zone and
language, the event's tagged links (`channels.render.render` renders with it)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from babel.dates import format_datetime, get_timezone_location

from channels.calendar import google_calendar_url
from channels.links import short_link, tagged, with_utm
from promo.domain.digest import DigestItem, DigestSpec
from promo.domain.event import EventSpec
from promo.domain.names import BROADCAST_CHANNELS, DIGEST
from promo.settings import Settings

LANGUAGES = ("ru", "en")

# how dates read, per language (Babel patterns); the zone is the contact's
DATE_PATTERN = {"ru": "EEEE, d MMMM", "en": "EEEE, MMMM d"}
SHORT_DATE_PATTERN = {"ru": "EEE, d MMM", "en": "EEE, MMM d"}
TIME_PATTERN = {"ru": "HH:mm", "en": "h:mm a"}
WHEN_FORMAT = {"ru": "{date}, {time} ({zone})", "en": "{date}, {time} ({zone} time)"}


def pick_language(contact_language: str | None, event: EventSpec, default: str) -> str:
    """The contact's language if we have templates in it, then the event's, then the default
    (the `default_language` setting)."""
    for lang in (contact_language, event.language, default):
        primary = (lang or "").replace("_", "-").split("-")[0].lower()
        if primary in LANGUAGES:
            return primary
    return LANGUAGES[0]


@lru_cache(maxsize=1024)
def when_parts(moment: datetime, zone: str, lang: str) -> dict[str, str]:
    """The date, the time and the zone's name, as a contact reads them in their language."""
    local = moment.astimezone(ZoneInfo(zone))
    date = format_datetime(local, DATE_PATTERN.get(lang, DATE_PATTERN["en"]), locale=lang)
    short = format_datetime(local, SHORT_DATE_PATTERN.get(lang, SHORT_DATE_PATTERN["en"]),
                            locale=lang)
    time = format_datetime(local, TIME_PATTERN.get(lang, TIME_PATTERN["en"]), locale=lang)
    place = get_timezone_location(ZoneInfo(zone), locale=lang, return_city=True)
    return {"date": date, "short_date": short, "time": time, "zone": place,
            "zone_short": zone_offset(local, lang)}


def zone_offset(local: datetime, lang: str) -> str:
    """A zone in a few characters, for an SMS: Russian readers count from Moscow (МСК+2),
    the others from UTC (UTC+5)."""
    base, label = ("Europe/Moscow", "МСК") if lang == "ru" else ("UTC", "UTC")
    offset = local.utcoffset() - local.astimezone(ZoneInfo(base)).utcoffset()
    minutes = int(offset.total_seconds() // 60)
    if minutes == 0:
        return label
    sign = "+" if minutes > 0 else "-"  # ASCII: a typographic minus would make an SMS UCS-2
    hours, rest = divmod(abs(minutes), 60)
    return f"{label}{sign}{hours}" + (f":{rest:02d}" if rest else "")


def context(event: EventSpec, wave: str, channel: str, *, name: str | None, tz: str | None,
            lang: str, unsubscribe_url: str | None, settings: Settings) -> dict[str, Any]:
    """The variables every template gets (the README's "Templates" section lists them).

    `tz` is the contact's zone (the event's when None: a public post); dates read in it.
    """
    return {**_shared(event, wave, channel, tz, lang, settings), "contact": {"name": name},
            "unsubscribe_url": unsubscribe_url}


class Contexts:
    """The render contexts of one batch: what is the same for everyone of an event, wave,
    channel, language and zone (the dates, the tagged links, the calendar link) is worked
    out once, and each recipient's context is that plus their own values. A wave's
    messages read the same as with `context` each; the difference is 0.2 ms a message."""

    def __init__(self) -> None:
        self._shared: dict[tuple, tuple[EventSpec, dict[str, Any]]] = {}

    def get(self, event: EventSpec, wave: str, channel: str, *, name: str | None,
            tz: str | None, lang: str, unsubscribe_url: str | None,
            settings: Settings) -> dict[str, Any]:
        if isinstance(event, DigestSpec):  # lists of events: not shared between recipients
            return context(event, wave, channel, name=name, tz=tz, lang=lang,
                           unsubscribe_url=unsubscribe_url, settings=settings)
        key = (id(event), wave, channel, tz, lang)
        held = self._shared.get(key)
        if held is None or held[0] is not event:
            held = self._shared[key] = (event, _shared(event, wave, channel, tz, lang, settings))
        shared = held[1]
        # a fresh `event` map each: what one rendering might do to it stays there
        return {**shared, "event": dict(shared["event"]), "contact": {"name": name},
                "unsubscribe_url": unsubscribe_url}


def _shared(event: EventSpec, wave: str, channel: str, tz: str | None, lang: str,
            settings: Settings) -> dict[str, Any]:
    """The part of a template's variables that is not the recipient's own."""
    zone = tz or event.timezone
    try:
        ZoneInfo(zone)
    except (KeyError, ValueError, OSError):
        zone = event.timezone  # a contact's unknown zone: the event's is the best guess
    w = dict(when_parts(event.starts_at, zone, lang))
    own_zone = zone == event.timezone
    registration_url = tagged(str(event.registration_url), event, wave, channel)
    url = tagged(str(event.url), event, wave, channel) if event.url else None
    host = urlsplit(str(event.registration_url)).hostname or ""
    when = WHEN_FORMAT.get(lang, WHEN_FORMAT["en"]).format(**w)
    return {
        "event": {
            "title": event.title,
            "slug": event.slug,
            "venue": event.venue,
            "online": not event.venue,
            "url": url,
            "registration_url": registration_url,
            "short_url": short_link(settings, event, wave, channel),
            "registration_site": host.removeprefix("www."),
            "topic": event.topic,
            "description": event.description,
            "timezone": event.timezone,
        },
        "when": when,
        "when_short": f"{w['short_date']}, {w['time']}"
        + ("" if own_zone else f" ({w['zone_short']})"),
        "date": w["date"],
        "time": w["time"],
        "when_zone": w["zone"],
        "zone_short": w["zone_short"],
        "same_zone": own_zone,  # the contact is in the event's zone
        "starts_at": event.starts_at.astimezone(ZoneInfo(zone)),
        "broadcast": channel in BROADCAST_CHANNELS,
        "wave": wave,
        "channel": channel,
        "lang": lang,
        "calendar_url": google_calendar_url(event, lang, registration_url, url),
        **(digest_context(event, channel, lang) if isinstance(event, DigestSpec) else {}),
    }


def digest_context(digest: DigestSpec, channel: str, lang: str) -> dict[str, Any]:
    """What the digest's templates list: `upcoming` (each with `when` in its event's zone,
    the zone named, and a registration link tagged utm_medium=digest) and `past` (with
    `recordings`, `slides`, `photos`: any of them may be empty)."""

    def item(i: DigestItem) -> dict[str, Any]:
        w = when_parts(i.starts_at, i.timezone, lang)
        link = with_utm(str(i.registration_url), source=channel, medium=DIGEST,
                        campaign=i.slug, content=DIGEST)
        links = i.links
        return {
            "title": i.title, "slug": i.slug, "venue": i.venue, "online": not i.venue,
            "url": str(i.url) if i.url else None,
            "when": WHEN_FORMAT.get(lang, WHEN_FORMAT["en"]).format(**w),
            "date": w["date"], "registration_url": link,
            "recordings": [{"title": r.title, "url": str(r.url)} for r in i.recordings],
            "slides": str(links.slides) if links and links.slides else None,
            "photos": str(links.photos) if links and links.photos else None,
        }

    return {"series": digest.digest_series, "month": digest.month,
            "upcoming": [item(i) for i in digest.upcoming],
            "past": [item(i) for i in digest.past]}
