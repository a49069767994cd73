"""The monthly digest as data: what one series' digest of one month lists.

A digest is stored as an events row of kind `digest` (one per series and month) whose
definition is a `DigestSpec`: an `EventSpec` (so that the waves' send pipeline, the
templates and the checks take it as they are) with the events it lists. Its `starts_at`
is the end of the month: nothing of a month's digest goes after it.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from promo.domain.event import EventLinks, EventSpec, Recording


class DigestItem(BaseModel):
    """One event as the digest lists it."""

    model_config = ConfigDict(extra="forbid")

    slug: str
    title: str
    starts_at: datetime
    timezone: str
    venue: str | None = None
    url: AnyHttpUrl | None = None
    registration_url: AnyHttpUrl
    recordings: list[Recording] = Field(default_factory=list)
    links: EventLinks | None = None

    @classmethod
    def of(cls, spec: EventSpec) -> DigestItem:
        return cls(slug=spec.slug, title=spec.title, starts_at=spec.starts_at,
                   timezone=spec.timezone, venue=spec.venue, url=spec.url,
                   registration_url=spec.registration_url, recordings=spec.recordings,
                   links=spec.links)

    @property
    def has_materials(self) -> bool:
        return bool(self.recordings or (self.links and (self.links.slides or self.links.photos)))


class DigestSpec(EventSpec):
    """A series' digest of one month: the upcoming events and the past month's."""

    digest_series: str
    month: str = Field(pattern=r"^\d{4}-\d{2}$")
    upcoming: list[DigestItem] = Field(default_factory=list)
    past: list[DigestItem] = Field(default_factory=list)

    @property
    def says_something(self) -> bool:
        """A month with no upcoming event and no recording, slides or photos sends nothing."""
        return bool(self.upcoming) or any(i.has_materials for i in self.past)


def month_bounds(now: datetime, zone: str) -> tuple[datetime, datetime, datetime]:
    """(the previous month's start, this month's start, the next month's start), local
    midnights in `zone`: the digest of `now`'s month lists the events since the first."""
    z = ZoneInfo(zone)
    local = now.astimezone(z)
    this = datetime(local.year, local.month, 1, tzinfo=z)
    prev = datetime(local.year - (local.month == 1), (local.month - 2) % 12 + 1, 1, tzinfo=z)
    nxt = datetime(local.year + (local.month == 12), local.month % 12 + 1, 1, tzinfo=z)
    return prev, this, nxt


def digest_slug(series: str, month: str) -> str:
    """The digest's events row, and the idempotency keys of its messages: one per series
    and month, so that a month's digest never goes twice."""
    return re.sub(r"[^a-z0-9-]", "-", f"digest-{series}-{month}")[:120]
