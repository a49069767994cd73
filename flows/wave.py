"""One wave, as plain functions: decide for everyone not yet decided, then send what is due.

The Prefect flows in `flows/campaign.py` and `flows/daily.py` compose these; tests and the preview call them
directly.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.segments import load_recipients
from flows.decide import Decision, WaveRules, decide_parts, summarize
from flows.ledger import (
    Share,
    decided_contacts,
    drop_waiting,
    due_counts,
    due_page,
    load_histories,
    message_key,
    record_decisions,
)
from flows.plan import CampaignPlan, plan_campaign
from flows.store import event_spec, find_event
from promo.db import hold_contacts, session_scope
from promo.db.models import Event, Message
from promo.domain.event import EventSpec
from promo.domain.names import PROMOTIONAL_WAVES, WaveStatus
from promo.domain.times import shown
from promo.settings import Settings


@dataclass
class PreparedWave:
    event_slug: str
    wave: str
    now: datetime
    status: WaveStatus  # scheduled | late | dropped | early | held
    note: str = ""
    new_decisions: dict[str, dict[str, int]] = field(default_factory=dict)
    scheduled_at: datetime | None = None  # when an early run's wave is due
    # the stored event, so that the run's later steps need not look it up again
    event_id: int | None = None
    starts_at: datetime | None = None
    timezone: str | None = None  # the event's: every time the run shows is in it
    title: str = ""


def wave_rules(spec: EventSpec, plan: CampaignPlan, wave: str, send_at: datetime,
               settings: Settings) -> WaveRules:
    """The rules a wave's decisions follow, from the event, the plan and the settings."""
    wp = plan.wave(wave)
    reminder = next((w for w in plan.waves if w.name == "reminder" and w.send_at), None)
    counts = wave != "reminder" or settings.reminder_counts_against_caps
    keep_room = reminder is not None and settings.reminder_counts_against_caps
    return WaveRules(
        event_slug=spec.slug,
        wave=wave,
        channels=list(wp.spec.channels),
        mode=wp.spec.mode,
        send_at=send_at,
        starts_at=spec.starts_at,
        event_timezone=spec.timezone,
        caps=settings.cap_rules(),
        windows=settings.send_windows(),
        promotional=wave in PROMOTIONAL_WAVES,
        counts_for_caps=counts,
        reminder_at=reminder.send_at if keep_room else None,
        reminder_channels=tuple(reminder.spec.channels) if keep_room else (),
    )


def prepare_wave(event_slug: str, wave: str, now: datetime, settings: Settings) -> PreparedWave:
    """Record a decision for every contact of the wave's audience that has none yet."""
    with session_scope(settings.database_url) as s:
        row = find_event(s, event_slug)
        spec = event_spec(row)
        prepared = _prepare(s, row, spec, wave, now, settings)
    prepared.event_id, prepared.starts_at = row.id, spec.starts_at
    prepared.timezone, prepared.title = spec.timezone, spec.title
    return prepared


def _prepare(s: Session, row: Event, spec: EventSpec, wave: str, now: datetime,
             settings: Settings) -> PreparedWave:
    event_slug = spec.slug
    if row.kind == "digest":  # a series' monthly digest: its own audience and rules
        from flows.digest import prepare_digest

        status, note, decided = prepare_digest(s, row, now, settings)
        return PreparedWave(event_slug, wave, now, status, note, decided)
    if row.cancelled_at is not None:
        # a run scheduled before the event was called off ends quietly, sending nothing
        return PreparedWave(event_slug, wave, now, WaveStatus.dropped, "the event was cancelled")
    if now >= spec.starts_at:
        # nothing goes after the start: what still waits is dropped, and says why
        drop_waiting(s, row.id, wave, "the event has started")
        return PreparedWave(event_slug, wave, now, WaveStatus.dropped, "the event has started")
    plan = plan_campaign(spec, now)
    wp = plan.wave(wave)
    ran = bool(decided_contacts(s, row.id, wave, limit=1))
    if wp.send_at is None and not ran:
        return PreparedWave(event_slug, wave, now, WaveStatus.dropped, wp.note)
    if now < wp.scheduled_at:
        return PreparedWave(
            event_slug, wave, now, WaveStatus.early,
            f"not due until {shown(wp.scheduled_at, spec.zone)}",
            scheduled_at=wp.scheduled_at)
    if wp.send_at is None:
        # the wave ran and its time is over (a late run would drop it): no new decisions,
        # but the messages it held for quiet hours still go when their window opens
        return PreparedWave(event_slug, wave, now, WaveStatus.held,
                            "sending what the wave held for quiet hours")
    rules = wave_rules(spec, plan, wave, now, settings)
    summary: dict[str, dict[str, int]] = {}
    with gc_paused():
        parts, _ = decide_in_parts(s, row, rules)

        def counted() -> Iterator[Decision]:
            for part in parts:
                summarize(part, summary)
                yield from part

        # recorded a part at a time while the next part is decided (`promo.db.bulk`)
        record_decisions(s, row, wave, counted(), counts_for_caps=rules.counts_for_caps,
                         contacts_held=True)  # by decide_in_parts
    return PreparedWave(event_slug, wave, now, wp.status, wp.note, summary)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for a wave's decide step: it makes millions of
    objects that live until it ends (contacts, histories, decisions), and each collection
    only walks them again (a million contacts: 1.3-1.8 s of 3.6-3.9 s of deciding's CPU).
    Reference counting frees everything else as usual; cycles wait until the step ends."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def decide(session, event_row, rules: WaveRules,
           histories: dict[int, dict[str, list[datetime]]] | None = None,
           ) -> tuple[list[Decision], int]:
    """The decisions for everyone of the wave's audience not decided yet, and the audience's
    size. `histories` (the preview passes one across its waves) gains what is planned here."""
    parts, audience = decide_in_parts(session, event_row, rules, histories, size=None)
    decisions: list[Decision] = []
    for part in parts:
        decisions += part
    return decisions, audience


def decide_in_parts(session, event_row, rules: WaveRules,
                    histories: dict[int, dict[str, list[datetime]]] | None = None,
                    size: int | None = 50_000) -> tuple[Iterator[list[Decision]], int]:
    """`decide`, the decisions made a part (`size` contacts) at a time as the parts are
    taken: the audience and its history are read first. No one of the audience is forgotten
    until the session's transaction ends (`hold_contacts`)."""
    hold_contacts(session)
    exclude = decided_contacts(session, event_row.id, rules.wave)
    recipients = load_recipients(
        session, event_row, list(rules.channels),
        registrants_only=not rules.promotional, exclude=exclude,
    )
    if histories is None:
        span = max((c.window for c in rules.caps.values()), default=None)
        histories = load_histories(session, rules.send_at, span) if span else {}
    # a public post is decided once per wave, like everything else
    done = set(session.scalars(select(Message.channel).where(
        Message.key.in_([message_key(rules.event_slug, rules.wave, None, c)
                         for c in rules.broadcast_channels])))) if rules.broadcast_channels else set()
    parts = decide_parts(rules, recipients, histories, size)
    if done:
        parts = ([d for d in part if d.contact_id is not None or d.channel not in done]
                 for part in parts)
    return parts, len(recipients) + len(exclude)


def due_streams(event_id: int, wave: str, now: datetime, settings: Settings,
                share: Share | None = None,
                descending: bool = False) -> dict[str, Iterator[list[int]]]:
    """Per channel, its due messages (of one share of the wave, if given) as batches of
    `send_batch_size` ids (one Prefect task each), read page by page as they are asked for,
    never the whole wave at once; by id, or from the last id back (`descending`: a part
    that helps another meets it halfway instead of racing it for the same rows)."""
    with session_scope(settings.database_url) as s:
        channels = sorted(due_counts(s, event_id, wave, now, share))

    def pages(channel: str) -> Iterator[list[int]]:
        after: int | None = None
        while True:
            with session_scope(settings.database_url) as s:
                ids = due_page(s, event_id, wave, channel, now, after, settings.send_batch_size,
                               share, descending)
            if not ids:
                return
            after = ids[-1]
            yield ids

    return {c: pages(c) for c in channels}


def due_batches(event_slug: str, wave: str, now: datetime, settings: Settings,
                event_id: int | None = None) -> Iterator[tuple[str, list[int]]]:
    """The due messages as (channel, ids) batches, the channels taking turns."""
    if event_id is None:
        with session_scope(settings.database_url) as s:
            event_id = find_event(s, event_slug).id
    streams = due_streams(event_id, wave, now, settings)
    while streams:
        for channel, stream in list(streams.items()):
            ids = next(stream, None)
            if ids is None:
                del streams[channel]
            else:
                yield channel, ids
