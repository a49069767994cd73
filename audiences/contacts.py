"""Contacts: their addresses (checked and normalized), and consent per channel with source and time.

The address checks are offline: email syntax with email-validator (no DNS), phone numbers
with phonenumbers (numbers without `+country` are read in `settings.default_region`), time
zones with zoneinfo. Each check raises `AddressError` with the reason an organizer reads.

Consent follows one rule, the one `audiences.segments.channel_block` applies when sending:
the newer of consent and opt-out wins. The functions here only ever move a consent's or an
opt-out's time forwards, so an older consent can never undo a newer opt-out.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.segments import ADDRESS_FIELD
from promo.db.models import Consent, Contact
from promo.domain.names import DIRECT_CHANNELS

# the channels a contact can consent to, one address field each (sms and voice share the phone)
CHANNELS: tuple[str, ...] = DIRECT_CHANNELS
# the contact fields that identify a person: an import merges rows that share any of them
ADDRESS_KINDS: tuple[str, ...] = ("email", "phone", "vk_id", "telegram_chat_id")
MAX_NAME = 200
MAX_TOPIC = 64
SOURCE_LENGTH = 200


class AddressError(ValueError):
    """An address, time zone, language or topic that does not check out; the text says why."""


# -- addresses ---------------------------------------------------------------------------------


def normalize_email(text: str) -> str:
    """The address as stored and matched: syntax checked, lower-cased (mailboxes are in practice
    case-insensitive, and two spellings of one address must not become two people)."""
    try:
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressError(f"{text!r} is not a valid email address: {exc}") from None
    return checked.normalized.lower()


_PHONE_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: "is too short for a phone number",
    phonenumbers.ValidationResult.TOO_LONG: "is too long for a phone number",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "has an unknown country code",
    phonenumbers.ValidationResult.INVALID_LENGTH: "has the wrong number of digits",
}

_PARSE_REASONS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "has an unknown country code",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "is too short for a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "is too short for a phone number",
    phonenumbers.NumberParseException.TOO_LONG: "is too long for a phone number",
}


def normalize_phone(text: str, region: str) -> str:
    """E.164 (`+79161234567`); `8 (916) 123-45-67` is read in `region` (the default region)."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        why = _PARSE_REASONS.get(exc.error_type, "is not a phone number")
        raise AddressError(f"{text!r} {why}") from None
    if not phonenumbers.is_valid_number(number):
        why = _PHONE_REASONS.get(phonenumbers.is_possible_number_with_reason(number))
        if why is None:
            where = phonenumbers.region_code_for_number(number) or region
            why = f"is not a valid phone number in {where}"
        if not text.lstrip().startswith("+"):
            why += f" (read as a {region} number: write others with +country)"
        raise AddressError(f"{text!r} {why}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_VK_ID = re.compile(r"^(?:(?:https?://)?(?:m\.)?vk\.com/)?(?:id)?(-?[0-9]{1,20})/?$", re.IGNORECASE)
_VK_NAME = re.compile(r"^(?:(?:https?://)?(?:m\.)?vk\.com/)?[A-Za-z0-9_.]+/?$", re.IGNORECASE)
_MAX_ID = 2**63 - 1


def normalize_vk_id(text: str) -> int:
    """A VK user id: `12345`, `id12345` or `https://vk.com/id12345`."""
    m = _VK_ID.match(text.strip())
    if m is None:
        if _VK_NAME.match(text.strip()):
            raise AddressError(f"{text!r} is a screen name, not a numeric VK user id "
                               f"(names cannot be resolved offline)")
        raise AddressError(f"{text!r} is not a VK user id")
    value = int(m.group(1))
    if value < 0:
        raise AddressError(f"{text!r} is a community id (negative), not a person")
    if value == 0 or value > _MAX_ID:
        raise AddressError(f"{text!r} is not a VK user id")
    return value


def normalize_telegram_chat_id(text: str) -> int:
    """A person's chat id with the bot (a positive integer the bot learns at /start)."""
    value = text.strip()
    if value.startswith("@"):
        raise AddressError(f"{text!r} is a username, not a chat id (the bot learns a person's "
                           f"chat id when they start it)")
    # only ASCII digits: int() also takes "+5", "1_000" and other scripts' digits
    if not re.fullmatch(r"-?[0-9]{1,20}", value):
        raise AddressError(f"{text[:100]!r} is not a Telegram chat id (a number)")
    number = int(value)
    if number < 0:
        raise AddressError(f"{text!r} is a group or channel chat, not a person's")
    if number == 0 or number > _MAX_ID:
        raise AddressError(f"{text!r} is not a Telegram chat id")
    return number


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}


_OFFSET = re.compile(r"^(?:utc|gmt)?\s*[+\-\u2212]\s*\d", re.IGNORECASE)


@lru_cache(maxsize=1024)
def check_timezone(text: str) -> str:
    """The IANA name (`Europe/Moscow`), spelled as the zone database spells it."""
    value = text.strip()
    if _OFFSET.match(value):
        raise AddressError(f"{text!r} is an offset, not a time zone: give a zone name like "
                           f"Europe/Moscow (offsets change with daylight saving)")
    name = _zone_names().get(value.lower(), value)
    try:
        ZoneInfo(name)
    # a name too long for a file name is an OSError
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise AddressError(f"{text[:100]!r} is not a known time zone (IANA names like Europe/Moscow, "
                           f"Asia/Yekaterinburg)") from None
    return name


_LANGUAGE = re.compile(r"^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{2,8})*$")


def normalize_language(text: str) -> str:
    """The primary language subtag, lower-cased: `ru-RU` -> `ru`."""
    m = _LANGUAGE.match(text.strip())
    if m is None:
        raise AddressError(f"{text!r} is not a language code like ru or en")
    return sys.intern(m.group(1).lower())  # a few values over many rows: share them


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_topic(text: str) -> str:
    """An event line as events name it in their `topic:`: trimmed and lower-cased, like
    the event's, so that "Python" in a file and `topic: python` match."""
    value = text.strip().lower()
    if not value:
        raise AddressError("an empty topic")
    if len(value) > MAX_TOPIC:
        raise AddressError(f"{value[:20]!r}...: a topic is at most {MAX_TOPIC} characters")
    if _CONTROL.search(value):
        raise AddressError(f"{value!r} contains control characters")
    return sys.intern(value)


def check_channel(text: str) -> str:
    value = text.strip().lower()
    if value not in CHANNELS:
        raise AddressError(f"{text!r} is not a channel ({', '.join(CHANNELS)})")
    return CHANNELS[CHANNELS.index(value)]


def address_for(channel: str) -> str:
    """The contact field a channel needs (`sms` -> `phone`)."""
    return ADDRESS_FIELD[channel]


def find_contact(session: Session, kind: str, value: str | int) -> Contact | None:
    """The contact holding this (normalized) address; `kind` is one of ADDRESS_KINDS."""
    if kind not in ADDRESS_KINDS:
        raise ValueError(f"unknown address kind {kind!r}")
    return session.scalar(select(Contact).where(getattr(Contact, kind) == value))


# -- consent -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsentState:
    """What is stored about one channel of one contact (None: nothing yet)."""

    granted_at: datetime | None = None
    granted_source: str | None = None
    withdrawn_at: datetime | None = None
    withdrawn_source: str | None = None


def granted_after(state: ConsentState | None, opted_out_at: datetime | None, at: datetime,
                  *, undated: bool = False) -> datetime | None:
    """The new `granted_at` after a consent given at `at`, or None when nothing changes.

    A dated consent moves `granted_at` forwards only; whether it beats an opt-out is then
    decided by `channel_block` (the newer wins). An `undated` consent (a list's consent
    column with no date: it may be older than anything) fills a gap but never undoes an
    opt-out, on the channel or everywhere: re-importing an old export must not resubscribe
    people who left.
    """
    granted = state.granted_at if state else None
    if undated:
        withdrawn = state.withdrawn_at if state else None
        latest_out = max((t for t in (withdrawn, opted_out_at) if t is not None), default=None)
        if granted is not None or latest_out is not None:
            return None
        return at
    if granted is not None and granted >= at:
        return None
    return at


def withdrawn_after(state: ConsentState | None, at: datetime) -> datetime | None:
    """The new `withdrawn_at` after an opt-out at `at`, or None when a newer one is stored."""
    withdrawn = state.withdrawn_at if state else None
    if withdrawn is not None and withdrawn >= at:
        return None
    return at


def _consent_row(session: Session, contact_id: int, channel: str) -> Consent | None:
    check_channel(channel)
    return session.get(Consent, (contact_id, channel))


def _state(row: Consent | None) -> ConsentState | None:
    if row is None:
        return None
    return ConsentState(row.granted_at, row.granted_source, row.withdrawn_at, row.withdrawn_source)


def grant_consent(session: Session, contact_id: int, channel: str, *, source: str,
                  at: datetime | None = None, undated: bool = False) -> bool:
    """Record a consent on `channel` (a subscription, VK "allow messages", Telegram /start).

    `at` defaults to now: a person who subscribes again after opting out is reachable again.
    Returns whether anything changed.
    """
    at = at or datetime.now(UTC)
    row = _consent_row(session, contact_id, channel)
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise ValueError(f"no contact {contact_id}")
    new = granted_after(_state(row), contact.opted_out_at, at, undated=undated)
    if new is None:
        return False
    if row is None:
        row = Consent(contact_id=contact_id, channel=channel)
        session.add(row)
    row.granted_at = new
    row.granted_source = source[:SOURCE_LENGTH]
    session.flush()
    return True


def withdraw_consent(session: Session, contact_id: int, channel: str, *, source: str,
                     at: datetime | None = None) -> bool:
    """Record an opt-out on one channel (an unsubscribe link, SMS STOP, VK deny, /stop)."""
    at = at or datetime.now(UTC)
    row = _consent_row(session, contact_id, channel)
    new = withdrawn_after(_state(row), at)
    if new is None:
        return False
    if row is None:
        row = Consent(contact_id=contact_id, channel=channel)
        session.add(row)
    row.withdrawn_at = new
    row.withdrawn_source = source[:SOURCE_LENGTH]
    session.flush()
    return True


def mark_unreachable(session: Session, contact_id: int, channel: str, reason: str,
                     at: datetime) -> bool:
    """The provider says the address cannot receive (an invalid number, a blocked bot); the
    first time and reason are kept. True if this changed anything."""
    row = session.get(Consent, (contact_id, channel))
    if row is None:
        row = Consent(contact_id=contact_id, channel=channel)
        session.add(row)
    if row.unreachable_at is not None:
        return False
    row.unreachable_at = at
    row.unreachable_reason = reason[:200]
    session.flush()
    return True


def opt_out_everywhere(session: Session, contact_id: int, *, source: str,
                       at: datetime | None = None) -> bool:
    """A global opt-out: nothing more on any channel, until the person consents again on one
    (a consent newer than the opt-out brings back that channel only)."""
    at = at or datetime.now(UTC)
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise ValueError(f"no contact {contact_id}")
    if contact.opted_out_at is not None and contact.opted_out_at >= at:
        return False
    contact.opted_out_at = at
    contact.opted_out_source = source[:SOURCE_LENGTH]
    session.flush()
    return True


def set_digest(contact: Contact, wanted: bool | None, source: str, at: datetime) -> bool:
    """The contact's own digest subscription (apart from the email consent): True wants it
    (also "only the digest"), False ends it and nothing else, None follows the consent.
    True if it changed."""
    if contact.digest is wanted:
        return False
    contact.digest, contact.digest_source, contact.digest_at = wanted, source[:200], at
    return True
