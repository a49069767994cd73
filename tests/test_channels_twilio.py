"""The Twilio SMS and voice adapters through the real `twilio` SDK against a fake REST API."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from channels.twilio_sms import TwilioSMS
from channels.twilio_voice import TwilioVoice
from tests.fakes import FakeTwilio
from tests.fakes.harness import CLIENT_TIMEOUT, SLOW, deliver_one, fast, message

SID, TOKEN = "AC" + "1" * 32, "twilio-test-token"
SENDER = "+15005550006"
OPTED_OUT, INVALID = "+79990000002", "+79990000003"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(SID, TOKEN, opted_out={OPTED_OUT}, invalid={INVALID}) as f:
        yield f


def sms(fake: FakeTwilio, token: str = TOKEN, **kw) -> TwilioSMS:
    kw.setdefault("sender", SENDER)
    return TwilioSMS(SID, token, base_url=fake.url, timeout=CLIENT_TIMEOUT, **kw)


def voice(fake: FakeTwilio, token: str = TOKEN, **kw) -> TwilioVoice:
    return TwilioVoice(SID, token, sender=SENDER, base_url=fake.url, timeout=CLIENT_TIMEOUT, **kw)


COMMON = [
    ("success", None, {}, "sent", 1, 1),
    ("invalid number: 21211", None, {"address": INVALID}, "unreachable", 1, 0),
    ("not E.164: never sent", None, {"address": "8 999 000-00-01"}, "unreachable", 0, 0),
    ("wrong auth token: 20003", None, {"token": "wrong"}, "configuration", 1, 0),
    ("429 with Retry-After", ("rate_limit", 1, {"retry_after": 3}), {}, "sent", 2, 1),
    ("429 without a hint", ("rate_limit", 1, {}), {}, "sent", 2, 1),
    ("5xx twice, then created", ("error", 2, {"status": 500}), {}, "sent", 3, 1),
    ("timeout after arriving", ("slow", 1, {"delay": SLOW}), {}, "uncertain", 1, 1),
    ("connection reset", ("reset", 1, {}), {}, "uncertain", 1, 0),
]
SMS_ONLY = [("replied STOP: 21610", None, {"address": OPTED_OUT}, "opted_out", 1, 0)]


def _run(fake: FakeTwilio, make, fault, change, expected, requests, accepted, channel_name):
    change = dict(change)
    channel = make(fake, token=change.pop("token", TOKEN))
    waits = fast(channel)
    if fault:
        kind, times, params = fault
        fake.fail(kind, times, **params)
    m = message(1, channel_name, change.pop("address", "+79990000001"), **change)
    try:
        assert deliver_one(channel, m) == expected
    finally:
        channel.close()
    assert len(fake.requests) == requests
    assert len(fake.received) == accepted
    if fault and fault[0] == "rate_limit":
        hint = fault[2].get("retry_after")
        assert waits.seconds[0] == hint if hint else waits.seconds[0] < 1.0


@pytest.mark.parametrize(("fault", "change", "expected", "requests", "accepted"),
                         [c[1:] for c in COMMON + SMS_ONLY], ids=[c[0] for c in COMMON + SMS_ONLY])
def test_sms_outcomes(fake: FakeTwilio, fault, change, expected, requests, accepted) -> None:
    _run(fake, sms, fault, change, expected, requests, accepted, "sms")


@pytest.mark.parametrize(("fault", "change", "expected", "requests", "accepted"),
                         [c[1:] for c in COMMON], ids=[c[0] for c in COMMON])
def test_voice_outcomes(fake: FakeTwilio, fault, change, expected, requests, accepted) -> None:
    _run(fake, voice, fault, change, expected, requests, accepted, "voice")


def test_sms_from_a_messaging_service_with_status_callback(fake: FakeTwilio) -> None:
    channel = sms(fake, sender=None, messaging_service_sid="MG" + "2" * 32,
                  status_callback="https://promo.example.org/webhooks/twilio/status")
    [result] = channel.deliver([message(1, "sms", "+79990000001")])
    channel.close()
    [sent] = fake.received
    assert result.provider_message_id == sent["sid"] and sent["sid"].startswith("SM")
    assert sent["messaging_service_sid"] == "MG" + "2" * 32 and sent["from"] is None
    # the ledger key rides along, so an early callback still finds its row
    key = message(1, "sms", "+79990000001").key
    assert sent["status_callback"] == ("https://promo.example.org/webhooks/twilio/status?"
                                       + urlencode({"promo_key": key}))
    assert sent["body"] == "Привет! Встреча 10 декабря"


@pytest.mark.parametrize(("language", "say_language"), [("ru", "ru-RU"), ("en", "en-US")])
def test_voice_says_the_text_in_the_contacts_language(fake: FakeTwilio, language: str,
                                                      say_language: str) -> None:
    channel = voice(fake, machine_detection="DetectMessageEnd")
    [result] = channel.deliver([message(1, "voice", "+79990000001", text="Встреча завтра",
                                        language=language)])
    channel.close()
    [call] = fake.received
    assert result.provider_message_id == call["sid"] and call["sid"].startswith("CA")
    say = ET.fromstring(call["twiml"]).find("Say")
    assert say is not None and say.text == "Встреча завтра"
    assert say.get("language") == say_language
    assert call["machine_detection"] == "DetectMessageEnd"
