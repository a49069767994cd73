"""Registrations by webhook: a registration platform (or a form, or Zapier) tells us who
registered, so that promotion to that person stops before the next wave.

POST `{public_url}/registrations` with a JSON body and the header

    X-Promo-Signature: sha256=<hex>

where `<hex>` is the lower-case hex HMAC-SHA256 of the raw request body (the exact bytes
sent), keyed with `registration_webhook_secret` (its UTF-8 bytes). The body:

    {"event": "python-meetup-74",          # the event's slug (required)
     "id": "timepad-8812345",              # the platform's registration id (optional;
                                           #   a repeated id is a repeated delivery)
     "contact_id": 17,                     # or any of email / phone to find the person
     "email": "anna@example.org", "phone": "+79161234567",
     "name": "Анна", "language": "ru",      # used when the person is new
     "consent": ["email"],                 # channels the person agreed to on the form
     "digest": true,                       # optional: the monthly digest, yes or no (its own
                                           #   subscription: true also without "email" consent)
     "registered_at": "2026-11-20T10:00:00+03:00",   # optional, default: now
     "source": "timepad",                  # optional, recorded with the registration
     "utm_source": "sms", "utm_medium": "promotion",    # optional: the tags of the link the
     "utm_campaign": "python-meetup-74",                #   person came by, as the platform
     "utm_content": "last_call",                        #   passes them on (attribution)
     "short_link": "https://promo.example.org/go/python-meetup-74/sms/last_call",
     "attended": true}                     # optional: an attendance update (check-in at the
                                           #   door); someone not registered is a walk-in

An attendance update with the same `id` as the registration is its own delivery (it is not
taken for a repeat of the registration).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from audiences.contacts import (
    AddressError,
    check_channel,
    find_contact,
    grant_consent,
    normalize_email,
    normalize_language,
    normalize_phone,
    set_digest,
)
from audiences.import_layouts import ATTRIBUTION
from audiences.privacy import forgotten_at
from promo.db import session_scope
from promo.db.models import Contact, Event, Registration, utcnow
from promo.secrets import reveal
from promo.settings import Settings
from promo.webhooks.http import forbidden, json_body, settings_of
from promo.webhooks.store import body_digest, dedupe_key, record_once, set_normalized

PROVIDER = "registrations"
SIGNATURE_HEADER = "X-Promo-Signature"


class Refused(ValueError):
    """A signed body that cannot be applied; the text names the field and says why."""


def sign(secret: str, body: bytes) -> str:
    """The header value a sender computes: `sha256=` + hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(settings: Settings, body: bytes, headers: Any) -> bool:
    secret = settings.registration_webhook_secret
    given = (headers.get(SIGNATURE_HEADER) or "").strip()
    if secret is None or not given:
        return False
    expected = sign(reveal(secret) or "", body)
    if not given.startswith("sha256="):
        given = "sha256=" + given
    return hmac.compare_digest(given.lower().encode(), expected.encode())


def _text(data: dict[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str | int):
        raise Refused(f"{field}: expected a string")
    return str(value)


def _find_or_add_contact(s: Any, data: dict[str, Any], settings: Settings,
                         at: datetime) -> tuple[Contact, bool]:
    contact_id = data.get("contact_id")
    if contact_id is not None:
        if not isinstance(contact_id, int) or isinstance(contact_id, bool):
            raise Refused("contact_id: expected a number")
        if not 0 < contact_id < 2**63:  # what the store's ids can be
            raise Refused(f"contact_id: no contact {str(contact_id)[:30]}")
        contact = s.get(Contact, contact_id)
        if contact is None:
            raise Refused(f"contact_id: no contact {contact_id}")
        return contact, False
    try:
        email = normalize_email(_text(data, "email")) if _text(data, "email") else None
        phone = (normalize_phone(_text(data, "phone"), settings.default_region)
                 if _text(data, "phone") else None)
        language = normalize_language(_text(data, "language")) if _text(data, "language") else None
    except AddressError as exc:
        raise Refused(str(exc)) from None
    if email is None and phone is None:
        raise Refused("give contact_id, email or phone: who registered?")
    for field, value in (("email", email), ("phone", phone)):
        if value is not None:
            found = find_contact(s, field, value)
            if found is not None:
                return found, False
    # as in an import: a forgotten person comes back only by registering after the forgetting
    buried = forgotten_at(s, [(k, v) for k, v in (("email", email), ("phone", phone)) if v])
    if any(when >= at for when in buried.values()):
        raise Refused("this person asked to be forgotten after registered_at: not added")
    name = _text(data, "name")
    contact = Contact(email=email, phone=phone, name=name[:200] if name else None,
                      language=language)
    s.add(contact)
    s.flush()
    return contact, True


def _registered_at(data: dict[str, Any]) -> datetime:
    text = _text(data, "registered_at")
    if text is None:
        return utcnow()
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise Refused(f"registered_at: {text!r} is not an ISO time") from None
    if at.tzinfo is None:
        raise Refused(f"registered_at: {text!r} has no UTC offset")
    return at


def _came_by(data: dict[str, Any]) -> dict[str, str | None]:
    out = {}
    for field in ATTRIBUTION:
        value = _text(data, field)
        limit = 300 if field == "short_link" else 200
        if value is not None and len(value) > limit:
            raise Refused(f"{field}: {len(value)} characters; at most {limit}")
        out[field] = value
    return out


def _flag(data: dict[str, Any], field: str) -> bool | None:
    value = data.get(field)
    if value is None or isinstance(value, bool):
        return value
    raise Refused(f"{field}: expected true or false")


def handle(settings: Settings, data: dict[str, Any]) -> dict[str, Any]:
    """Add the registration (once); raises Refused for a body that cannot be applied."""
    slug = _text(data, "event")
    if slug is None:
        raise Refused("event: the event's slug is required")
    came_by = _came_by(data)
    attended = _flag(data, "attended")
    digest = _flag(data, "digest")
    consents = data.get("consent") or []
    if not isinstance(consents, list):
        raise Refused("consent: expected a list of channels")
    try:
        channels = [check_channel(str(c)) for c in consents]
    except AddressError as exc:
        raise Refused(f"consent: {exc}") from None
    delivery = _text(data, "id")
    if delivery is not None and attended is not None:
        delivery = f"{delivery}/attended={attended}"
    key = dedupe_key(PROVIDER, slug, delivery or body_digest(data))
    with session_scope(settings.database_url) as s:
        event = s.scalar(select(Event).where(Event.slug == slug))
        if event is None:
            raise Refused(f"event: no event {slug!r} in the store")
        if not record_once(s, PROVIDER, key, data):
            return {"outcome": "duplicate"}
        at = _registered_at(data)
        contact, new_contact = _find_or_add_contact(s, data, settings, at)
        source = f"webhook: {_text(data, 'source') or 'registration'}"[:200]
        for channel in channels:
            grant_consent(s, contact.id, channel, source=f"{source} (registration form)", at=at)
        if digest is not None:
            set_digest(contact, digest, f"{source} (registration form)", at)
        registration = s.scalar(select(Registration).where(
            Registration.event_id == event.id, Registration.contact_id == contact.id))
        created = registration is None
        walk_in = created and attended is True and "registered_at" not in data
        if created:
            # someone who came without registering is a walk-in, "registered" at the door
            registration = Registration(
                event_id=event.id, contact_id=contact.id,
                registered_at=event.starts_at if walk_in else at, source=source,
                walk_in=walk_in, attended=attended, **came_by)
            s.add(registration)
        else:
            if attended is not None:
                registration.attended = attended
            if registration.utm_source is None and registration.short_link is None \
                    and any(came_by.values()):
                for field, value in came_by.items():
                    setattr(registration, field, value)
        normalized = {"kind": "attendance" if attended is not None else "registration",
                      "event": slug, "contact_id": contact.id,
                      "new_contact": new_contact, "new_registration": created,
                      "walk_in": walk_in, "attended": attended, "consent": channels,
                      "digest": digest}
        set_normalized(s, key, normalized)
    return {"outcome": "applied", **normalized}


async def webhook(request: Request) -> Response:
    settings = settings_of(request)
    body = await request.body()
    if not signature_ok(settings, body, request.headers):
        return forbidden(PROVIDER, f"a registration with a missing or wrong {SIGNATURE_HEADER}")
    data = json_body(body)
    if data is None:
        return PlainTextResponse("the body is not JSON", status_code=400)
    if not isinstance(data, dict):
        return PlainTextResponse("expected a JSON object", status_code=400)
    try:
        result = await run_in_threadpool(handle, settings, data)
    except Refused as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    return JSONResponse(result)
