"""The message ledger: recording decisions idempotently and reading back what was decided."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from channels.rules import SENT_STATUSES
from flows.decide import Decision
from promo.db.models import Event, Message, utcnow

# A message stays in `sending` only while a worker talks to the provider. Older than
# this, the worker died between sending and recording: nobody knows if it went out.
SENDING_LEASE = timedelta(minutes=15)


def message_key(slug: str, wave: str, contact_id: int | None, channel: str) -> str:
    return f"{slug}/{wave}/{contact_id if contact_id is not None else 'broadcast'}/{channel}"


def _insert(session: Session):  # noqa: ANN202
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(Message)


def decided_contacts(session: Session, event_id: int, wave: str) -> set[int]:
    """Contacts that already have a decision for this wave (a re-run leaves them be)."""
    q = select(Message.contact_id).where(
        Message.event_id == event_id, Message.wave == wave, Message.contact_id.is_not(None)
    ).distinct()
    return set(session.scalars(q))


def record_decisions(
    session: Session,
    event: Event,
    wave: str,
    decisions: Iterable[Decision],
    *,
    counts_for_caps: bool,
    chunk: int = 5000,
) -> None:
    """Insert the decisions; a key already in the ledger is left as it is."""
    now = utcnow()
    stmt = _insert(session).on_conflict_do_nothing(index_elements=["key"])
    rows: list[dict] = []

    def flush() -> None:
        if rows:
            session.execute(stmt, rows)
            rows.clear()

    for d in decisions:
        rows.append({
            "key": message_key(event.slug, wave, d.contact_id, d.channel),
            "event_id": event.id,
            "wave": wave,
            "contact_id": d.contact_id,
            "channel": d.channel,
            "status": d.status,
            "reason": d.reason,
            "send_at": d.send_at,
            "decided_at": now,
            "counts_for_caps": counts_for_caps and d.contact_id is not None,
            "attempts": 0,
            "updated_at": now,
        })
        if len(rows) >= chunk:
            flush()
    flush()


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
    from channels.rules import DIRECT

    lo, hi = around - span, around + span
    when = func.coalesce(Message.sent_at, Message.send_at)
    q = select(Message.contact_id, Message.channel, when).where(
        Message.counts_for_caps.is_(True),
        Message.contact_id.is_not(None),
        Message.status.in_((*SENT_STATUSES, "planned", "deferred") if include_planned
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
    for cid, channel, at in session.execute(q):
        h = out.setdefault(cid, {})
        h.setdefault(channel, []).append(at)
        h.setdefault(DIRECT, []).append(at)
    for h in out.values():
        for times in h.values():
            times.sort()
    return out


def mark_interrupted(session: Session, event_id: int, wave: str, *, dedup_channels: set[str]) -> int:
    """Messages left in `sending` by a worker that died: `uncertain` (never re-sent) unless
    the channel's provider deduplicates, in which case they may safely go again."""
    stale = utcnow() - SENDING_LEASE
    base = (Message.event_id == event_id, Message.wave == wave, Message.status == "sending",
            Message.updated_at < stale)
    n = session.execute(
        update(Message).where(*base, Message.channel.not_in(dedup_channels)).values(
            status="uncertain", reason="the worker stopped while sending; not re-sent")
    ).rowcount or 0
    session.execute(
        update(Message).where(*base, Message.channel.in_(dedup_channels)).values(
            status="planned", reason="re-sent after an interrupted run (provider deduplicates)")
    )
    return n


def due_messages(session: Session, event_id: int, wave: str, now: datetime) -> list[tuple[int, str]]:
    """(id, channel) of the wave's messages that are due: planned or deferred until now."""
    q = select(Message.id, Message.channel).where(
        Message.event_id == event_id,
        Message.wave == wave,
        Message.status.in_(("planned", "deferred")),
        Message.send_at <= now,
    ).order_by(Message.channel, Message.contact_id)
    return [(i, c) for i, c in session.execute(q)]


def next_due(session: Session, event_id: int, wave: str) -> datetime | None:
    q = select(func.min(Message.send_at)).where(
        Message.event_id == event_id, Message.wave == wave,
        Message.status.in_(("planned", "deferred")),
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
