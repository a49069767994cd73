"""Checking a campaign's templates before anything is sent, and what its messages cost: every
template rendered for sample contacts (the longest texts a real one can get) and priced."""

from __future__ import annotations

import math
from typing import Any

from channels.context import LANGUAGES, context, pick_language
from channels.render import Rendered, render
from channels.sms_segments import segments as sms_segments
from promo.domain.event import EventSpec
from promo.domain.names import BROADCAST_CHANNELS
from promo.settings import Settings
from promo.tokens import unsubscribe_url

# speech rate for the estimate of a call's billed minutes
WORDS_PER_SECOND = 2.5

SAMPLE_NAMES = {"ru": "Константин", "en": "Christopher"}
SAMPLE_FAR_ZONE = "Asia/Kamchatka"
SAMPLE_ODD_ZONE = "Asia/Kathmandu"  # UTC+5:45: the longest zone label


def sample_context(event: EventSpec, wave: str, channel: str, lang: str,
                   settings: Settings, tz: str | None = None,
                   name: str | None = None) -> dict[str, Any]:
    """The context of a sample contact, in the event's zone unless `tz` says otherwise (no
    contact for a public post)."""
    broadcast = channel in BROADCAST_CHANNELS
    return context(
        event, wave, channel,
        name=None if broadcast else name or SAMPLE_NAMES.get(lang, "Sample"),
        tz=None if broadcast else tz or event.timezone, lang=lang,
        unsubscribe_url=unsubscribe_url(settings, 1_000_000, channel) if channel == "email"
        else None,
        settings=settings,
    )


def sample_languages(event: EventSpec, channel: str, settings: Settings) -> tuple[str, ...]:
    """A public post goes out once, in the event's language; a contact may read either."""
    if channel in BROADCAST_CHANNELS:
        return (pick_language(None, event, settings.default_language),)
    return LANGUAGES


def sample_check(event: EventSpec, waves: dict[str, list[str]], override: str | None = None,
                 *, settings: Settings) -> dict[tuple[str, str, str], Rendered]:
    """Render every template the campaign will use, for a sample contact in each language,
    before anything is sent. Raises TemplateProblem naming the file and line; returns the
    samples by (wave, channel, language)."""
    # the longest texts a real contact can get: their zone named (a far one, and one with
    # half hours: "МСК+2:45"), and a name that is not in the language's alphabet (a Cyrillic
    # name turns an English SMS into UCS-2, which fits half as much)
    far = SAMPLE_FAR_ZONE if event.timezone != SAMPLE_FAR_ZONE else "Europe/Moscow"
    worst = [(tz, name) for tz in (far, SAMPLE_ODD_ZONE) for name in SAMPLE_NAMES.values()]
    samples: dict[tuple[str, str, str], Rendered] = {}
    for wave, channels in waves.items():
        for channel in channels:
            for lang in sample_languages(event, channel, settings):
                ctx = sample_context(event, wave, channel, lang, settings)
                samples[(wave, channel, lang)] = render(event, wave, channel, lang, ctx,
                                                        override, settings=settings)
                if channel in BROADCAST_CHANNELS:
                    continue
                for tz, name in worst:
                    ctx = sample_context(event, wave, channel, lang, settings, tz=tz, name=name)
                    render(event, wave, channel, lang, ctx, override, settings=settings)
    return samples


def estimate(channel: str, text: str, settings: Settings) -> tuple[int, float]:
    """(billed units, cost) of one message: SMS segments, a call's started minutes, or one
    message; the cost from the `prices` setting."""
    if channel == "sms":
        units = sms_segments(text)
    elif channel == "voice":
        seconds = len(text.split()) / WORDS_PER_SECOND
        units = max(1, math.ceil(seconds / 60))
    else:
        units = 1
    return units, round(units * settings.prices.get(channel, 0.0), 6)


UNITS = {"sms": "segment", "voice": "minute"}


def content_estimate(event: EventSpec, wave: str, channel: str, lang: str,
                     override: str | None = None, *, settings: Settings) -> dict[str, Any]:
    """What the plan shows per wave and channel: the sample message's SMS segments (1 for
    other channels), its billed units and its estimated cost."""
    ctx = sample_context(event, wave, channel, lang, settings)
    r = render(event, wave, channel, lang, ctx, override, settings=settings)
    units, cost = estimate(channel, r.text, settings)
    return {
        "segments": units if channel == "sms" else 1,
        "units": units,
        "unit": UNITS.get(channel, "message"),
        "cost_per_message": cost,
        "currency": settings.currency,
        "characters": len(r.text),
    }
