"""SendGrid's signed Event Webhook: delivery, engagement and opt-out events for emails.

Give SendGrid `{public_url}/sendgrid/events` (Settings > Mail Settings > Event Webhook),
turn on "Signed Event Webhook Requests" and copy its verification key into
`sendgrid_webhook_public_key`. Each email carries its ledger key in `custom_args` as
`promo_key`; SendGrid hands custom args back as top-level fields of every event.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from audiences.contacts import find_contact
from flows.ledger import apply_delivery, find_message_by_key
from promo.db import session_scope
from promo.db.models import Contact, Message, utcnow
from promo.domain.names import Delivery
from promo.settings import Settings
from promo.webhooks.consent import opt_out
from promo.webhooks.http import as_dict, forbidden, json_body, settings_of
from promo.webhooks.store import (
    DeliveryEvent,
    body_digest,
    dedupe_key,
    normalize,
    record_once,
    set_normalized,
)

PROVIDER = "sendgrid"
LEDGER_KEY_ARG = "promo_key"  # the custom arg that carries the ledger key

log = logging.getLogger("promo.webhooks")

# SendGrid's event names in our vocabulary (after anymail/webhooks/sendgrid.py). A
# deferred email is still in SendGrid's queue, retrying; a dropped one was never sent.
EVENTS = {
    "processed": "queued",
    "deferred": "queued",
    "delivered": "delivered",
    "bounce": "bounced",
    "dropped": "failed",
    "open": "opened",
    "click": "clicked",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
    "spamreport": "complained",
}
# the events that withdraw email consent: the address bounced, or its owner said no
WITHDRAWING = frozenset({"bounce", "spamreport", "unsubscribe", "group_unsubscribe"})
# a drop because SendGrid's own suppression lists hold the address says the same
WITHDRAWING_DROP_REASONS = frozenset({
    "bounced address", "unsubscribed address", "spam reporting address", "invalid",
})


@lru_cache(maxsize=4)
def _verifier(public_key: str) -> EventWebhook:
    return EventWebhook(public_key)


def signature_ok(settings: Settings, body: bytes, headers: Any) -> bool:
    """Whether the ECDSA signature over timestamp + body is SendGrid's."""
    key = settings.sendgrid_webhook_public_key
    signature = headers.get(EventWebhookHeader.SIGNATURE)
    timestamp = headers.get(EventWebhookHeader.TIMESTAMP)
    if not key or not signature or not timestamp:
        return False
    try:
        verifier = _verifier(key.strip())
    except Exception:  # noqa: BLE001 - cryptography raises several kinds for a bad key
        log.error("sendgrid_webhook_public_key is not a valid public key: every event is refused")
        return False
    try:
        return verifier.verify_signature(body.decode("utf-8"), signature, timestamp)
    except (ValueError, TypeError):  # not UTF-8, not base64, not a DER signature
        return False


def _withdraws(event: dict[str, Any]) -> bool:
    name = str(event.get("event", "")).lower()
    if name == "bounce":
        # a "blocked" bounce is the receiving server refusing the sender, not the address
        return str(event.get("type", "bounce")).lower() != "blocked"
    if name == "dropped":
        return str(event.get("reason", "")).strip().lower() in WITHDRAWING_DROP_REASONS
    return name in WITHDRAWING


def _find_message(session: Session, parsed: DeliveryEvent) -> Message | None:
    if parsed.ledger_key:
        return find_message_by_key(session, parsed.ledger_key)
    # Without the custom arg: X-Message-Id is the part of sg_message_id before the first
    # dot, shared by every recipient of one API call, so the address must match too.
    event = parsed.raw
    x_message_id = str(event.get("sg_message_id") or "").split(".")[0]
    email = str(event.get("email") or "").lower()
    if not x_message_id or not email:
        return None
    return session.scalars(
        select(Message).join(Contact, Contact.id == Message.contact_id).where(
            Message.provider_message_id == x_message_id,
            Message.channel == "email",
            Contact.email == email,  # stored lower-cased: the unique index answers
        ).limit(1)
    ).first()


def parse_event(event: dict[str, Any]) -> DeliveryEvent:
    """One event of SendGrid's batch as a delivery event."""
    key = event.get(LEDGER_KEY_ARG) or as_dict(event.get("unique_args")).get(LEDGER_KEY_ARG)
    return DeliveryEvent(PROVIDER, str(event.get("event")), Delivery(_status(event)),
                         _detail(event), provider_message_id=event.get("sg_message_id"),
                         ledger_key=str(key) if key else None, raw=event)


def _status(event: dict[str, Any]) -> str:
    name = str(event.get("event", "")).lower()
    if name == "bounce" and str(event.get("type", "")).lower() == "blocked":
        return "failed"
    return normalize(EVENTS, name)


def _detail(event: dict[str, Any]) -> str:
    parts = [f"sendgrid: {event.get('event')}"]
    for field in ("type", "reason", "status", "response"):
        if event.get(field):
            parts.append(f"{field} {str(event[field])[:120]}")
    return ", ".join(parts)


def handle_events(settings: Settings, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply a batch of events (one transaction); each event is applied once."""
    now = utcnow()
    outcomes: list[dict[str, Any]] = []
    with session_scope(settings.database_url) as s:
        for event in events:
            if not isinstance(event, dict):
                outcomes.append({"outcome": "ignored", "why": "not an event object"})
                continue
            key = dedupe_key(PROVIDER, event.get("sg_event_id") or body_digest(event))
            if not record_once(s, PROVIDER, key, event):
                outcomes.append({"outcome": "duplicate"})
                continue
            parsed = parse_event(event)
            message = _find_message(s, parsed)
            normalized: dict[str, Any] = {
                "kind": "delivery", "provider_status": event.get("event"),
                "status": parsed.status, "message_key": message.key if message else None,
                "changed": [],
            }
            changed: list[str] = []
            if message is not None:
                changed += apply_delivery(message, parsed.status, parsed.detail, now)
            if _withdraws(event):
                contact = None
                if message is not None and message.contact_id is not None:
                    contact = s.get(Contact, message.contact_id)
                elif event.get("email"):
                    contact = find_contact(s, "email", str(event["email"]).lower())
                if contact is not None:
                    normalized["contact_id"] = contact.id
                    if opt_out(s, contact, "email", parsed.detail[:200], now):
                        changed.append("consent")
            normalized["changed"] = sorted(changed)
            set_normalized(s, key, normalized)
            outcomes.append({"outcome": "applied" if message else "unmatched", **normalized})
    return outcomes


async def events(request: Request) -> Response:
    settings = settings_of(request)
    body = await request.body()
    if not signature_ok(settings, body, request.headers):
        return forbidden(PROVIDER, "event batch with a missing or wrong signature")
    batch = json_body(body)
    if batch is None:
        return PlainTextResponse("the body is not JSON", status_code=400)
    if isinstance(batch, dict):
        batch = [batch]
    if not isinstance(batch, list):
        return PlainTextResponse("expected a JSON array of events", status_code=400)
    await run_in_threadpool(handle_events, settings, batch)
    return PlainTextResponse("ok")
