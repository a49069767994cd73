"""What every webhook keeps: the event itself, once, with what it was normalized to. Its
effect on the ledger is `flows.ledger.apply_delivery`'s.

The delivery vocabulary (`promo.domain.names.Delivery`) follows django-anymail's: each
provider module maps its own statuses to these words with a table, and anything it does
not know becomes `unknown`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from promo.db.models import WebhookEvent
from promo.domain.names import Delivery


@dataclass(frozen=True)
class DeliveryEvent:
    """One provider report about one message, parsed into our vocabulary with the raw payload
    kept: each webhook verifies the request, parses it into these, then applies them."""

    provider: str
    provider_status: str
    status: Delivery
    detail: str  # what the ledger's reason says when it fails the message
    provider_message_id: str | None = None
    ledger_key: str | None = None  # the message's key, when the provider echoes it back
    error_code: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


def normalize(table: Mapping[str, str], value: str | None) -> str:
    """A provider's status in our vocabulary; `unknown` for anything the table lacks."""
    return table.get((value or "").strip().lower(), Delivery.unknown)


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


