"""The audience of a wave: who may hear about an event, and on which channels they can be reached."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from flows.decide import Recipient
from promo.db.models import Consent, Contact, ContactTopic, Event, Registration

# the contact field that holds each direct channel's address
ADDRESS_FIELD = {
    "email": "email",
    "sms": "phone",
    "voice": "phone",
    "vk": "vk_id",
    "telegram": "telegram_chat_id",
}


def channel_block(
    has_address: bool,
    granted_at: datetime | None,
    withdrawn_at: datetime | None,
    unreachable_at: datetime | None,
    opted_out_at: datetime | None,
) -> str | None:
    """Why a channel cannot carry a message to a contact, or None when it can.

    The newer of consent and opt-out wins, so a later START or re-subscription brings a
    channel back, and an older consent never overrides a newer opt-out.
    """
    if not has_address:
        return "no address"
    if granted_at is None:
        return "opted out" if withdrawn_at is not None else "no consent"
    if withdrawn_at is not None and withdrawn_at >= granted_at:
        return "opted out"
    if opted_out_at is not None and opted_out_at >= granted_at:
        return "opted out"
    if unreachable_at is not None:
        return "unreachable"
    return None


def _segment_filter(event: Event):  # noqa: ANN202
    follows = select(ContactTopic.contact_id).where(ContactTopic.topic == event.topic)
    attended = (
        select(Registration.contact_id)
        .join(Event, Event.id == Registration.event_id)
        .where(Event.topic == event.topic, Registration.attended.is_(True), Event.id != event.id)
    )
    registered = select(Registration.contact_id).where(Registration.event_id == event.id)
    return or_(Contact.id.in_(follows), Contact.id.in_(attended), Contact.id.in_(registered))


def load_recipients(
    session: Session,
    event: Event,
    channels: list[str],
    *,
    registrants_only: bool,
    exclude: set[int] | frozenset[int] = frozenset(),
) -> list[Recipient]:
    """The wave's audience with each channel's standing.

    A promotional wave reaches everyone who follows the event's topic or attended an
    event of that topic before (registrants are included, to be recorded as such); the
    reminder reaches the event's registrants only.
    """
    if registrants_only:
        where = Contact.id.in_(
            select(Registration.contact_id).where(Registration.event_id == event.id)
        )
    else:
        where = _segment_filter(event)
    direct = [c for c in channels if c in ADDRESS_FIELD]
    registered = set(
        session.scalars(select(Registration.contact_id).where(Registration.event_id == event.id))
    )
    consents: dict[int, dict[str, tuple]] = {}
    q = (
        select(Consent.contact_id, Consent.channel, Consent.granted_at, Consent.withdrawn_at,
               Consent.unreachable_at)
        .join(Contact, Contact.id == Consent.contact_id)
        .where(and_(where, Consent.channel.in_(direct)))
    )
    for cid, channel, granted, withdrawn, unreachable in session.execute(q):
        consents.setdefault(cid, {})[channel] = (granted, withdrawn, unreachable)
    q = select(Contact.id, Contact.timezone, Contact.email, Contact.phone, Contact.vk_id,
               Contact.telegram_chat_id, Contact.opted_out_at).where(where).order_by(Contact.id)
    out: list[Recipient] = []
    none = (None, None, None)
    for cid, tz, email, phone, vk_id, tg, opted_out in session.execute(q):
        if cid in exclude:
            continue
        addresses = {"email": email, "sms": phone, "voice": phone, "vk": vk_id, "telegram": tg}
        mine = consents.get(cid, {})
        blocked = {
            c: channel_block(addresses[c] is not None, *mine.get(c, none), opted_out)
            for c in direct
        }
        out.append(Recipient(cid, tz, blocked, cid in registered))
    return out


def wave_audience(session: Session, event: Event, channels: list[str]) -> list[int]:
    """The contacts a promotional wave of `event` is for, by the segment's definition: those
    who follow the event's topic or attended an earlier event of that topic, and whom at
    least one of the wave's direct channels can reach now (consent, no opt-out, an address).
    """
    follows = select(ContactTopic.contact_id).where(ContactTopic.topic == event.topic)
    attended = (
        select(Registration.contact_id)
        .join(Event, Event.id == Registration.event_id)
        .where(Event.topic == event.topic, Registration.attended.is_(True), Event.id != event.id)
    )
    where = or_(Contact.id.in_(follows), Contact.id.in_(attended))
    direct = [c for c in channels if c in ADDRESS_FIELD]
    consents: dict[int, dict[str, tuple]] = {}
    q = (
        select(Consent.contact_id, Consent.channel, Consent.granted_at, Consent.withdrawn_at,
               Consent.unreachable_at)
        .join(Contact, Contact.id == Consent.contact_id)
        .where(and_(where, Consent.channel.in_(direct)))
    )
    for cid, channel, granted, withdrawn, unreachable in session.execute(q):
        consents.setdefault(cid, {})[channel] = (granted, withdrawn, unreachable)
    none = (None, None, None)
    out: list[int] = []
    q = select(Contact.id, Contact.email, Contact.phone, Contact.vk_id, Contact.telegram_chat_id,
               Contact.opted_out_at).where(where).order_by(Contact.id)
    for cid, email, phone, vk_id, tg, opted_out in session.execute(q):
        addresses = {"email": email, "sms": phone, "voice": phone, "vk": vk_id, "telegram": tg}
        mine = consents.get(cid, {})
        if any(channel_block(addresses[c] is not None, *mine.get(c, none), opted_out) is None
               for c in direct):
            out.append(cid)
    return out


def segment_size(session: Session, event: Event, channels: list[str]) -> int:
    """How many contacts a promotional wave of `event` on `channels` is for."""
    return len(wave_audience(session, event, channels))
