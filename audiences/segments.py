"""The audience of a wave: who may hear about an event, and on which channels they can be reached."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, func, select, union
from sqlalchemy.orm import Session

from promo.db.models import Consent, Contact, ContactTopic, Event, Registration
from promo.domain.names import DIGEST
from promo.domain.rules import Recipient

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


DIGEST_UNSUBSCRIBED = "unsubscribed from the digest"


def digest_block(contact: Contact, consent: Consent | None) -> str | None:
    """Why the monthly digest cannot go to a contact by email, or None when it can.

    The digest has a subscription of its own (`Contact.digest`): False stops it and
    nothing else; True (asked for it, maybe for it only) carries it past a withdrawn email
    consent for announcements, but not past a later opt-out of everything or a dead address;
    None follows the email consent.
    """
    if contact.email is None:
        return "no address"
    if contact.digest is False:
        return DIGEST_UNSUBSCRIBED
    if contact.digest is True:
        asked = contact.digest_at
        if contact.opted_out_at is not None and (asked is None or contact.opted_out_at >= asked):
            return "opted out"
        if consent is not None and consent.unreachable_at is not None:
            return "unreachable"
        return None
    return contact_block(contact, consent, "email")


def contact_block(contact: Contact, consent: Consent | None, channel: str,
                  wave: str | None = None) -> str | None:
    """`channel_block` for a stored contact and their consent row on `channel` (or None);
    the digest's email (`wave` "digest") follows `digest_block`."""
    if wave == DIGEST and channel == "email":
        return digest_block(contact, consent)
    return channel_block(
        getattr(contact, ADDRESS_FIELD[channel]) is not None,
        consent.granted_at if consent else None,
        consent.withdrawn_at if consent else None,
        consent.unreachable_at if consent else None,
        contact.opted_out_at,
    )


def _followers_or_attendees_ids(event: Event):
    follows = select(ContactTopic.contact_id).where(ContactTopic.topic == event.topic)
    attended = (
        select(Registration.contact_id)
        .join(Event, Event.id == Registration.event_id)
        .where(Event.topic == event.topic, Registration.attended.is_(True), Event.id != event.id)
    )
    return follows, attended


# One IN over a UNION, not an OR of INs: PostgreSQL cannot make a join of ORed subqueries, and
# once it knows (ANALYZE) that the topic's followers do not fit in work_mem it scans them again
# for every contact (a million contacts: minutes, not seconds).
def _followers_or_attendees(event: Event):
    """Contacts who follow the event's topic or attended an earlier event of it."""
    return Contact.id.in_(union(*_followers_or_attendees_ids(event)))


def _segment_filter(event: Event):
    registered = select(Registration.contact_id).where(Registration.event_id == event.id)
    return Contact.id.in_(union(*_followers_or_attendees_ids(event), registered))


def _standing_sql():
    """`channel_block` for one consent row, in SQL (no address is checked in Python).

    The same rule as `channel_block`, computed by the database so that a wave of a million
    contacts does not parse millions of timestamps in Python; tests hold the two equal.
    """
    granted, withdrawn = Consent.granted_at, Consent.withdrawn_at
    opted_out = Contact.opted_out_at
    return case(
        (and_(granted.is_(None), withdrawn.is_not(None)), "opted out"),
        (granted.is_(None), "no consent"),
        (and_(withdrawn.is_not(None), withdrawn >= granted), "opted out"),
        (and_(opted_out.is_not(None), opted_out >= granted), "opted out"),
        (Consent.unreachable_at.is_not(None), "unreachable"),
    )


def _standings_query(where, direct: list[str]):
    """One row per contact: id, time zone, then each direct channel's standing, worked out by
    the database (a million contacts): `_standing_sql`, "no address", "no consent", or ''
    when the channel can carry the message."""
    why = _standing_sql()

    def standing(channel: str):
        # one consent row per contact and channel: '' when it lets the message through (so
        # that no row at all, NULL, reads "no consent")
        found = func.max(case((Consent.channel == channel, func.coalesce(why, ""))))
        return case((getattr(Contact, ADDRESS_FIELD[channel]).is_(None), "no address"),
                    else_=func.coalesce(found, "no consent"))

    return (
        select(Contact.id, Contact.timezone, *(standing(c) for c in direct))
        .select_from(Contact)
        .outerjoin(Consent, and_(Consent.contact_id == Contact.id, Consent.channel.in_(direct)))
        .where(where)
        .group_by(Contact.id)
        .order_by(Contact.id)
    )


def _standings(session: Session, where, channels: list[str]):
    """(contact id, time zone, {channel: why not, or None}) for the contacts `where` selects."""
    direct = [c for c in channels if c in ADDRESS_FIELD]
    q = _standings_query(where, direct)
    # contacts share a handful of standings: one dict per distinct standing, not per contact
    shared: dict[tuple, dict[str, str | None]] = {}
    result = session.connection().execute(q)
    try:
        # the driver's own rows (ints and strings: nothing for SQLAlchemy to convert), not a
        # Row object each
        for row in result.cursor:
            key = row[2:]
            blocked = shared.get(key)
            if blocked is None:
                blocked = shared[key] = {c: w or None for c, w in zip(direct, key, strict=True)}
            yield row[0], row[1], blocked
    finally:
        result.close()


def load_recipients(
    session: Session,
    event: Event,
    channels: list[str],
    *,
    registrants_only: bool,
    exclude: set[int] | frozenset[int] = frozenset(),
    only: int | None = None,
) -> list[Recipient]:
    """The wave's audience with each channel's standing.

    A promotional wave reaches everyone who follows the event's topic or attended an
    event of that topic before (registrants are included, to be recorded as such); the
    reminder reaches the event's registrants only.
    """
    registrants = select(Registration.contact_id).where(Registration.event_id == event.id)
    where = Contact.id.in_(registrants) if registrants_only else _segment_filter(event)
    if only is not None:  # one person's standing (`promo why`), not the whole audience's
        where = and_(where, Contact.id == only)
        registrants = registrants.where(Registration.contact_id == only)
    registered = set(session.scalars(registrants))
    return [
        Recipient(cid, tz, blocked, cid in registered)
        for cid, tz, blocked in _standings(session, where, channels)
        if cid not in exclude
    ]


def wave_audience(session: Session, event: Event, channels: list[str]) -> list[int]:
    """The contacts a promotional wave of `event` is for, by the segment's definition: those
    who follow the event's topic or attended an earlier event of that topic, and whom at
    least one of the wave's direct channels can reach now (consent, no opt-out, an address).
    """
    return [cid for cid, _, blocked in _standings(session, _followers_or_attendees(event), channels)
            if any(why is None for why in blocked.values())]


def segment_size(session: Session, event: Event, channels: list[str]) -> int:
    """How many contacts a promotional wave of `event` on `channels` is for."""
    return len(wave_audience(session, event, channels))


def series_audience(session: Session, topics: list[str], event_ids: list[int],
                    exclude: set[int] | frozenset[int] = frozenset(),
                    only: int | None = None) -> list[tuple[int, str | None, str | None]]:
    """The monthly digest's audience: who follows a topic of the series' events or
    registered for one of them, as (contact id, time zone, why the digest email cannot
    reach them or None: `digest_block`)."""
    registered = select(Registration.contact_id).where(Registration.event_id.in_(event_ids))
    follows = select(ContactTopic.contact_id).where(ContactTopic.topic.in_(topics))
    where = Contact.id.in_(union(follows, registered))  # as `_followers_or_attendees`
    if only is not None:
        where = and_(where, Contact.id == only)
    q = (select(Contact, Consent).outerjoin(Consent, and_(
        Consent.contact_id == Contact.id, Consent.channel == "email")).where(where)
        .order_by(Contact.id))
    return [(c.id, c.timezone, digest_block(c, consent))
            for c, consent in session.execute(q) if c.id not in exclude]
