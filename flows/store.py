"""Events in the store: the validated YAML, kept so that every worker plans from the same text."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from promo.db.models import Event
from promo.domain.digest import DigestSpec
from promo.domain.event import EventSpec
from promo.errors import UserError


def save_event(session: Session, spec: EventSpec, source: Path | None = None) -> Event:
    """Insert or update the event by slug."""
    from channels.render import override_folder

    definition = spec.model_dump(mode="json")
    folder = override_folder(spec, source) if source is not None else None
    if folder:
        definition["_templates_dir"] = folder
    row = session.scalar(select(Event).where(Event.slug == spec.slug))
    if row is None:
        row = Event(slug=spec.slug)
        session.add(row)
    row.title = spec.title
    row.starts_at = spec.starts_at
    row.timezone = spec.timezone
    row.topic = spec.topic
    row.series = spec.series_name
    row.language = spec.language
    row.definition = definition
    session.flush()
    return row


def find_event(session: Session, slug: str) -> Event:
    row = session.scalar(select(Event).where(Event.slug == slug))
    if row is None:
        raise UserError(f"no event {slug!r} in the store: add it with `promo run EVENT.yaml` "
                        f"or `promo events add EVENT.yaml`")
    return row


def upcoming_events(session: Session, now: datetime, within: timedelta) -> list[Event]:
    """The events not cancelled that start after `now` and within `within` of it."""
    return list(session.scalars(select(Event).where(
        Event.kind == "event", Event.cancelled_at.is_(None), Event.starts_at > now, Event.starts_at < now + within)))


def event_spec(row: Event) -> EventSpec:
    data = {k: v for k, v in row.definition.items() if not k.startswith("_")}
    if row.kind == "digest":  # a series' digest of a month (flows/digest.py)
        return DigestSpec.model_validate(data)
    return EventSpec.model_validate(data)


def series_events(session: Session, series: str) -> list[Event]:
    """The series' events (not digests, not cancelled), in start order; an unknown series is
    an error that names the known ones."""
    rows = session.scalars(select(Event).where(
        Event.series == series, Event.kind == "event", Event.cancelled_at.is_(None))
        .order_by(Event.starts_at, Event.id)).all()
    if not rows:
        known = sorted(s for s in session.scalars(
            select(Event.series).where(Event.kind == "event").distinct()) if s)
        raise UserError(f"no series {series!r} in the store"
                        + (f" (known: {', '.join(known)})" if known else ""))
    return list(rows)
