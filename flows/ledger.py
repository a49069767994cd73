"""The message ledger: the one module that writes `Message` rows. Records decisions
idempotently, claims and settles them at send time, records what the providers answered,
and reads back what was decided."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, true, update
from sqlalchemy.orm import Session

from channels.base import ChannelError
from flows.decide import Decision
from promo.db import hold_contacts, is_postgres
from promo.db.bulk import insert_new, time_writer
from promo.db.models import Contact, Event, Message, utcnow
from promo.domain.names import DIRECT, SENT_STATUSES, WAITING, Delivery, Status


def message_key(slug: str, wave: str, contact_id: int | None, channel: str) -> str:
    return f"{slug}/{wave}/{contact_id if contact_id is not None else 'broadcast'}/{channel}"


def decided_contacts(session: Session, event_id: int, wave: str,
                     limit: int | None = None) -> set[int]:
    """Contacts that already have a decision for this wave (a re-run leaves them be)."""
    q = select(Message.contact_id).where(
        Message.event_id == event_id, Message.wave == wave, Message.contact_id.is_not(None)
    ).distinct().limit(limit)
    return set(session.scalars(q))


def drop_waiting(session: Session, event_id: int, wave: str, reason: str) -> int:
    """The wave's messages still planned or held become `dropped`, with the reason."""
    return session.execute(
        update(Message).where(Message.event_id == event_id, Message.wave == wave,
                              Message.status.in_(WAITING))
        .values(status=Status.dropped, reason=reason, updated_at=utcnow())
    ).rowcount or 0


_DECISION_COLUMNS = ("key", "contact_id", "channel", "status", "reason", "send_at",
                     "counts_for_caps")


def record_decisions(
    session: Session,
    event: Event,
    wave: str,
    decisions: Iterable[Decision],
    *,
    counts_for_caps: bool,
    contacts_held: bool = False,
) -> None:
    """Insert the decisions; a key already in the ledger is left as it is.

    `contacts_held`: the caller took `hold_contacts` before it read who the decisions are
    for, so every contact they name is still there: the wave's first decisions then go
    straight into the ledger (PostgreSQL's COPY, no checks per row).

    A wave of a million contacts records a million rows or more: they go in through the
    database's bulk path (`promo.db.bulk`), a chunk at a time while `decisions` (which may
    be a generator: the wave's are decided as they go in) makes the next.
    """
    # what the foreign keys did (migration 0006), once for the whole write: the event is
    # there and stays (and is never deleted), a contact forgotten before now gets no row
    # (`refers` below), one forgotten later waits for this transaction to end and then
    # finds its rows to unlink
    hold_contacts(session)
    session.execute(select(Event.id).where(Event.id == event.id).with_for_update(key_share=True)
                    ).one()
    fresh = _first_of_wave(session, event.id, wave) and contacts_held
    conn = session.connection()
    when = time_writer(conn)
    now = when(utcnow())
    slug = event.slug
    rows = (
        (message_key(slug, wave, d.contact_id, d.channel), d.contact_id, d.channel, d.status,
         d.reason, when(d.send_at), counts_for_caps and d.contact_id is not None)
        for d in decisions
    )
    insert_new(conn, "messages", _DECISION_COLUMNS, rows, unique="key",
               same={"event_id": event.id, "wave": wave, "decided_at": now, "attempts": 0,
                     "updated_at": now},
               refers={"contact_id": "contacts"}, fresh=fresh)


def _first_of_wave(session: Session, event_id: int, wave: str) -> bool:
    """Whether these are the wave's first rows (none of their keys can be there yet). On
    PostgreSQL the writers of one wave's rows take turns from here to their commit: a
    second run of the wave finds the first one's rows. SQLite: one writer at a time."""
    if is_postgres(session.get_bind()):
        session.execute(select(func.pg_advisory_xact_lock(event_id, func.hashtext(wave))))
    return session.scalar(select(Message.id).where(
        Message.event_id == event_id, Message.wave == wave).limit(1)) is None


def load_histories(
    session: Session,
    around: datetime,
    span: timedelta,
    contact_ids: Iterable[int] | None = None,
    *,
    include_planned: bool = True,
) -> dict[int, dict[str, list[datetime]]]:
    """Each contact's messages that count for caps within `span` of `around`: those sent
    (or possibly sent) and, when predicting, those planned or deferred by other waves."""
    lo, hi = around - span, around + span
    when = func.coalesce(Message.sent_at, Message.send_at)
    q = select(Message.contact_id, Message.channel, when).where(
        Message.counts_for_caps.is_(True),
        Message.contact_id.is_not(None),
        Message.status.in_((*SENT_STATUSES, *WAITING) if include_planned
                           else SENT_STATUSES),
        when > lo,
        when < hi,
    )
    if contact_ids is not None:
        ids = list(contact_ids)
        if not ids:
            return {}
        q = q.where(Message.contact_id.in_(ids))
    out: dict[int, dict[str, list[datetime]]] = {}
    for cid, channel, at in session.connection().execute(q):  # Core: plain rows
        h = out.setdefault(cid, {})
        h.setdefault(channel, []).append(at)
        h.setdefault(DIRECT, []).append(at)
    for h in out.values():
        for times in h.values():
            times.sort()
    return out


# A share of a wave: (part, parts), the messages of the contacts whose id is `part` modulo
# `parts` (a public post, with no contact, is part 0's). By contact rather than by message,
# so that each channel splits evenly and one contact's messages (mode `all`, a fallback's
# next channel) stay with one part: two parts seldom wait for the same contact's lock.
Share = tuple[int, int]


def _in_share(share: Share | None):
    if share is None:
        return true()
    part, parts = share
    mine = (Message.contact_id % parts) == part
    return or_(Message.contact_id.is_(None), mine) if part == 0 else mine


def due_page(session: Session, event_id: int, wave: str, channel: str, now: datetime,
             after: int | None, limit: int, share: Share | None = None,
             descending: bool = False) -> list[int]:
    """The next `limit` due messages (planned, or held until now) of one channel of the
    wave, by id after `after` (or before it, `descending`; None: from the start), of one
    share only if given: the wave streams its messages page by page, never all at once (a
    page takes 0.2-0.5 ms in a ledger of a million, SQLite or PostgreSQL)."""
    q = select(Message.id).where(
        Message.event_id == event_id, Message.wave == wave, Message.channel == channel,
        Message.status.in_(WAITING), Message.send_at <= now, _in_share(share))
    if descending:
        q = q.where(Message.id < after) if after is not None else q
        q = q.order_by(Message.id.desc())
    else:
        q = q.where(Message.id > after) if after is not None else q
        q = q.order_by(Message.id)
    return list(session.scalars(q.limit(limit)))


def due_counts(session: Session, event_id: int, wave: str, now: datetime,
               share: Share | None = None) -> dict[str, int]:
    """channel -> how many of the wave's messages (of one share, if given) are due now."""
    return dict(session.execute(select(Message.channel, func.count()).where(
        Message.event_id == event_id, Message.wave == wave, Message.status.in_(WAITING),
        Message.send_at <= now, _in_share(share)).group_by(Message.channel)).all())


@dataclass
class Interrupted:
    """A message a dead worker had claimed: its request may have been in flight."""

    id: int
    key: str
    channel: str
    contact_id: int | None
    claimed_by: str | None
    claimed_at: datetime | None


def in_flight(session: Session, event_id: int, wave: str) -> dict[str | None, int]:
    """worker id -> how many of the wave's messages it holds in `sending`."""
    return dict(session.execute(select(Message.claimed_by, func.count()).where(
        Message.event_id == event_id, Message.wave == wave,
        Message.status == Status.sending).group_by(Message.claimed_by)).all())


def take_over(session: Session, event_id: int, wave: str, dead: set[str], me: str,
              unclaimed_before: datetime) -> list[Interrupted]:
    """The wave's `sending` messages of dead workers (and, from before workers had leases,
    unclaimed ones older than `unclaimed_before`), now claimed by `me` to be resolved
    (`flows.resume`); a live worker's are never touched."""
    owner = Message.claimed_by.in_(dead) if dead else None
    legacy = Message.claimed_by.is_(None) & (Message.updated_at < unclaimed_before)
    q = select(Message).where(Message.event_id == event_id, Message.wave == wave,
                              Message.status == Status.sending,
                              legacy if owner is None else (owner | legacy))
    rows = session.execute(q.order_by(Message.id).with_for_update()
                           .execution_options(populate_existing=True)).scalars().all()
    out = [Interrupted(r.id, r.key, r.channel, r.contact_id, r.claimed_by, r.claimed_at)
           for r in rows]
    for r in rows:
        r.claimed_by = me
    return out


def decided_waves(session: Session, event_id: int) -> set[str]:
    """The event's waves that have decisions in the ledger (they ran, at least in part)."""
    return set(session.scalars(
        select(Message.wave).where(Message.event_id == event_id).distinct()))


def next_due(session: Session, event_id: int, wave: str) -> datetime | None:
    q = select(func.min(Message.send_at)).where(
        Message.event_id == event_id, Message.wave == wave,
        Message.status.in_(WAITING),
    )
    return session.scalar(q)


def wave_outcomes(session: Session, event_id: int, wave: str) -> dict[str, dict[str, int]]:
    q = (
        select(Message.channel, Message.status, func.count())
        .where(Message.event_id == event_id, Message.wave == wave)
        .group_by(Message.channel, Message.status)
    )
    out: dict[str, dict[str, int]] = {}
    for channel, status, n in session.execute(q):
        out.setdefault(channel, {})[status] = n
    return out


# -- sending ---------------------------------------------------------------------------------

def lock_waiting(session: Session, message_ids: list[int]) -> tuple[list[Message], list[int]]:
    """The batch's rows still waiting (planned or held), locked for this transaction, and
    their contacts' ids (locked too on PostgreSQL, in id order, so that two workers checking
    one contact's caps take turns; SQLite's transaction began IMMEDIATE: one writer)."""
    contact_ids = sorted(set(session.scalars(
        select(Message.contact_id).where(Message.id.in_(message_ids),
                                         Message.contact_id.is_not(None)))))
    if is_postgres(session.get_bind()) and contact_ids:
        session.execute(
            select(Contact.id).where(Contact.id.in_(contact_ids)).order_by(Contact.id)
            .with_for_update()
        ).all()
    # read the rows only now, under the locks and FOR UPDATE: a run that claimed them a moment
    # ago has committed `sending`, and they no longer match (PostgreSQL re-checks the WHERE)
    rows = session.execute(
        select(Message).where(Message.id.in_(message_ids), Message.status.in_(WAITING))
        .order_by(Message.id).with_for_update().execution_options(populate_existing=True)
    ).scalars().all()
    return list(rows), contact_ids


def settle(row: Message, status: Status, reason: str | None, stamp: datetime,
           **fields: object) -> None:
    """A claimed row's new status (and reason, and any of send_at, sent_at, attempts,
    claimed_by, claimed_at)."""
    row.status, row.reason, row.updated_at = status, reason, stamp
    for k, v in fields.items():
        setattr(row, k, v)


@dataclass
class Outcome:
    """What became of one claimed message: sent (with the provider's id), failed, uncertain,
    or back to planned (its channel is misconfigured)."""

    message_id: int
    status: Status
    reason: str | None = None
    provider_id: str | None = None
    error: ChannelError | None = None


def record_outcomes(session: Session, outcomes: list[Outcome], stamp: datetime) -> None:
    """The providers' answers, one executemany by primary key (not a statement per message)."""
    rows = []
    for o in outcomes:
        values: dict[str, object] = {"id": o.message_id, "status": o.status, "reason": o.reason,
                                     "updated_at": stamp}
        if o.status == Status.sent and o.reason is None:
            del values["reason"]  # keep "held by quiet hours ..." from the claim
        if o.provider_id:
            values["provider_message_id"] = o.provider_id
        if o.status in (Status.failed, Status.planned):
            values["sent_at"] = None  # a failed message does not count for caps
        rows.append(values)
    if rows:
        session.execute(update(Message), rows)


# -- what an operator settles: messages whose fate nobody knows -------------------------------

def uncertain_groups(session: Session, event_id: int) -> list[tuple[str, str, str | None, int]]:
    """(wave, channel, reason, count) of the event's `uncertain` messages."""
    return [tuple(r) for r in session.execute(  # type: ignore[misc]
        select(Message.wave, Message.channel, Message.reason, func.count())
        .where(Message.event_id == event_id, Message.status == Status.uncertain)
        .group_by(Message.wave, Message.channel, Message.reason)
        .order_by(Message.wave, Message.channel))]


def settle_uncertain(session: Session, event_id: int, wave: str, channel: str, sent: bool,
                     stamp: datetime) -> int:
    """An operator's word on a group of uncertain messages: they went (`sent`), or they are
    to be sent again (`planned`, due at once)."""
    values: dict[str, Any] = (
        {"status": Status.sent, "reason": "marked sent by an operator"} if sent else
        {"status": Status.planned, "reason": None, "sent_at": None, "send_at": stamp})
    return session.execute(
        update(Message).where(Message.event_id == event_id, Message.wave == wave,
                              Message.channel == channel, Message.status == Status.uncertain)
        .values(updated_at=stamp, **values)).rowcount or 0


# -- delivery events: what the providers report later ----------------------------------------

# How far along its way an event says a message is. Providers deliver callbacks out of
# order (a `sent` may arrive after `delivered`): an earlier step never overwrites a later one.
_PROGRESS = {
    Delivery.unknown: 0, Delivery.queued: 1, Delivery.sent: 2, Delivery.delivered: 3,
    Delivery.opened: 4, Delivery.clicked: 5, Delivery.failed: 6, Delivery.bounced: 6,
    Delivery.unsubscribed: 7, Delivery.complained: 8,
}
# the ledger statuses a provider's report may move: a decision never sent stays as it is
_REPORTABLE = (Status.sent, Status.delivered, Status.failed, Status.uncertain)
_REACHED = (Delivery.delivered, Delivery.opened, Delivery.clicked, Delivery.unsubscribed,
            Delivery.complained)


def find_message_by_provider_id(session: Session, provider_id: str) -> Message | None:
    if not provider_id:
        return None
    return session.scalars(
        select(Message).where(Message.provider_message_id == provider_id).limit(1)
    ).first()


def find_message_by_key(session: Session, key: str) -> Message | None:
    if not key:
        return None
    return session.scalar(select(Message).where(Message.key == key))


def apply_delivery(message: Message, status: str, detail: str | None, now: datetime) -> dict:
    """Move a ledger row by a provider's report; returns what changed (empty: nothing).

    `delivery_status` keeps the furthest step reported. The row's own status follows
    evidence: a message the provider delivered (or whose recipient opened it) is
    `delivered`, even one the sender had recorded as failed or uncertain; a failure or
    bounce makes a sent message `failed` with the provider's reason; a message the
    provider holds (queued, sent) is no longer `uncertain`.
    """
    changes: dict[str, Any] = {}
    current = message.delivery_status or "unknown"
    if _PROGRESS.get(status, 0) > _PROGRESS.get(current, 0):
        changes["delivery_status"] = status
    new_status = None
    if message.status in _REPORTABLE:
        if status in _REACHED and message.status != Status.delivered:
            new_status = Status.delivered
        elif (status in (Delivery.failed, Delivery.bounced)
              and message.status in (Status.sent, Status.uncertain)):
            new_status = Status.failed
        elif status in (Delivery.queued, Delivery.sent) and message.status == Status.uncertain:
            new_status = Status.sent
    if new_status:
        changes["status"] = new_status
        if new_status == Status.failed:
            changes["reason"] = (detail or f"provider reported {status}")[:300]
        else:
            changes["reason"] = f"provider reported {status}"
            if message.sent_at is None:  # the sender recorded a failure: it went out after all
                changes["sent_at"] = now
    for field, value in changes.items():
        setattr(message, field, value)
    if changes:
        message.updated_at = now
    return changes
