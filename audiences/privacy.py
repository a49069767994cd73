"""What is stored about a person, and forgetting them.

Forgetting deletes the contact with its topics, consents and registrations; the ledger keeps
its rows (the counts an organizer sees) without the contact. What remains is a tombstone per
address: a keyed hash (HMAC-SHA256), so a later import of the same address is recognized and
does not bring the person, or their consent, back.

The key is random, made once per store and kept in the `meta` table rather than derived from
`secret_key`: rotating the secret (which signs unsubscribe links) must not silently
un-forget everyone. A hash cannot be turned back into an address; someone holding the whole
database could still test a guessed address against the tombstones and learn only that it
was forgotten here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import Text, cast, delete, or_, select
from sqlalchemy.orm import Session

from audiences.contacts import (
    ADDRESS_KINDS,
    CHANNELS,
    AddressError,
    find_contact,
    normalize_email,
    normalize_phone,
    normalize_telegram_chat_id,
    normalize_vk_id,
)
from audiences.segments import ADDRESS_FIELD, contact_block
from promo.db import hold_contacts
from promo.db.models import (
    Consent,
    Contact,
    ContactTopic,
    Event,
    Message,
    Meta,
    Registration,
    Tombstone,
    WebhookEvent,
)
from promo.domain.names import WAITING, Status
from promo.errors import UserError
from promo.settings import get_settings

TOMBSTONE_KEY = "tombstone_key"


# -- tombstones --------------------------------------------------------------------------------


def tombstone_key(session: Session, *, create: bool) -> bytes | None:
    """The store's tombstone key; made on first use when `create` (None if there is none yet:
    then there are no tombstones either)."""
    row = session.get(Meta, TOMBSTONE_KEY)
    if row is None:
        if not create:
            return None
        row = Meta(key=TOMBSTONE_KEY, value=secrets.token_hex(32))
        session.add(row)
        session.flush()
    return bytes.fromhex(row.value)


def address_hash(key: bytes, kind: str, value: str | int) -> str:
    """The tombstone of one normalized address (64 hex characters)."""
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def forgotten_at(session: Session, addresses: list[tuple[str, str | int]],
                 chunk: int = 2000) -> dict[tuple[str, str | int], datetime]:
    """When each of these (kind, normalized value) addresses was forgotten, for those that were."""
    key = tombstone_key(session, create=False)
    if key is None or not addresses:
        return {}
    by_hash = {address_hash(key, kind, value): (kind, value) for kind, value in addresses}
    hashes = list(by_hash)
    found: dict[tuple[str, str | int], datetime] = {}
    for i in range(0, len(hashes), chunk):
        q = select(Tombstone.address_hash, Tombstone.forgotten_at).where(
            Tombstone.address_hash.in_(hashes[i:i + chunk]))
        for h, at in session.execute(q):
            found[by_hash[h]] = at
    return found


def _bury(session: Session, key: bytes, kind: str, value: str | int, at: datetime) -> None:
    h = address_hash(key, kind, value)
    row = session.get(Tombstone, h)
    if row is None:
        session.add(Tombstone(address_hash=h, kind=kind, forgotten_at=at))
    else:
        row.forgotten_at = at


# -- finding a person --------------------------------------------------------------------------


def parse_identifier(text: str) -> tuple[str, str | int]:
    """What `ID|EMAIL|PHONE` names: ("id", 12), ("email", ...), ("phone", "+7..."), and
    `vk:ID` / `telegram:ID` for the other addresses. A bare number of up to 9 digits is an id."""
    value = text.strip()
    try:
        if "@" in value and not value.startswith("@"):
            return "email", normalize_email(value)
        prefix, _, rest = value.partition(":")
        if rest and prefix.lower() in ("vk", "vk_id"):
            return "vk_id", normalize_vk_id(rest)
        if rest and prefix.lower() in ("tg", "telegram", "telegram_chat_id"):
            return "telegram_chat_id", normalize_telegram_chat_id(rest)
        if rest and prefix.lower() == "id" and rest.strip().isdigit():
            return "id", int(rest)
        if value.isdigit() and len(value) <= 9:
            return "id", int(value)
        return "phone", normalize_phone(value, get_settings().default_region)
    except AddressError as exc:
        raise UserError(f"{text!r}: not a contact id, email or phone number ({exc})") from None


def find_person(session: Session, text: str) -> Contact | None:
    return _person(session, *parse_identifier(text))


def _person(session: Session, kind: str, value: str | int) -> Contact | None:
    return session.get(Contact, value) if kind == "id" else find_contact(session, kind, value)


def person_or_error(session: Session, text: str) -> Contact:
    contact = find_person(session, text)
    if contact is None:
        raise UserError(f"{text!r}: no such contact")
    return contact


# -- show / list -------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _consents(contact: Contact, rows: list[Consent]) -> list[dict]:
    stored = {r.channel: r for r in rows}
    out = []
    for channel in CHANNELS:
        r = stored.get(channel)
        has_address = getattr(contact, ADDRESS_FIELD[channel]) is not None
        if r is None and not has_address:
            continue
        block = contact_block(contact, r, channel)
        out.append({
            "channel": channel,
            "can_send": block is None,
            "why_not": block,
            "granted_at": _iso(r.granted_at) if r else None,
            "granted_source": r.granted_source if r else None,
            "withdrawn_at": _iso(r.withdrawn_at) if r else None,
            "withdrawn_source": r.withdrawn_source if r else None,
            "unreachable_at": _iso(r.unreachable_at) if r else None,
            "unreachable_reason": r.unreachable_reason if r else None,
        })
    return out


def _basics(contact: Contact) -> dict:
    return {
        "id": contact.id,
        "name": contact.name,
        "language": contact.language,
        "timezone": contact.timezone,
        "email": contact.email,
        "phone": contact.phone,
        "vk_id": contact.vk_id,
        "telegram_chat_id": contact.telegram_chat_id,
        "opted_out_at": _iso(contact.opted_out_at),
        "opted_out_source": contact.opted_out_source,
        "created_at": _iso(contact.created_at),
        "updated_at": _iso(contact.updated_at),
    }


def show(session: Session, text: str) -> dict:
    """Everything stored about one person: addresses, topics, consents, registrations and every
    message decision the ledger holds for them."""
    contact = person_or_error(session, text)
    cid = contact.id
    topics = sorted(session.scalars(select(ContactTopic.topic).where(ContactTopic.contact_id == cid)))
    consents = list(session.scalars(select(Consent).where(Consent.contact_id == cid)))
    registrations = [
        {"event": slug, "title": title, "registered_at": _iso(at), "attended": attended,
         "source": source}
        for slug, title, at, attended, source in session.execute(
            select(Event.slug, Event.title, Registration.registered_at, Registration.attended,
                   Registration.source)
            .join(Event, Event.id == Registration.event_id)
            .where(Registration.contact_id == cid).order_by(Registration.registered_at))
    ]
    messages = [
        {"event": slug, "wave": m.wave, "channel": m.channel, "status": m.status,
         "reason": m.reason, "send_at": _iso(m.send_at), "sent_at": _iso(m.sent_at),
         "decided_at": _iso(m.decided_at), "delivery_status": m.delivery_status,
         "provider_message_id": m.provider_message_id}
        for m, slug in session.execute(
            select(Message, Event.slug).join(Event, Event.id == Message.event_id)
            .where(Message.contact_id == cid).order_by(Message.decided_at, Message.id))
    ]
    return {**_basics(contact), "topics": topics, "consents": _consents(contact, consents),
            "registrations": registrations, "messages": messages}


def list_contacts(session: Session, topic: str | None = None,
                  chunk: int = 2000) -> Iterator[dict]:
    """Every contact (or a topic's followers) with addresses, topics and the channels that can
    reach them now; streamed in id order so a large store does not sit in memory."""
    last = 0
    while True:
        q = select(Contact).where(Contact.id > last).order_by(Contact.id).limit(chunk)
        if topic is not None:
            q = q.where(Contact.id.in_(
                select(ContactTopic.contact_id).where(ContactTopic.topic == topic)))
        contacts = list(session.scalars(q))
        if not contacts:
            return
        ids = [c.id for c in contacts]
        topics: dict[int, list[str]] = {}
        for cid, t in session.execute(select(ContactTopic.contact_id, ContactTopic.topic)
                                      .where(ContactTopic.contact_id.in_(ids))
                                      .order_by(ContactTopic.topic)):
            topics.setdefault(cid, []).append(t)
        consents: dict[int, list[Consent]] = {}
        for row in session.scalars(select(Consent).where(Consent.contact_id.in_(ids))):
            consents.setdefault(row.contact_id, []).append(row)
        for c in contacts:
            standing = _consents(c, consents.get(c.id, []))
            yield {**_basics(c), "topics": topics.get(c.id, []),
                   "reachable_on": [s["channel"] for s in standing if s["can_send"]]}
        last = ids[-1]
        session.expunge_all()


# -- forget ------------------------------------------------------------------------------------


def forget(session: Session, text: str, now: datetime | None = None) -> dict:
    """Erase a person and leave tombstones of their addresses.

    An address that is not in the store is tombstoned all the same (a request to be
    forgotten can come before the list that holds the person is imported).
    Returns what was done: {"contact_id": id or None, "tombstones": [kinds]}.
    """
    now = now or datetime.now(UTC)
    kind, value = parse_identifier(text)
    contact = _person(session, kind, value)
    if contact is None and kind == "id":
        raise UserError(f"{text!r}: no such contact")
    key = tombstone_key(session, create=True)
    assert key is not None
    if contact is None:
        _bury(session, key, kind, value, now)
        return {"contact_id": None, "tombstones": [kind]}
    held = {k: getattr(contact, k) for k in ADDRESS_KINDS if getattr(contact, k) is not None}
    for k, address in held.items():
        _bury(session, key, k, address, now)
    cid = contact.id
    session.expunge(contact)
    hold_contacts(session, forgetting=True)  # no wave's rows for them go in meanwhile
    # nothing still waiting goes out to a person who asked to be forgotten
    session.execute(Message.__table__.update().where(
        Message.contact_id == cid, Message.status.in_(WAITING))
        .values(status=Status.suppressed, reason="contact forgotten"))
    # providers' raw reports (webhooks) may carry the addresses: keep only that they came
    if held:
        raw, normalized = cast(WebhookEvent.raw, Text), cast(WebhookEvent.normalized, Text)
        session.execute(WebhookEvent.__table__.update().where(or_(*(
            column.contains(str(address)) for address in held.values()
            for column in (raw, normalized))))
            .values(raw={"forgotten": True}, normalized={"forgotten": True}))
    # the ledger keeps its rows (the counts an organizer sees), no longer naming the person
    session.execute(Message.__table__.update().where(Message.contact_id == cid)
                    .values(contact_id=None))
    # the database cascades topics, consents and registrations
    session.execute(delete(Contact).where(Contact.id == cid))
    session.flush()
    return {"contact_id": cid, "tombstones": list(held)}
