"""A whole wave with every channel live, each through its SDK and its fake provider,
checked from the providers' side: what arrived, and that it arrived once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select

from flows.campaign import wave_flow
from flows.store import save_event
from promo.db import session_scope
from promo.db.models import Consent, Contact, ContactTopic, Message
from promo.domain.event import load_event
from promo.settings import reset_settings
from tests.fakes import FakeSendGrid, FakeTelegram, FakeTwilio, FakeVK
from tests.helpers import write_event

MSK = ZoneInfo("Europe/Moscow")
START = datetime(2027, 3, 18, 19, 0, tzinfo=MSK)
ANNOUNCE = START - timedelta(days=14) + timedelta(hours=-8)  # 14 days before, 11:00
CAMPAIGN = """\
campaign:
  announce: {channels: [email, sms, voice, vk, telegram, vk_wall, telegram_channel]}
  last_call: null
  reminder: null
"""
SID, TOKEN, SENDER = "AC" + "7" * 32, "twilio-token", "+15005550006"
BOT = "555777:wave-bot-token"

# contact id -> (address field, address, consented channel); one address each, so the
# fallback wave puts each contact on exactly one channel
CONTACTS = {
    1: ("email", "anna@example.org", "email"),
    2: ("email", "boris@example.org", "email"),
    3: ("email", "bounce@example.org", "email"),  # SendGrid refuses it
    4: ("phone", "+79160000004", "sms"),
    5: ("phone", "+79160000005", "sms"),
    6: ("phone", "+79160000006", "sms"),  # replied STOP earlier: 21610
    7: ("phone", "+79160000007", "voice"),
    8: ("phone", "+79160000008", "voice"),
    9: ("vk_id", 90009, "vk"),
    10: ("vk_id", 90010, "vk"),
    11: ("vk_id", 90011, "vk"),  # never allowed community messages: 901
    12: ("telegram_chat_id", 120012, "telegram"),
    13: ("telegram_chat_id", 120013, "telegram"),
    14: ("telegram_chat_id", 120014, "telegram"),  # blocked the bot
}


@pytest.fixture
def fakes(store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    sendgrid = FakeSendGrid("SG.wave-key", rejected={"bounce@example.org"}).start()
    twilio = FakeTwilio(SID, TOKEN, opted_out={"+79160000006"}).start()
    vk = FakeVK("vk-group", "vk-user", 777, denied={90011}).start()
    telegram = FakeTelegram(BOT, blocked={120014}, channels={"@pymeetup": -1007770001}).start()
    env = {
        "PROMO_SENDGRID_API_KEY": "SG.wave-key", "PROMO_SENDGRID_HOST": sendgrid.url,
        "PROMO_EMAIL_FROM": "Moscow Python <events@example.org>",
        "PROMO_TWILIO_ACCOUNT_SID": SID, "PROMO_TWILIO_AUTH_TOKEN": TOKEN,
        "PROMO_TWILIO_FROM": SENDER, "PROMO_TWILIO_BASE_URL": twilio.url,
        "PROMO_VK_GROUP_TOKEN": "vk-group", "PROMO_VK_GROUP_ID": "777",
        "PROMO_VK_USER_TOKEN": "vk-user", "PROMO_VK_API_URL": vk.url + "/method/",
        "PROMO_TELEGRAM_BOT_TOKEN": BOT, "PROMO_TELEGRAM_CHANNEL": "@pymeetup",
        "PROMO_TELEGRAM_BASE_URL": telegram.url + "/bot",
        # quick waits: the retries below honor 1-second hints
        "PROMO_RATE_LIMITS": json.dumps({"twilio_sms": 50, "twilio_calls": 50}),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    yield {"email": sendgrid, "twilio": twilio, "vk": vk, "telegram": telegram}
    for fake in (sendgrid, twilio, vk, telegram):
        fake.stop()


def seed(folder: Path) -> int:
    path = write_event(folder, START, extra=CAMPAIGN)
    with session_scope() as s:
        event = save_event(s, load_event(path), path)
        s.execute(insert(Contact), [
            {"id": i, "language": "ru", "timezone": "Europe/Moscow", field: address}
            for i, (field, address, _) in CONTACTS.items()])
        s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"} for i in CONTACTS])
        s.execute(insert(Consent), [
            {"contact_id": i, "channel": ch, "granted_at": START - timedelta(days=90),
             "granted_source": "test"} for i, (_, _, ch) in CONTACTS.items()])
        return event.id


def test_a_wave_through_all_five_providers_arrives_once(prefect_api: None, fakes: dict,
                                                        store: Path) -> None:
    event_id = seed(store)
    # the providers misbehave on the way: each is retried and still sends once
    fakes["email"].fail("error", status=503)
    fakes["twilio"].fail("rate_limit", retry_after=1)
    fakes["vk"].fail("api_error", code=6)
    fakes["telegram"].fail("rate_limit", retry_after=1)

    result = wave_flow("python-meetup-74", "announce", ANNOUNCE.isoformat())
    assert result["status"] == "scheduled"

    sendgrid, twilio, vk, telegram = (fakes[k] for k in ("email", "twilio", "vk", "telegram"))
    assert sorted(m["to"][0] for m in sendgrid.received) == ["anna@example.org",
                                                             "boris@example.org"]
    assert all(m["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
               and m["custom_args"]["promo_key"].startswith("python-meetup-74/announce/")
               for m in sendgrid.received)
    sms = [m for m in twilio.received if m["sid"].startswith("SM")]
    calls = [m for m in twilio.received if m["sid"].startswith("CA")]
    assert sorted(m["to"] for m in sms) == ["+79160000004", "+79160000005"]
    assert sorted(m["to"] for m in calls) == ["+79160000007", "+79160000008"]
    assert all('language="ru-RU"' in c["twiml"] for c in calls)
    direct_vk = [m for m in vk.received if "peer_id" in m]
    wall = [m for m in vk.received if "post_id" in m and "peer_id" not in m]
    assert sorted(m["peer_id"] for m in direct_vk) == [90009, 90010]
    assert [w["owner_id"] for w in wall] == [-777]
    direct_tg = [m for m in telegram.received if m["chat"] != "@pymeetup"]
    channel_tg = [m for m in telegram.received if m["chat"] == "@pymeetup"]
    assert sorted(m["chat_id"] for m in direct_tg) == [120012, 120013]
    assert len(channel_tg) == 1

    with session_scope() as s:
        rows = {(m.contact_id, m.channel): m for m in s.scalars(
            select(Message).where(Message.event_id == event_id))}
        consents = {(c.contact_id, c.channel): c for c in s.scalars(select(Consent))}
        # (the other channels of each contact are recorded as suppressed: no address)
        statuses = Counter((m.channel, m.status) for m in rows.values()
                           if m.status != "suppressed")
        assert statuses == Counter({
            ("email", "sent"): 2, ("email", "failed"): 1, ("sms", "sent"): 2,
            ("sms", "failed"): 1, ("voice", "sent"): 2, ("vk", "sent"): 2, ("vk", "failed"): 1,
            ("telegram", "sent"): 2, ("telegram", "failed"): 1, ("vk_wall", "sent"): 1,
            ("telegram_channel", "sent"): 1})
        # the provider's own id is on each sent row
        assert rows[(1, "email")].provider_message_id in {m["message_id"] for m in sendgrid.received}
        assert rows[(4, "sms")].provider_message_id in {m["sid"] for m in sms}
        # permanent failures change the contact's standing on that channel, and only there
        assert consents[(3, "email")].unreachable_at is not None
        assert consents[(6, "sms")].withdrawn_at is not None
        assert consents[(6, "sms")].unreachable_at is None
        assert consents[(11, "vk")].unreachable_at is not None
        assert consents[(14, "telegram")].unreachable_at is not None
        assert consents[(1, "email")].unreachable_at is None

    before = {name: len(f.received) for name, f in fakes.items()}
    wave_flow("python-meetup-74", "announce", (ANNOUNCE + timedelta(hours=1)).isoformat())
    assert {name: len(f.received) for name, f in fakes.items()} == before  # nothing twice


def test_a_wrong_credential_stops_the_channel_and_the_messages_wait_for_the_fix(
        fakes: dict, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from channels.base import ConfigurationError
    from flows.send import send_batch
    from flows.wave import due_batches, prepare_wave

    event_id = seed(store)
    monkeypatch.setenv("PROMO_SENDGRID_API_KEY", "SG.revoked")
    settings = reset_settings()
    prepare_wave("python-meetup-74", "announce", ANNOUNCE, settings)
    with session_scope() as s:
        email_ids = set(s.scalars(select(Message.id).where(Message.channel == "email",
                                                           Message.status == "planned")))
    [email_batch] = [b for _, b in due_batches("python-meetup-74", "announce", ANNOUNCE,
                                                settings) if set(b) == email_ids]  # a batch holds one channel
    with pytest.raises(ConfigurationError, match="SendGrid 401"):
        send_batch(email_batch, ANNOUNCE, settings)
    with session_scope() as s:
        emails = s.scalars(select(Message).where(Message.event_id == event_id,
                                                 Message.channel == "email",
                                                 Message.status != "suppressed")).all()
        assert {(m.status, m.sent_at) for m in emails} == {("planned", None)}
        assert all(m.reason.startswith("not sent: SendGrid 401") for m in emails)
    assert fakes["email"].received == []

    monkeypatch.setenv("PROMO_SENDGRID_API_KEY", "SG.wave-key")
    settings = reset_settings()
    later = ANNOUNCE + timedelta(minutes=30)
    for _, batch in due_batches("python-meetup-74", "announce", later, settings):
        send_batch(batch, later, settings)
    assert sorted(m["to"][0] for m in fakes["email"].received) == ["anna@example.org",
                                                                   "boris@example.org"]


def test_a_wave_with_a_wrong_key_ends_failed_in_one_line_and_the_daily_run_catches_it_up(
        prefect_api: None, fakes: dict, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.exceptions import FailedRun

    from flows.daily import reminder_flow

    seed(store)
    monkeypatch.setenv("PROMO_SENDGRID_API_KEY", "SG.revoked")
    reset_settings()
    with pytest.raises(FailedRun, match="email: SendGrid 401.*stay planned"):
        wave_flow("python-meetup-74", "announce", ANNOUNCE.isoformat())
    assert fakes["email"].received == []
    others = {name: len(f.received) for name, f in fakes.items() if name != "email"}
    assert any(others.values())  # the other channels went as usual

    monkeypatch.setenv("PROMO_SENDGRID_API_KEY", "SG.wave-key")
    reset_settings()
    reminder_flow((ANNOUNCE + timedelta(hours=1)).isoformat(), schedule=False)
    assert sorted(m["to"][0] for m in fakes["email"].received) == ["anna@example.org",
                                                                   "boris@example.org"]
    assert {name: len(f.received) for name, f in fakes.items() if name != "email"} == others
