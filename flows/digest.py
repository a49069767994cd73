"""The monthly digest, as plain functions: what a series' digest of a month says, and who
gets it (the Prefect flow: `flows/digest_flow.py`).

A digest is a wave-like unit of a series-level campaign: an events row of kind `digest`
per series and month (`promo.domain.digest`) with one wave, `digest`. Its decisions go
into the ledger like a wave's (`flows.ledger.record_decisions`, one row per contact and
channel, keyed by the series and month: never twice in one month), and the wave flow
sends them with the waves' own pipeline (`flows.wave.due_batches`, `flows.send`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.segments import series_audience
from flows.decide import Decision, WaveRules, decide_wave, summarize
from flows.ledger import (
    decided_contacts,
    decided_waves,
    load_histories,
    message_key,
    record_decisions,
    wave_outcomes,
)
from flows.plan import plan_campaign
from flows.store import event_spec, series_events
from promo.db.models import Event, Message, Registration
from promo.domain.digest import DigestItem, DigestSpec, digest_slug, month_bounds
from promo.domain.event import EventSpec
from promo.domain.names import DIGEST, GOING, PROMOTIONAL_WAVES, WaveStatus
from promo.domain.rules import Recipient
from promo.errors import PlanError, UserError
from promo.settings import Settings

# how far ahead the digest looks for the series' next events
UPCOMING_DAYS = 92


def compose(session: Session, series: str, now: datetime, settings: Settings
            ) -> tuple[DigestSpec | None, str]:
    """The series' digest for `now`'s month (in the series' zone), and a note; None when the
    month has nothing to say (no upcoming event, no recording, slides or photos)."""
    events = [(r, event_spec(r)) for r in series_events(session, series)]
    upcoming = [spec for _, spec in events
                if now < spec.starts_at <= now + timedelta(days=UPCOMING_DAYS)]
    # the series' zone: its next event's, else its latest one's
    anchor = upcoming[0] if upcoming else events[-1][1]
    prev, this, end = month_bounds(now, anchor.timezone)
    past = [spec for _, spec in events if prev <= spec.starts_at <= now]
    month = f"{this:%Y-%m}"
    spec = DigestSpec(
        slug=digest_slug(series, month),
        title=f"{series} · {month}",
        starts_at=end,  # nothing of this month's digest goes after the month
        timezone=anchor.timezone,
        url=anchor.url or anchor.registration_url,
        registration_url=anchor.registration_url,
        topic=anchor.topic,
        series=None,  # a digest is no event of the series: the reports leave it out
        language=anchor.language,
        digest_series=series,
        month=month,
        upcoming=[DigestItem.of(e) for e in upcoming],
        past=[DigestItem.of(e) for e in past],
    )
    if not spec.says_something:
        return None, (f"{series}, {month}: nothing to say (no upcoming event, no recording, "
                      f"slides or photos of the past month): no digest is sent")
    return spec, (f"{series}, {month}: {len(spec.upcoming)} upcoming, {len(spec.past)} "
                  f"past event(s)")


def save_digest(session: Session, spec: DigestSpec) -> Event:
    """The digest's events row (kind `digest`), created once per series and month; a later
    run of the same month keeps what it lists up to date."""
    definition = spec.model_dump(mode="json")
    folder = override_of(session, spec)
    if folder:  # send_batch renders with the row's folder, like an event's
        definition["_templates_dir"] = folder
    row = session.scalar(select(Event).where(Event.slug == spec.slug))
    if row is None:
        row = Event(slug=spec.slug, kind="digest")
        session.add(row)
    elif row.kind != "digest":
        raise UserError(f"an event is already called {spec.slug!r}: rename it to run the digest")
    row.title, row.starts_at, row.timezone = spec.title, spec.starts_at, spec.timezone
    row.topic, row.series, row.language = None, None, spec.language
    row.definition = definition  # whole: a JSON column does not see changes inside it
    session.flush()
    return row


def find_digest(session: Session, series: str, now: datetime, settings: Settings
                ) -> Event | None:
    """The digest row of `now`'s month, if the digest ran."""
    spec, _ = compose(session, series, now, settings)
    if spec is None:
        return None
    return session.scalar(select(Event).where(Event.slug == spec.slug))


def digest_rules(spec: DigestSpec, now: datetime, settings: Settings) -> WaveRules:
    return WaveRules(
        event_slug=spec.slug, wave=DIGEST, channels=list(settings.digest_channels),
        mode="fallback", send_at=now, starts_at=spec.starts_at,
        event_timezone=spec.timezone, caps=settings.cap_rules(),
        windows=settings.send_windows(), promotional=False, counts_for_caps=True,
        spacing=timedelta(days=settings.digest_spacing_days),
    )


def near_waves(session: Session, spec: DigestSpec, now: datetime, contact_ids: list[int]
               ) -> dict[int, list[tuple[datetime, str]]]:
    """The promotional waves each contact got or will get for the events the digest lists:
    what the ledger holds, and the waves of those events not decided yet (everyone not
    registered for the event will be in their audience)."""
    near: dict[int, list[tuple[datetime, str]]] = {}
    if not spec.upcoming:
        return near
    rows = {r.id: r for r in session.scalars(select(Event).where(
        Event.slug.in_([i.slug for i in spec.upcoming])))}
    got = session.execute(select(
        Message.contact_id, Message.event_id, Message.wave, Message.sent_at, Message.send_at)
        .where(Message.event_id.in_(rows), Message.wave.in_(PROMOTIONAL_WAVES),
               Message.status.in_(GOING), Message.contact_id.is_not(None)))
    for cid, event_id, wave, sent_at, send_at in got:
        when = sent_at or send_at
        if when is not None:
            near.setdefault(cid, []).append((when, f"the {wave} of {rows[event_id].slug}"))
    for event_id, row in rows.items():
        try:
            plan = plan_campaign(event_spec(row), now)
        except PlanError:
            continue
        ran = decided_waves(session, event_id)
        todo = [(w.send_at, f"the {w.name} of {row.slug}") for w in plan.active
                if w.name in PROMOTIONAL_WAVES and w.name not in ran]
        if not todo:
            continue
        registered = set(session.scalars(select(Registration.contact_id).where(
            Registration.event_id == event_id)))
        for cid in contact_ids:
            if cid not in registered:
                near.setdefault(cid, []).extend(todo)
    return near


def decide_digest(session: Session, row: Event, spec: DigestSpec, rules: WaveRules,
                  only: int | None = None) -> tuple[list[Decision], int]:
    """The digest's decisions for everyone of the series' audience not decided yet (the
    planner's `decide_wave`, so `judge` with the digest's spacing), and the audience's size."""
    exclude = decided_contacts(session, row.id, DIGEST) if row.id is not None else set()
    series = spec.digest_series
    events = series_events(session, series)
    topics = sorted({event_spec(r).topic for r in events})
    audience = series_audience(session, topics, [r.id for r in events], exclude, only)
    ids = [cid for cid, _, _ in audience]
    near = near_waves(session, spec, rules.send_at, ids)
    recipients = [Recipient(cid, tz, {"email": why}, False, near.get(cid, ()))
                  for cid, tz, why in audience]
    span = max((c.window for c in rules.caps.values()), default=None)
    # `only` (promo why): that one person's history, not everyone's
    histories = (load_histories(session, rules.send_at, span, [only] if only is not None else None)
                 if span else {})
    decisions = decide_wave(rules, recipients, histories)
    if rules.broadcast_channels and row.id is not None:
        done = set(session.scalars(select(Message.channel).where(Message.key.in_(
            [message_key(spec.slug, DIGEST, None, c) for c in rules.broadcast_channels]))))
        decisions = [d for d in decisions if d.contact_id is not None or d.channel not in done]
    if only is not None:
        decisions = [d for d in decisions if d.contact_id == only]
    return decisions, len(recipients) + len(exclude)


def prepare_digest(session: Session, row: Event, now: datetime, settings: Settings
                   ) -> tuple[WaveStatus, str, dict[str, dict[str, int]]]:
    """The wave flow's decide step for a digest (`flows.wave.prepare_wave` hands it over):
    (status, note, the new decisions per channel and outcome)."""
    spec = event_spec(row)
    assert isinstance(spec, DigestSpec)
    if now >= spec.starts_at:
        return WaveStatus.dropped, f"the month of {spec.month} is over", {}
    rules = digest_rules(spec, now, settings)
    decisions, _ = decide_digest(session, row, spec, rules)
    record_decisions(session, row, DIGEST, decisions, counts_for_caps=True)
    return WaveStatus.scheduled, spec.month, summarize(decisions)


def preview_digest(session: Session, series: str, now: datetime, settings: Settings
                   ) -> dict[str, Any]:
    """What the digest of `now`'s month says and does, sending nothing: its content, the
    templates checked and rendered for a sample reader, and the outcome per channel (from
    the ledger for a digest that ran, predicted with the planner's rules otherwise)."""
    from channels.samples import sample_check

    spec, note = compose(session, series, now, settings)
    out: dict[str, Any] = {"series": series, "now": now.isoformat(), "note": note,
                           "digest": None, "month": None, "upcoming": [], "past": [],
                           "outcomes": {}, "predicted": True, "samples": {}}
    if spec is None:
        return out
    row = session.scalar(select(Event).where(Event.slug == spec.slug)) or Event(
        id=None, slug=spec.slug, kind="digest")
    override = override_of(session, spec)
    samples = sample_check(spec, {DIGEST: list(settings.digest_channels)}, override,
                           settings=settings)
    recorded = wave_outcomes(session, row.id, DIGEST) if row.id is not None else {}
    decisions, audience = decide_digest(session, row, spec, digest_rules(spec, now, settings))
    outcomes = summarize(decisions)
    for channel, counts in recorded.items():
        merged = outcomes.setdefault(channel, {})
        for status, n in counts.items():
            merged[status] = merged.get(status, 0) + n
    out.update(
        digest=spec.slug, month=spec.month, audience=audience, outcomes=outcomes,
        predicted=not recorded,
        upcoming=[{"event": i.slug, "title": i.title,
                   "starts_at": i.starts_at.astimezone(ZoneInfo(i.timezone)).isoformat(),
                   "timezone": i.timezone} for i in spec.upcoming],
        past=[{"event": i.slug, "title": i.title,
               "recordings": [str(r.url) for r in i.recordings],
               "slides": str(i.links.slides) if i.links and i.links.slides else None,
               "photos": str(i.links.photos) if i.links and i.links.photos else None}
              for i in spec.past],
        samples={f"{channel}.{lang}": {"subject": r.subject, "text": r.text}
                 for (_, channel, lang), r in samples.items()},
    )
    return out


def override_of(session: Session, spec: DigestSpec) -> str | None:
    """The template folder of the series' latest event (`templates:`): the digest's
    templates are overridden there like a wave's (`<folder>/digest/...`)."""
    events = series_events(session, spec.digest_series)
    for row in reversed(events):
        folder = (row.definition or {}).get("_templates_dir")
        if folder:
            return folder
    return None


def claim_spacing(session: Session, rows: list[Message], events: dict[int, EventSpec],
                  now: datetime, settings: Settings
                  ) -> tuple[dict[int, list[tuple[datetime, str]]], timedelta | None]:
    """For the send-time claim (`flows.send.claim`): the promotional waves near each digest
    row's contact now, and the spacing, so that `judge` checks the digest's room for the
    campaign waves again when it goes, like the caps."""
    near: dict[int, list[tuple[datetime, str]]] = {}
    for event_id in {r.event_id for r in rows if r.wave == DIGEST}:
        spec = events[event_id]
        if isinstance(spec, DigestSpec):
            ids = [r.contact_id for r in rows
                   if r.event_id == event_id and r.contact_id is not None]
            for cid, times in near_waves(session, spec, now, ids).items():
                near.setdefault(cid, []).extend(times)
    return near, (timedelta(days=settings.digest_spacing_days) if near else None)
