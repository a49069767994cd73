"""The send step for one batch of ledger rows: claim, render, send, record.

The claim re-checks the rules (`promo.domain.rules.judge`, the planner's own) inside one
database transaction
(SQLite: `BEGIN IMMEDIATE`, one writer; PostgreSQL: the contacts' rows locked in id
order), so waves of different campaigns sending at once on different workers never
exceed a cap. Nothing is sent after the event starts.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audiences.contacts import mark_unreachable, withdraw_consent
from audiences.segments import ADDRESS_FIELD, contact_block
from channels import get_channel
from channels.base import (
    Channel,
    ChannelError,
    ConfigurationError,
    OutgoingMessage,
    PermanentError,
    SendResult,
)
from channels.context import Contexts, pick_language
from channels.mail import Attachment, Invitations, email_extras
from channels.outbox import OutboxChannel
from channels.render import TemplateProblem, render
from flows import ledger
from flows.digest import claim_spacing
from flows.fallback import FALLBACK, fall_back
from flows.lease import current_lease
from flows.ledger import Outcome
from flows.store import event_spec
from promo.db import hold_contacts, session_scope
from promo.db.models import Consent, Contact, Event, Message, Registration, utcnow
from promo.domain.event import EventSpec
from promo.domain.names import (
    BROADCAST_CHANNELS,
    DIGEST,
    PROMOTIONAL_WAVES,
    ChannelName,
    Status,
)
from promo.domain.rules import Cap, SendWindow, add_to_history, judge, next_send_time
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
    reason: str | None = None


@dataclass
class ClaimRules:
    """The settings' caps and quiet hours, parsed once per batch, not per group."""

    caps: dict[str, Cap]
    windows: dict[str, SendWindow]

    @classmethod
    def of(cls, settings: Settings) -> ClaimRules:
        return cls(settings.cap_rules(), settings.send_windows())


def claim(session: Session, message_ids: list[int], now: datetime, settings: Settings,
          events: dict[int, EventSpec], worker: str | None = None,
          rules: ClaimRules | None = None) -> tuple[list[Claimed], Counter]:
    """Move due rows to `sending` (claimed by `worker`, the process's lease) where the rules
    (`judge`) allow it now; the others to what the rules say (held, capped, suppressed,
    dropped)."""
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
        for c in session.scalars(select(Consent).where(
            Consent.contact_id.in_(contact_ids), Consent.channel.in_({r.channel for r in rows})))
    }
    rules = rules or ClaimRules.of(settings)
    caps, windows = rules.caps, rules.windows
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
        # a message held by quiet hours keeps saying so once it goes, a fallback why it came
        held = (f"held by {row.reason}" if row.status == Status.deferred and row.reason
                else row.reason if row.reason and row.reason.startswith(FALLBACK) else None)
        ledger.settle(row, Status.sending, held, stamp, sent_at=now, attempts=row.attempts + 1,
                      claimed_by=worker, claimed_at=stamp)
        outcome[Status.sending] += 1
        if contact is None:  # a public post
            claimed.append(Claimed(row.id, row.key, row.channel, row.event_id, row.wave,
                                   None, None, None, spec.language, spec.timezone, held))
        else:
            claimed.append(Claimed(row.id, row.key, row.channel, row.event_id, row.wave,
                                   contact.id, str(getattr(contact, ADDRESS_FIELD[row.channel])),
                                   contact.name, contact.language, contact.timezone, held))
    return claimed, outcome


@dataclass
class Batch:
    """What the groups of one batch share: its events and their template folders, the
    rules parsed once, and what rendering works out once for many messages (the invitation,
    the recipients' common context, which template each part comes from)."""

    specs: dict[int, EventSpec]
    overrides: dict[int, str | None]
    rules: ClaimRules
    invitations: Invitations = field(default_factory=Invitations)
    contexts: Contexts = field(default_factory=Contexts)
    templates: dict = field(default_factory=dict)


def _render(c: Claimed, batch: Batch, settings: Settings) -> OutgoingMessage:
    spec = batch.specs[c.event_id]
    lang = pick_language(c.language, spec, settings.default_language)
    # the digest's own link unsubscribes from the digest only (its page offers everything)
    unsub = (unsubscribe_url(settings, c.contact_id, DIGEST if c.wave == DIGEST else c.channel)
             if c.contact_id else None)
    ctx = batch.contexts.get(spec, c.wave, c.channel, name=c.name, tz=c.timezone, lang=lang,
                             unsubscribe_url=unsub, settings=settings)
    r = render(spec, c.wave, c.channel, lang, ctx, batch.overrides[c.event_id],
               settings=settings, chosen=batch.templates)
    headers: dict[str, str] = {}
    attachments: list[Attachment] = []
    if c.channel == ChannelName.email:
        headers, attachments = email_extras(spec, lang, ctx, unsub, batch.invitations)
    return OutgoingMessage(id=c.message_id, key=c.key, channel=c.channel, address=c.address,
                           language=lang, text=r.text, subject=r.subject, html=r.html,
                           headers=headers, attachments=attachments, event_slug=spec.slug,
                           wave=c.wave, personal={k: v for k, v in
                                                  (("name", c.name), ("unsubscribe", unsub)) if v})


def group_size(channel: Channel) -> int:
    """How many messages are claimed at once: what `concurrency` provider calls carry, and
    no more calls than about half a second of the account's pace, so that after a crash only
    what was in flight, or next in line, is in doubt. A call may carry several messages
    (SendGrid personalizations, VK peers with the same text): the batch caps the group. The
    outbox, with no pace, writes 200 at a time."""
    if channel.limiter is None:
        return min(max(1, channel.concurrency * channel.max_batch), 200)
    calls = max(1, min(channel.concurrency, math.ceil(channel.limiter.rate * GROUP_SECONDS)))
    return calls * channel.max_batch


GROUP_SECONDS = 0.5


def send_batch(message_ids: list[int], now: datetime, settings: Settings,
               logger: logging.Logger | None = None) -> Counter:
    """Send one batch of ledger rows, a small group at a time: claim the group (the rules
    checked again in the claim's transaction), render it, send it, record what the provider
    answered, then the next group. Returns outcome -> count.

    A message is `sending` only while its group is out; a misconfigured channel stops the
    batch (what was not sent stays planned) and is raised once the rest is recorded.
    """
    logger = logger or log
    lease = current_lease(settings.database_url, settings.send_lease_seconds)
    with session_scope(settings.database_url) as s:
        rows = s.execute(select(Message.id, Message.event_id, Message.channel, Message.wave)
                         .where(Message.id.in_(message_ids)).order_by(Message.id)).all()
        events_rows = {e.id: e for e in s.scalars(
            select(Event).where(Event.id.in_({r.event_id for r in rows})))}
        boxed = _mailbox_waves(s, {(r.event_id, r.wave) for r in rows if r.channel == "email"},
                               settings)
    batch = Batch({i: event_spec(e) for i, e in events_rows.items()},
                  {i: e.definition.get("_templates_dir") for i, e in events_rows.items()},
                  ClaimRules.of(settings))
    by_channel: dict[str, list[int]] = {}
    for r in rows:
        by_channel.setdefault(r.channel, []).append(r.id)
    outcome: Counter = Counter()
    for channel_name, ids in by_channel.items():
        channel = get_channel(channel_name, settings, logger)
        if isinstance(channel, OutboxChannel):
            channel.mailbox_waves = {(events_rows[e].slug, w) for e, w in boxed}
        try:
            size = group_size(channel)
            for i in range(0, len(ids), size):
                send_group(ids[i:i + size], channel, now, settings, batch, lease.id, outcome)
        finally:
            channel.close()
    return outcome


# (database, event id, wave) of the waves known to have more emails than the outbox's
# limit: a wave only grows, so the answer stays (a smaller wave is counted again, cheaply)
_large_waves: set[tuple[str, int, str]] = set()


def _mailbox_waves(s: Session, waves: set[tuple[int, str]],
                   settings: Settings) -> set[tuple[int, str]]:
    """The waves whose emails the outbox writes into one mailbox file: more emails in the
    ledger than `outbox_eml_limit`, counted once per process."""
    out = set()
    for event_id, wave in waves:
        known = (settings.database_url, event_id, wave)
        if known not in _large_waves:
            emails = s.scalar(select(func.count()).select_from(Message).where(
                Message.event_id == event_id, Message.wave == wave, Message.channel == "email"))
            if emails <= settings.outbox_eml_limit:
                continue
            _large_waves.add(known)
        out.add((event_id, wave))
    return out


def send_group(ids: list[int], channel: Channel, now: datetime, settings: Settings,
               batch: Batch, worker: str, outcome: Counter) -> None:
    """Claim, render, send and record one group (two transactions: the claim, the record)."""
    with session_scope(settings.database_url) as s:
        claimed, decided = claim(s, ids, now, settings, batch.specs, worker, batch.rules)
    decided.pop(Status.sending, None)
    outcome.update(decided)
    if not claimed:
        return
    results: list[Outcome] = []
    outgoing: list[OutgoingMessage] = []
    misconfigured: ConfigurationError | None = None
    try:
        for c in claimed:
            try:
                outgoing.append(_render(c, batch, settings))
            except TemplateProblem as exc:
                results.append(Outcome(c.message_id, Status.failed, str(exc)))
        # the channel batches, paces and retries; every message gets a result
        try:
            delivered = channel.deliver(outgoing)
        except ConfigurationError as exc:
            # nothing more went out on this channel: back to planned, for a run with the
            # settings fixed; raised below, once everything is recorded
            misconfigured = exc
            delivered = list(getattr(exc, "results", []))
        except ChannelError as exc:
            delivered = [SendResult(m.id, error=exc) for m in outgoing]
    except BaseException as exc:
        # a bug or an interrupt with the group claimed: what left cannot be known
        _record(_unsettled(claimed, results, Status.uncertain,
                           f"the send step stopped: {type(exc).__name__}"), settings,
                claimed, now)
        raise
    by_claim = {c.message_id: c for c in claimed}
    for res in delivered:
        if res.ok:
            c = by_claim[res.message_id]
            # a fallback says why it went on this channel: "telegram failed: ... -> sent by email"
            reason = (f"{c.reason[len(FALLBACK):]} -> sent by {c.channel}"
                      if c.reason and c.reason.startswith(FALLBACK) else None)
            results.append(Outcome(res.message_id, Status.sent, reason,
                                   provider_id=res.provider_message_id))
        else:
            # the request may have reached the provider: never silently sent again
            status = Status.uncertain if res.error.maybe_sent else Status.failed
            results.append(Outcome(res.message_id, status, str(res.error)[:300],
                                   error=res.error))
    if misconfigured is not None:
        results += _unsettled(claimed, results, Status.planned, f"not sent: {misconfigured}")
    _record(results, settings, claimed, now)
    for r in results:
        outcome[r.status] += 1
    if misconfigured is not None:
        raise misconfigured


def _unsettled(claimed: list[Claimed], results: list[Outcome], status: Status,
               reason: str) -> list[Outcome]:
    done = {r.message_id for r in results}
    return [Outcome(c.message_id, status, reason[:300]) for c in claimed
            if c.message_id not in done]


def _record(results: list[Outcome], settings: Settings, claimed: list[Claimed],
            now: datetime) -> None:
    """The group's outcomes into the ledger in one transaction, what permanent failures say
    about contacts, and, in a fallback wave, the next channel for those who failed."""
    if not results:
        return
    by_id = {c.message_id: c for c in claimed}
    stamp = utcnow()
    with session_scope(settings.database_url) as s:
        # first, before any row is locked: a fallback below records new rows (which holds the
        # contacts), and a forget waiting for this transaction must not hold what it needs
        hold_contacts(s)
        ledger.record_outcomes(s, results, stamp)
        failed: list[tuple[Claimed, str]] = []
        for r in results:
            c = by_id.get(r.message_id)
            if isinstance(r.error, PermanentError) and c and c.contact_id is not None:
                _mark_contact(s, c.contact_id, c.channel, r.error, stamp)
                failed.append((c, r.reason or str(r.error)))
        if failed:
            fall_back(s, [(c.event_id, c.wave, c.contact_id, c.channel, why)
                          for c, why in failed], now, settings)


def _mark_contact(s: Session, contact_id: int, channel: str, error: PermanentError,
                  stamp: datetime) -> None:
    """What a permanent failure says about the contact: opted out (SMS 21610) or unreachable."""
    if error.opted_out:
        withdraw_consent(s, contact_id, channel, source=f"provider: {error}", at=stamp)
    if error.unreachable:
        mark_unreachable(s, contact_id, channel, str(error), stamp)
