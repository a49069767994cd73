"""Twilio: status callbacks move the ledger, STOP / START move SMS consent, and nothing
happens without a valid X-Twilio-Signature."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import RequestValidator

from promo.db import session_scope
from promo.db.models import Message
from promo.settings import Settings
from promo.webhooks.twilio import signature_ok
from tests.webhook_support import PUBLIC_URL, TWILIO_TOKEN, World, make_world

# Twilio's published example (twilio-python tests/unit/test_request_validator.py and the
# security docs): Auth Token "12345", this URL and these fields.
EXAMPLE_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
EXAMPLE_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
                  "From": "+14158675309", "To": "+18005551212"}
EXAMPLE_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
# the same example with the numbers of Twilio's older docs
OLD_EXAMPLE_PARAMS = EXAMPLE_PARAMS | {"Caller": "+12349013030", "From": "+12349013030"}
OLD_EXAMPLE_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="

SMS_SID = "SM0123456789abcdef0123456789abcdef"
CALL_SID = "CA0123456789abcdef0123456789abcdef"


@pytest.fixture
def world(store: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return make_world(store, monkeypatch)


def signed_post(world: World, path: str, fields: dict[str, str], *, token: str = TWILIO_TOKEN,
                signature: str | None = None):
    """POST as Twilio does: form fields, signed over the public URL it was given."""
    if signature is None:
        signature = RequestValidator(token).compute_signature(PUBLIC_URL + path, fields)
    return world.client.post(path, data=fields, headers={"X-Twilio-Signature": signature})


def test_published_examples_validate() -> None:
    settings = Settings(twilio_auth_token=TWILIO_TOKEN)
    for params, signature in ((EXAMPLE_PARAMS, EXAMPLE_SIGNATURE),
                              (OLD_EXAMPLE_PARAMS, OLD_EXAMPLE_SIGNATURE)):
        headers = {"X-Twilio-Signature": signature}
        assert signature_ok(settings, EXAMPLE_URL, ImmutableMultiDict(params), headers)
        tampered = ImmutableMultiDict(params | {"Digits": "1235"})
        assert not signature_ok(settings, EXAMPLE_URL, tampered, headers)
    assert not signature_ok(Settings(twilio_auth_token="54321"), EXAMPLE_URL,
                            ImmutableMultiDict(EXAMPLE_PARAMS), {"X-Twilio-Signature":
                                                                 EXAMPLE_SIGNATURE})
    # with no Auth Token configured, nothing validates
    assert not signature_ok(Settings(), EXAMPLE_URL, ImmutableMultiDict(EXAMPLE_PARAMS),
                            {"X-Twilio-Signature": EXAMPLE_SIGNATURE})


def test_sms_status_callbacks_move_the_ledger_out_of_order_and_once(world: World) -> None:
    fields = {"MessageSid": SMS_SID, "SmsSid": SMS_SID, "AccountSid": "AC123",
              "From": "+15005550006", "To": "+79161234567", "ApiVersion": "2010-04-01"}
    r = signed_post(world, "/twilio/status", fields | {"MessageStatus": "delivered",
                                                       "SmsStatus": "delivered"})
    assert r.status_code == 200
    m = world.message("sms")
    assert (m.status, m.delivery_status) == ("delivered", "delivered")
    # a late "sent" does not take the message back
    r = signed_post(world, "/twilio/status", fields | {"MessageStatus": "sent",
                                                       "SmsStatus": "sent"})
    assert r.status_code == 200
    m = world.message("sms")
    assert (m.status, m.delivery_status) == ("delivered", "delivered")
    # the same callback again changes nothing, and is stored once
    before = world.snapshot()
    r = signed_post(world, "/twilio/status", fields | {"MessageStatus": "sent",
                                                       "SmsStatus": "sent"})
    assert r.status_code == 200
    assert world.snapshot() == before
    assert world.webhook_events() == 2


def test_undelivered_with_an_invalid_number_fails_and_marks_it_unreachable(world: World) -> None:
    r = signed_post(world, "/twilio/status", {
        "MessageSid": SMS_SID, "MessageStatus": "undelivered", "ErrorCode": "30006",
        "To": "+79161234567"})
    assert r.status_code == 200
    m = world.message("sms")
    assert (m.status, m.delivery_status) == ("failed", "bounced")
    assert "30006" in m.reason
    consent = world.consent("sms")
    assert consent.unreachable_at is not None and "30006" in consent.unreachable_reason
    assert world.next_wave()["sms"] == ("suppressed", "unreachable")


def test_error_21610_is_an_opt_out(world: World) -> None:
    r = signed_post(world, "/twilio/status", {
        "MessageSid": SMS_SID, "MessageStatus": "failed", "ErrorCode": "21610"})
    assert r.status_code == 200
    assert world.message("sms").status == "failed"
    assert world.next_wave()["sms"] == ("suppressed", "opted out")


def test_call_status_callbacks(world: World) -> None:
    base = {"CallSid": CALL_SID, "AccountSid": "AC123", "To": "+79161234567",
            "Direction": "outbound-api"}
    assert signed_post(world, "/twilio/status", base | {"CallStatus": "ringing"}).status_code == 200
    assert world.message("voice").delivery_status == "sent"
    r = signed_post(world, "/twilio/status", base | {"CallStatus": "completed",
                                                     "CallDuration": "17"})
    assert r.status_code == 200
    m = world.message("voice")
    assert (m.status, m.delivery_status) == ("delivered", "delivered")


def test_a_callback_for_an_unknown_message_is_stored_and_changes_no_row(world: World) -> None:
    before = world.snapshot()
    r = signed_post(world, "/twilio/status", {"MessageSid": "SMunknown",
                                              "MessageStatus": "delivered"})
    assert r.status_code == 200
    after = world.snapshot()
    assert after[:4] == before[:4]
    assert after[4] == before[4] + 1


@pytest.mark.parametrize("how", ["missing", "forged", "other token", "other url", "tampered"])
def test_a_request_without_a_valid_signature_is_refused_and_changes_nothing(
        world: World, how: str) -> None:
    fields = {"MessageSid": SMS_SID, "MessageStatus": "undelivered", "ErrorCode": "30006"}
    validator = RequestValidator(TWILIO_TOKEN)
    headers = {}
    if how == "forged":
        headers = {"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ="}
    elif how == "other token":
        headers = {"X-Twilio-Signature": RequestValidator("54321").compute_signature(
            PUBLIC_URL + "/twilio/status", fields)}
    elif how == "other url":  # signed for the address the app listens on, not the public one
        headers = {"X-Twilio-Signature": validator.compute_signature(
            "http://testserver/twilio/status", fields)}
    elif how == "tampered":
        headers = {"X-Twilio-Signature": validator.compute_signature(
            PUBLIC_URL + "/twilio/status", fields | {"ErrorCode": "30003"})}
    before = world.snapshot()
    for path in ("/twilio/status", "/twilio/inbound"):
        r = world.client.post(path, data=fields | {"Body": "STOP", "From": "+79161234567"},
                              headers=headers)
        assert r.status_code == 403
        assert r.text == "forbidden"
    assert world.snapshot() == before


def test_a_query_string_is_part_of_what_is_signed(world: World) -> None:
    fields = {"MessageSid": SMS_SID, "MessageStatus": "delivered"}
    url = PUBLIC_URL + "/twilio/status?attempt=1"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, fields)
    r = world.client.post("/twilio/status?attempt=1", data=fields,
                          headers={"X-Twilio-Signature": signature})
    assert r.status_code == 200
    assert world.message("sms").delivery_status == "delivered"
    r = world.client.post("/twilio/status?attempt=2", data=fields,
                          headers={"X-Twilio-Signature": signature})
    assert r.status_code == 403


@pytest.mark.parametrize("word", ["STOP", "stop", "Unsubscribe", "СТОП", "стоп."])
def test_stop_keeps_the_contact_out_of_the_next_wave_on_sms(world: World, word: str) -> None:
    assert world.next_wave()["sms"][0] == "planned"
    fields = {"MessageSid": "SMinbound1", "From": "+79161234567", "To": "+15005550006",
              "Body": word, "NumMedia": "0"}
    r = signed_post(world, "/twilio/inbound", fields)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/xml")
    assert "<Response>" in r.text
    plan = world.next_wave()
    assert plan["sms"] == ("suppressed", "opted out")
    assert plan["voice"][0] == "planned"  # STOP is about SMS; calls are their own consent
    consent = world.consent("sms")
    assert "SMS" in consent.withdrawn_source
    # the same inbound message delivered again changes nothing
    before = world.snapshot()
    assert signed_post(world, "/twilio/inbound", fields).status_code == 200
    assert world.snapshot() == before


def test_start_after_stop_brings_sms_back(world: World) -> None:
    base = {"From": "+79161234567", "To": "+15005550006"}
    signed_post(world, "/twilio/inbound", base | {"MessageSid": "SMin1", "Body": "STOP"})
    assert world.next_wave()["sms"] == ("suppressed", "opted out")
    signed_post(world, "/twilio/inbound", base | {"MessageSid": "SMin2", "Body": "START"})
    assert world.next_wave()["sms"][0] == "planned"


def test_advanced_opt_out_type_is_honored_and_other_texts_change_nothing(world: World) -> None:
    base = {"From": "+79161234567", "To": "+15005550006"}
    before = world.snapshot()
    signed_post(world, "/twilio/inbound", base | {"MessageSid": "SMin1",
                                                  "Body": "please stop the spam"})
    assert world.snapshot()[:4] == before[:4]
    # Twilio's Advanced Opt-Out matched a custom keyword and says so
    signed_post(world, "/twilio/inbound", base | {"MessageSid": "SMin2", "Body": "ХВАТИТ",
                                                  "OptOutType": "STOP"})
    assert world.next_wave()["sms"] == ("suppressed", "opted out")


def test_a_callback_before_the_sid_is_recorded_finds_its_row_by_the_urls_key(world: World) -> None:
    from urllib.parse import quote

    from channels.twilio_sms import callback_url

    with session_scope() as s:  # the batch that sent it has not recorded the SID yet
        s.execute(update(Message).where(Message.key == world.message("sms").key)
                  .values(provider_message_id=None, status="sending"))
    key = world.message("sms").key
    url = callback_url("/twilio/status", key)
    assert url == f"/twilio/status?promo_key={quote(key, safe='')}"
    fields = {"MessageSid": "SMnew", "MessageStatus": "undelivered", "ErrorCode": "30006",
              "AccountSid": "AC123", "To": "+79161234567"}
    r = signed_post(world, url, fields)
    assert r.status_code == 200
    m = world.message("sms")
    assert (m.provider_message_id, m.delivery_status) == ("SMnew", "bounced")
    assert world.consent("sms").unreachable_at is not None
