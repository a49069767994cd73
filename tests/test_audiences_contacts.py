"""Addresses are checked and normalized offline; consent moves only forwards in time, and the
newer of consent and opt-out wins, as `channel_block` reads it at send time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from audiences.contacts import (
    AddressError,
    ConsentState,
    check_timezone,
    grant_consent,
    granted_after,
    normalize_email,
    normalize_language,
    normalize_phone,
    normalize_telegram_chat_id,
    normalize_vk_id,
    opt_out_everywhere,
    withdraw_consent,
)
from audiences.segments import channel_block
from promo.db import session_scope
from promo.db.models import Consent, Contact

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("8 (916) 123-45-67", "+79161234567"),
    ("+7 916 123 45 67", "+79161234567"),
    ("8-916-123-45-67", "+79161234567"),
    ("9161234567", "+79161234567"),
    ("+44 20 7946 0958", "+442079460958"),
    ("+49 30 901820", "+4930901820"),
])
def test_phones_are_normalized_to_e164(text: str, expected: str) -> None:
    assert normalize_phone(text, "RU") == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("123", "too short"),
    ("позвонить", "not a phone number"),
    ("+7 000 000 00 00", "not a valid phone number in RU"),
    ("+999 123 456 789", "unknown country code"),
])
def test_bad_phones_say_why(text: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason):
        normalize_phone(text, "RU")


def test_emails_are_matched_case_insensitively_and_cyrillic_domains_pass() -> None:
    assert normalize_email("Ivan.Petrov@Example.COM") == "ivan.petrov@example.com"
    assert normalize_email("иван@почта.рф") == "иван@почта.рф"
    with pytest.raises(AddressError, match="not a valid email address"):
        normalize_email("ivan@@example")


def test_vk_and_telegram_ids() -> None:
    assert normalize_vk_id("https://vk.com/id12345") == 12345
    assert normalize_vk_id("id777") == 777
    with pytest.raises(AddressError, match="screen name"):
        normalize_vk_id("vk.com/durov")
    assert normalize_telegram_chat_id("500000001") == 500000001
    with pytest.raises(AddressError, match="username"):
        normalize_telegram_chat_id("@ivan")


def test_time_zones_and_languages() -> None:
    assert check_timezone("europe/moscow") == "Europe/Moscow"
    with pytest.raises(AddressError, match="offset"):
        check_timezone("UTC+3")
    with pytest.raises(AddressError, match="not a known time zone"):
        check_timezone("Moscow")
    assert normalize_language("ru-RU") == "ru"
    with pytest.raises(AddressError):
        normalize_language("russian")


def test_an_undated_consent_never_undoes_an_opt_out() -> None:
    withdrawn = ConsentState(T0, "form", T0 + timedelta(days=1), "unsubscribe link")
    assert granted_after(withdrawn, None, T0 + timedelta(days=5), undated=True) is None
    assert granted_after(None, T0, T0 + timedelta(days=5), undated=True) is None
    assert granted_after(None, None, T0, undated=True) == T0
    # a dated consent moves forwards only
    assert granted_after(ConsentState(T0 + timedelta(days=2)), None, T0) is None
    assert granted_after(withdrawn, None, T0 + timedelta(days=5)) == T0 + timedelta(days=5)


def _block(s, cid: int, channel: str) -> str | None:
    c = s.get(Contact, cid)
    row = s.get(Consent, (cid, channel))
    return channel_block(True, row.granted_at if row else None,
                         row.withdrawn_at if row else None, None, c.opted_out_at)


def test_grant_withdraw_and_global_opt_out_agree_with_channel_block(store) -> None:
    with session_scope() as s:
        c = Contact(email="ivan@example.org", phone="+79161234567")
        s.add(c)
        s.flush()
        cid = c.id
        assert _block(s, cid, "email") == "no consent"
        assert grant_consent(s, cid, "email", source="form", at=T0)
        assert _block(s, cid, "email") is None
        assert withdraw_consent(s, cid, "email", source="unsubscribe link", at=T0 + timedelta(1))
        assert _block(s, cid, "email") == "opted out"
        # an older consent arriving late does not override the newer opt-out
        grant_consent(s, cid, "email", source="old list", at=T0 + timedelta(hours=1))
        assert _block(s, cid, "email") == "opted out"
        # a consent given after the opt-out brings the channel back
        assert grant_consent(s, cid, "email", source="re-subscribed", at=T0 + timedelta(2))
        assert _block(s, cid, "email") is None
        # an older opt-out arriving late changes nothing
        assert not withdraw_consent(s, cid, "email", source="late webhook", at=T0)

        grant_consent(s, cid, "sms", source="form", at=T0)
        assert opt_out_everywhere(s, cid, source="reply STOP ALL", at=T0 + timedelta(3))
        assert _block(s, cid, "sms") == "opted out"
        assert _block(s, cid, "email") == "opted out"
        assert s.get(Contact, cid).opted_out_source == "reply STOP ALL"
        # a later consent on one channel brings back that channel only
        grant_consent(s, cid, "sms", source="START", at=T0 + timedelta(4))
        assert _block(s, cid, "sms") is None
        assert _block(s, cid, "email") == "opted out"
        with pytest.raises(AddressError):
            grant_consent(s, cid, "fax", source="?")
