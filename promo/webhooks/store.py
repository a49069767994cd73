"""What every webhook writes: the event itself, once, and its effect on the ledger.

The delivery vocabulary follows django-anymail's: each provider module maps its own
statuses to these words with a table, and anything it does not know becomes `unknown`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from promo.db.models import Message, WebhookEvent

DELIVERY_STATUSES = (
    "queued", "sent", "delivered", "failed", "bounced", "opened", "clicked",
    "unsubscribed", "complained", "unknown",
)

# How far along its way an event says a message is. Providers deliver callbacks out of
# order (a `sent` may arrive after `delivered`): an earlier step never overwrites a later one.
_PROGRESS = {
    "unknown": 0, "queued": 1, "sent": 2, "delivered": 3, "opened": 4, "clicked": 5,
    "failed": 6, "bounced": 6, "unsubscribed": 7, "complained": 8,
}
# the ledger statuses a provider's report may move: a decision never sent stays as it is
_REPORTABLE = ("sent", "delivered", "failed", "uncertain")
_REACHED = ("delivered", "opened", "clicked", "unsubscribed", "complained")


def normalize(table: Mapping[str, str], value: str | None) -> str:
    """A provider's status in our vocabulary; `unknown` for anything the table lacks."""
    return table.get((value or "").strip().lower(), "unknown")


def dedupe_key(provider: str, *parts: object) -> str:
    """`provider:part:part`, hashed when it would not fit the column."""
    key = ":".join([provider, *(str(p) for p in parts)])
    if len(key) > 300:
        key = f"{provider}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def body_digest(raw: Any) -> str:
    """A stable digest of a payload, for events that carry no id of their own."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()


def _insert(session: Session):
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(WebhookEvent)


def record_once(session: Session, provider: str, key: str, raw: Any) -> bool:
    """Store the raw event; False when the same event was stored before (a repeat).

    The unique `dedupe_key` is what makes every handler idempotent: a handler applies
    its effect only when this returns True, in the same transaction, so an event is
    either stored and applied or neither. Two deliveries racing each other serialize on
    the key (SQLite: one writer; PostgreSQL: the second insert waits and then skips).
    """
    stmt = (_insert(session)
            .values(provider=provider, dedupe_key=key, raw=raw, normalized=None)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(WebhookEvent.id))
    # RETURNING, not rowcount: psycopg reports no rowcount for this statement
    return session.execute(stmt).scalar() is not None


def set_normalized(session: Session, key: str, normalized: dict[str, Any]) -> None:
    session.execute(
        update(WebhookEvent).where(WebhookEvent.dedupe_key == key).values(normalized=normalized)
    )


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
        if status in _REACHED and message.status != "delivered":
            new_status = "delivered"
        elif status in ("failed", "bounced") and message.status in ("sent", "uncertain"):
            new_status = "failed"
        elif status in ("queued", "sent") and message.status == "uncertain":
            new_status = "sent"
    if new_status:
        changes["status"] = new_status
        if new_status == "failed":
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
