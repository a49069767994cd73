"""Masked addresses for what people other than the contact read: artifacts, logs, summaries.

An organizer needs to recognise a contact ("the one ending in 67 at example.org"), never
to read the whole address: the Prefect UI is shared, and its artifacts and logs are kept.
"""

from __future__ import annotations

import re

import phonenumbers

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# a phone number as providers write it: +79161234567, +7 916 123-45-67, or 10-15 bare digits
# (a date such as 2026-11-21 is not one: no plus sign, too few digits in a row)
_PHONE_RE = re.compile(r"\+\d[\d ()\-]{8,}\d|\b\d{10,15}\b")


def mask_phone(phone: str) -> str:
    """`+79161234567` -> `+7 916 *** ** 67`: the country and operator code and the last two
    digits, the rest hidden."""
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 7:
        return "***"
    try:
        parsed = phonenumbers.parse("+" + digits, None)
        country = str(parsed.country_code)
    except phonenumbers.NumberParseException:
        country = digits[:1]
    national = digits[len(country):]
    if len(national) < 7:
        return f"+{country} ***"
    return f"+{country} {national[:3]} *** ** {national[-2:]}"


def mask_email(email: str) -> str:
    """`ivan@example.org` -> `i***@example.org`: the first letter and the domain."""
    local, at, domain = email.partition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_address(channel: str, address: object) -> str:
    """A contact's address on a channel, masked the way that channel's addresses read."""
    if address is None:
        return "-"
    text = str(address)
    if channel == "email":
        return mask_email(text)
    if channel in ("sms", "voice"):
        return mask_phone(text)
    # a VK id or a Telegram chat id: the last two digits are enough to tell two apart
    return f"id ***{text[-2:]}" if len(text) > 2 else "id ***"


def scrub(text: str | None) -> str:
    """Free text (a provider's error, a reason) with every email and phone number masked."""
    if not text:
        return ""
    text = _EMAIL_RE.sub(lambda m: mask_email(m.group(0)), text)
    return _PHONE_RE.sub(lambda m: mask_phone(m.group(0)), text)
