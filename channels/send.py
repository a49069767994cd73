"""The send pipeline for one batch of ledger rows: claim, render, send, record.

The claim re-checks consent, quiet hours and caps inside one database transaction
(SQLite: `BEGIN IMMEDIATE`, one writer; PostgreSQL: the contacts' rows locked in id
order), so waves of different campaigns sending at once on different workers never
exceed a cap. Nothing is sent after the event starts.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from audiences.contacts import mark_unreachable, withdraw_consent
from audiences.segments import ADDRESS_FIELD, contact_block
from audiences.tokens import unsubscribe_url
from channels import get_channel
from channels.base import (
    ChannelError,
    ConfigurationError,
    OutgoingMessage,
    PermanentError,
    SendResult,
)
from channels.calendar import ics_attachment
from channels.render import TemplateProblem, context, pick_language, render
from channels.rules import add_to_history, cap_violation, next_send_time
from flows.events import BROADCAST_CHANNELS, PROMOTIONAL_WAVES, EventSpec
from flows.ledger import load_histories
from flows.store import event_spec
from promo.db import is_postgres, session_scope
from promo.db.models import Consent, Contact, Event, Message, Registration, utcnow
from promo.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Claimed:
    message_id: int
    key: str
    channel: str
    event_id: int
    wave: str
    contact_id: int | None
    address: str | None
    name: str | None
    language: str | None
    timezone: str | None


def _lock_contacts(session: Session, contact_ids: list[int]) -> None:
    if is_postgres(session.get_bind()) and contact_ids:
        session.execute(
            select(Contact.id).where(Contact.id.in_(contact_ids)).order_by(Contact.id).with_for_update()
        ).all()
    # SQLite: the transaction already began IMMEDIATE and holds the only write lock


def claim(session: Session, message_ids: list[int], now: datetime, settings: Settings,
          events: dict[int, EventSpec]) -> tuple[list[Claimed], Counter]:
    """Move due rows to `sending` where consent, quiet hours and caps allow it, now."""
    outcome: Counter = Counter()
    contact_ids = sorted(set(session.scalars(
        select(Message.contact_id).where(Message.id.in_(message_ids),
                                         Message.contact_id.is_not(None)))))
    _lock_contacts(session, contact_ids)
    # read the rows only now, under the locks and FOR UPDATE: a run that claimed them a moment
    # ago has committed `sending`, and they no longer match (PostgreSQL re-checks the WHERE)
    rows = session.execute(
        select(Message).where(Message.id.in_(message_ids),
                              Message.status.in_(("planned", "deferred")))
        .order_by(Message.id).with_for_update().execution_options(populate_existing=True)
    ).scalars().all()
    contacts = {c.id: c for c in session.scalars(select(Contact).where(Contact.id.in_(contact_ids)))}
    # registered since the wave was decided: no more promotion (the reminder is theirs)
    registered = set(session.execute(
        select(Registration.event_id, Registration.contact_id).where(
            Registration.contact_id.in_(contact_ids),
            Registration.event_id.in_({r.event_id for r in rows}))).all())
    consents = {
        (c.contact_id, c.channel): c
        for c in session.scalars(select(Consent).where(Consent.contact_id.in_(contact_ids)))
    }
    caps = settings.cap_rules()
    windows = settings.send_windows()
    span = max((c.window for c in caps.values()), default=None)
    histories = (
        load_histories(session, now, span, contact_ids, include_planned=False) if span else {}
    )
    claimed: list[Claimed] = []
    stamp = utcnow()
    for row in sorted(rows, key=lambda r: (r.contact_id or 0, r.id)):
        if row.send_at is not None and row.send_at > now:
            continue  # not due yet (another run deferred it meanwhile)
        spec = events[row.event_id]

        def set_(status: str, reason: str | None = None, *, row: Message = row,
                 **extra: object) -> None:
            row.status, row.reason, row.updated_at = status, reason, stamp
            for k, v in extra.items():
                setattr(row, k, v)
            outcome[status] += 1

        if now >= spec.starts_at:
            set_("dropped", "the event has started")
            continue
        if row.channel in BROADCAST_CHANNELS:  # a public post
            set_("sending", sent_at=now, attempts=row.attempts + 1)
            claimed.append(Claimed(row.id, row.key, row.channel, row.event_id, row.wave,
                                   None, None, None, spec.language, spec.timezone))
            continue
        contact = contacts.get(row.contact_id)
        if contact is None:
            set_("suppressed", "contact forgotten")
            continue
        if row.wave in PROMOTIONAL_WAVES and (row.event_id, contact.id) in registered:
            set_("suppressed", "registered")
            continue
        address = getattr(contact, ADDRESS_FIELD[row.channel])
        blocked = contact_block(contact, consents.get((contact.id, row.channel)), row.channel)
        if blocked:
            set_("suppressed", blocked)
            continue
        tz = contact.timezone or spec.timezone
        window = windows.get(row.channel)
        at = next_send_time(now, tz, window)
        if at > now:
            if at >= spec.starts_at:
                set_("dropped", f"quiet hours ({window}): opens only after the start")
            else:
                set_("deferred", f"quiet hours ({window})", send_at=at)
            continue
        history = histories.setdefault(contact.id, {})
        if row.counts_for_caps:
            violation = cap_violation(history, row.channel, now, caps)
            if violation:
                set_("capped", violation)
                continue
            add_to_history(history, row.channel, now)
        # a message held by quiet hours keeps saying so once it goes
        held = f"held by {row.reason}" if row.status == "deferred" and row.reason else None
        set_("sending", held, sent_at=now, attempts=row.attempts + 1)
        claimed.append(Claimed(row.id, row.key, row.channel, row.event_id, row.wave, contact.id,
                               str(address), contact.name, contact.language, contact.timezone))
    return claimed, outcome


def _render(c: Claimed, spec: EventSpec, settings: Settings, override: str | None,
            calendars: dict[tuple, tuple[str, str, bytes]]) -> OutgoingMessage:
    lang = pick_language(c.language, spec)
    unsub = unsubscribe_url(settings, c.contact_id, c.channel) if c.contact_id else None
    ctx = context(spec, c.wave, c.channel, name=c.name, tz=c.timezone, lang=lang,
                  unsubscribe_url=unsub, settings=settings)
    r = render(spec, c.wave, c.channel, lang, ctx, override, settings)
    headers = {}
    attachments = []
    if c.channel == "email" and unsub:
        headers = {"List-Unsubscribe": f"<{unsub}>",
                   "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    if c.channel == "email":  # one click puts the event in the contact's calendar
        # the same entry for every email of a batch in one language: built once (~10 ms)
        links = (ctx["event"]["registration_url"], ctx["event"]["url"])
        key = (spec.slug, lang, *links)
        if key not in calendars:
            calendars[key] = ics_attachment(spec, lang, *links)
        attachments = [calendars[key]]
    return OutgoingMessage(id=c.message_id, key=c.key, channel=c.channel, address=c.address,
                           language=lang, text=r.text, subject=r.subject, html=r.html,
                           headers=headers, attachments=attachments, event_slug=spec.slug,
                           wave=c.wave)


def send_batch(message_ids: list[int], now: datetime, settings: Settings,
               logger: logging.Logger | None = None) -> Counter:
    """Claim, render, send and record one batch; returns outcome -> count."""
    logger = logger or log
    with session_scope(settings.database_url) as s:
        event_ids = set(s.scalars(select(Message.event_id).where(Message.id.in_(message_ids))))
        events_rows = {e.id: e for e in s.scalars(select(Event).where(Event.id.in_(event_ids)))}
        specs = {i: event_spec(e) for i, e in events_rows.items()}
        overrides = {i: e.definition.get("_templates_dir") for i, e in events_rows.items()}
        claimed, outcome = claim(s, message_ids, now, settings, specs)
    outcome = Counter(outcome)
    outcome.pop("sending", None)
    by_channel: dict[str, list[Claimed]] = {}
    for c in claimed:
        by_channel.setdefault(c.channel, []).append(c)
    results: list[tuple[int, str, str | None, str | None, ChannelError | None]] = []
    misconfigured: list[ConfigurationError] = []
    calendars: dict[tuple, tuple[str, str, bytes]] = {}
    for channel_name, items in by_channel.items():
        outgoing: list[OutgoingMessage] = []
        for c in items:
            try:
                outgoing.append(_render(c, specs[c.event_id], settings, overrides[c.event_id],
                                        calendars))
            except TemplateProblem as exc:
                results.append((c.message_id, "failed", str(exc), None, None))
        # the channel batches, paces and retries; every message gets a result
        try:
            channel = get_channel(channel_name, settings, logger)
            try:
                delivered = channel.deliver(outgoing)
            finally:
                channel.close()
        except ConfigurationError as exc:
            # nothing more went out on this channel: back to planned, for a run with the
            # settings fixed; the batch fails loudly below, once everything is recorded
            misconfigured.append(exc)
            delivered = list(getattr(exc, "results", []))
            settled = {r.message_id for r in delivered}
            results.extend((m.id, "planned", f"not sent: {exc}"[:300], None, None)
                           for m in outgoing if m.id not in settled)
        except ChannelError as exc:
            delivered = [SendResult(m.id, error=exc) for m in outgoing]
        for res in delivered:
            if res.ok:
                results.append((res.message_id, "sent", None, res.provider_message_id, None))
            else:
                # the request may have reached the provider: never silently sent again
                status = "uncertain" if res.error.maybe_sent else "failed"
                results.append((res.message_id, status, str(res.error)[:300], None, res.error))
    _record(results, settings, claimed)
    for _, status, *_rest in results:
        outcome[status] += 1
    if misconfigured:
        raise misconfigured[0]
    return outcome


def _record(results, settings: Settings, claimed: list[Claimed]) -> None:
    if not results:
        return
    by_id = {c.message_id: c for c in claimed}
    stamp = utcnow()
    rows = []
    for message_id, status, reason, provider_id, _error in results:
        values = {"id": message_id, "status": status, "reason": reason, "updated_at": stamp}
        if status == "sent" and reason is None:
            del values["reason"]  # keep "held by quiet hours ..." from the claim
        if provider_id:
            values["provider_message_id"] = provider_id
        if status in ("failed", "planned"):
            values["sent_at"] = None  # a failed message does not count for caps
        rows.append(values)
    with session_scope(settings.database_url) as s:
        # one executemany per kind of row (by primary key), not a statement per message
        s.execute(update(Message), rows)
        for message_id, _status, _reason, _provider_id, error in results:
            c = by_id.get(message_id)
            if isinstance(error, PermanentError) and c and c.contact_id is not None:
                _mark_contact(s, c.contact_id, c.channel, error, stamp)


def _mark_contact(s: Session, contact_id: int, channel: str, error: PermanentError,
                  stamp: datetime) -> None:
    """What a permanent failure says about the contact: opted out (SMS 21610) or unreachable."""
    if error.opted_out:
        withdraw_consent(s, contact_id, channel, source=f"provider: {error}", at=stamp)
    if error.unreachable:
        mark_unreachable(s, contact_id, channel, str(error), stamp)
