"""The send step for one batch of ledger rows: claim, render, send, record.

The claim re-checks the rules (`promo.domain.rules.judge`, the planner's own) inside one
database transaction
(SQLite: `BEGIN IMMEDIATE`, one writer; PostgreSQL: the contacts' rows locked in id
order), so waves of different campaigns sending at once on different workers never
exceed a cap. Nothing is sent after the event starts.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.contacts import mark_unreachable, withdraw_consent
from audiences.segments import ADDRESS_FIELD, contact_block
from channels import get_channel
from channels.base import (
    ChannelError,
    ConfigurationError,
    OutgoingMessage,
    PermanentError,
    SendResult,
)
from channels.context import context, pick_language
from channels.mail import Attachment, Invitations, email_extras
from channels.render import TemplateProblem, render
from flows import ledger
from flows.digest import claim_spacing
from flows.ledger import Outcome
from flows.store import event_spec
from promo.db import session_scope
from promo.db.models import Consent, Contact, Event, Message, Registration, utcnow
from promo.domain.event import EventSpec
from promo.domain.names import (
    BROADCAST_CHANNELS,
    DIGEST,
    PROMOTIONAL_WAVES,
    ChannelName,
    Status,
)
from promo.domain.rules import add_to_history, judge, next_send_time
from promo.settings import Settings
from promo.tokens import unsubscribe_url

log = logging.getLogger(__name__)


@dataclass
class Claimed:
    """A message moved to `sending`: what rendering and the channel need to send it."""

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


def claim(session: Session, message_ids: list[int], now: datetime, settings: Settings,
          events: dict[int, EventSpec]) -> tuple[list[Claimed], Counter]:
    """Move due rows to `sending` where the rules (`judge`) allow it now; the others to
    what the rules say (held, capped, suppressed, dropped)."""
    outcome: Counter = Counter()
    rows, contact_ids = ledger.lock_waiting(session, message_ids)
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
        ledger.load_histories(session, now, span, contact_ids, include_planned=False)
        if span else {}
    )
    # the digest's room for the campaign waves, judged again like the caps
    near, spacing = claim_spacing(session, rows, events, now, settings)
    claimed: list[Claimed] = []
    stamp = utcnow()
    for row in sorted(rows, key=lambda r: (r.contact_id or 0, r.id)):
        if row.send_at is not None and row.send_at > now:
            continue  # not due yet (another run deferred it meanwhile)
        spec = events[row.event_id]
        contact = contacts.get(row.contact_id)
        window = windows.get(row.channel)
        if row.channel in BROADCAST_CHANNELS:
            blocked = None
        elif contact is None:
            blocked = "contact forgotten"
        else:
            blocked = contact_block(contact, consents.get((contact.id, row.channel)), row.channel,
                                    row.wave)
        tz = (contact.timezone if contact is not None else None) or spec.timezone
        verdict = judge(
            row.channel, now, next_send_time(now, tz, window), spec.starts_at,
            registered=(contact is not None and row.wave in PROMOTIONAL_WAVES
                        and (row.event_id, contact.id) in registered),
            blocked=blocked, window=window,
            history=(histories.setdefault(contact.id, {})
                     if contact is not None and row.counts_for_caps else None),
            caps=caps, predict=False,
            near=near.get(row.contact_id, ()) if row.wave == DIGEST else (), spacing=spacing,
        )
        if verdict.status is not Status.planned:
            held_until = {"send_at": verdict.at} if verdict.status is Status.deferred else {}
            ledger.settle(row, verdict.status, verdict.reason, stamp, **held_until)
            outcome[verdict.status] += 1
            continue
        if contact is not None and row.counts_for_caps:
            add_to_history(histories[contact.id], row.channel, now)
        # a message held by quiet hours keeps saying so once it goes
        held = (f"held by {row.reason}" if row.status == Status.deferred and row.reason
                else None)
        ledger.settle(row, Status.sending, held, stamp, sent_at=now, attempts=row.attempts + 1)
        outcome[Status.sending] += 1
        if contact is None:  # a public post
            claimed.append(Claimed(row.id, row.key, row.channel, row.event_id, row.wave,
                                   None, None, None, spec.language, spec.timezone))
        else:
            claimed.append(Claimed(row.id, row.key, row.channel, row.event_id, row.wave,
                                   contact.id, str(getattr(contact, ADDRESS_FIELD[row.channel])),
                                   contact.name, contact.language, contact.timezone))
    return claimed, outcome


def _render(c: Claimed, spec: EventSpec, settings: Settings, override: str | None,
            invitations: Invitations) -> OutgoingMessage:
    lang = pick_language(c.language, spec, settings.default_language)
    # the digest's own link unsubscribes from the digest only (its page offers everything)
    unsub = (unsubscribe_url(settings, c.contact_id, DIGEST if c.wave == DIGEST else c.channel)
             if c.contact_id else None)
    ctx = context(spec, c.wave, c.channel, name=c.name, tz=c.timezone, lang=lang,
                  unsubscribe_url=unsub, settings=settings)
    r = render(spec, c.wave, c.channel, lang, ctx, override, settings=settings)
    headers: dict[str, str] = {}
    attachments: list[Attachment] = []
    if c.channel == ChannelName.email:
        headers, attachments = email_extras(spec, lang, ctx, unsub, invitations)
    return OutgoingMessage(id=c.message_id, key=c.key, channel=c.channel, address=c.address,
                           language=lang, text=r.text, subject=r.subject, html=r.html,
                           headers=headers, attachments=attachments, event_slug=spec.slug,
                           wave=c.wave, personal={k: v for k, v in
                                                  (("name", c.name), ("unsubscribe", unsub)) if v})


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
    outcome.pop(Status.sending, None)
    by_channel: dict[str, list[Claimed]] = {}
    for c in claimed:
        by_channel.setdefault(c.channel, []).append(c)
    results: list[Outcome] = []
    misconfigured: list[ConfigurationError] = []
    invitations = Invitations()
    for channel_name, items in by_channel.items():
        outgoing: list[OutgoingMessage] = []
        for c in items:
            try:
                outgoing.append(_render(c, specs[c.event_id], settings, overrides[c.event_id],
                                        invitations))
            except TemplateProblem as exc:
                results.append(Outcome(c.message_id, Status.failed, str(exc)))
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
            results.extend(Outcome(m.id, Status.planned, f"not sent: {exc}"[:300])
                           for m in outgoing if m.id not in settled)
        except ChannelError as exc:
            delivered = [SendResult(m.id, error=exc) for m in outgoing]
        for res in delivered:
            if res.ok:
                results.append(Outcome(res.message_id, Status.sent,
                                       provider_id=res.provider_message_id))
            else:
                # the request may have reached the provider: never silently sent again
                status = Status.uncertain if res.error.maybe_sent else Status.failed
                results.append(Outcome(res.message_id, status, str(res.error)[:300],
                                       error=res.error))
    _record(results, settings, claimed)
    for r in results:
        outcome[r.status] += 1
    if misconfigured:
        raise misconfigured[0]
    return outcome


def _record(results: list[Outcome], settings: Settings, claimed: list[Claimed]) -> None:
    """The batch's outcomes into the ledger, and what permanent failures say about contacts."""
    if not results:
        return
    by_id = {c.message_id: c for c in claimed}
    stamp = utcnow()
    with session_scope(settings.database_url) as s:
        ledger.record_outcomes(s, results, stamp)
        for r in results:
            c = by_id.get(r.message_id)
            if isinstance(r.error, PermanentError) and c and c.contact_id is not None:
                _mark_contact(s, c.contact_id, c.channel, r.error, stamp)


def _mark_contact(s: Session, contact_id: int, channel: str, error: PermanentError,
                  stamp: datetime) -> None:
    """What a permanent failure says about the contact: opted out (SMS 21610) or unreachable."""
    if error.opted_out:
        withdraw_consent(s, contact_id, channel, source=f"provider: {error}", at=stamp)
    if error.unreachable:
        mark_unreachable(s, contact_id, channel, str(error), stamp)
