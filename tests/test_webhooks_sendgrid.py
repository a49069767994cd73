"""SendGrid's signed Event Webhook: events move the ledger by the key in custom_args;
bounces, spam reports and unsubscribes withdraw email consent; nothing unsigned counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from promo.db import session_scope
from promo.db.models import WebhookEvent
from tests.webhook_support import World, add_contact, make_world, sendgrid_headers

# sendgrid-python's published test vector (test/unit/test_eventwebhook.py)
VECTOR_PUBLIC_KEY = ("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN"
                     "1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==")
VECTOR_SIGNATURE = ("MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbP"
                    "IqHh89M15TluLtEZtM=")
VECTOR_TIMESTAMP = "1600112502"
VECTOR_PAYLOAD = json.dumps([{
    "email": "hello@world.com",
    "event": "dropped",
    "reason": "Bounced Address",
    "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
    "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
    "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
    "timestamp": 1600112492,
}], sort_keys=True, separators=(",", ":")) + "\r\n"


@pytest.fixture
def world(store: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return make_world(store, monkeypatch)


def event(kind: str, n: int, key: str | None = "python-meetup-74/announce/{cid}/email",
          **extra: object) -> dict:
    """One event as SendGrid posts it; custom args arrive as top-level fields."""
    e = {"email": "anna@example.org", "timestamp": 1763700000 + n, "event": kind,
         "sg_event_id": f"evt-{kind}-{n}", "sg_message_id": "x-msg-1.filterdrecv-1-2-3.0",
         "smtp-id": "<x-msg-1@ismtpd.sendgrid.net>", "category": ["announce"]}
    if key:
        e["promo_key"] = key
    e.update(extra)
    return e


def post(world: World, events: list[dict], headers: dict | None = None):
    for e in events:
        if "promo_key" in e:
            e["promo_key"] = e["promo_key"].format(cid=world.contact_id)
    body = json.dumps(events).encode() + b"\r\n"
    return world.client.post("/sendgrid/events", content=body,
                             headers=headers or sendgrid_headers(body))


def test_the_published_test_vector_validates_and_applies(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    from promo.settings import reset_settings
    from promo.webhooks.app import create_app

    monkeypatch.setenv("PROMO_SENDGRID_WEBHOOK_PUBLIC_KEY", VECTOR_PUBLIC_KEY)
    client = TestClient(create_app(reset_settings()))
    hello = add_contact("hello@world.com", "+79161234568", None, None, language="en")
    headers = {"X-Twilio-Email-Event-Webhook-Signature": VECTOR_SIGNATURE,
               "X-Twilio-Email-Event-Webhook-Timestamp": VECTOR_TIMESTAMP}
    # one byte changed, or another timestamp: refused, nothing stored
    tampered = VECTOR_PAYLOAD.replace("Bounced", "bounced")
    assert client.post("/sendgrid/events", content=tampered, headers=headers).status_code == 403
    assert client.post("/sendgrid/events", content=VECTOR_PAYLOAD, headers=headers | {
        "X-Twilio-Email-Event-Webhook-Timestamp": "1600112503"}).status_code == 403
    assert world.webhook_events() == 0
    r = client.post("/sendgrid/events", content=VECTOR_PAYLOAD.encode(), headers=headers)
    assert r.status_code == 200
    with session_scope() as s:
        stored = s.scalar(select(WebhookEvent).where(WebhookEvent.provider == "sendgrid"))
    assert stored.dedupe_key == "sendgrid:ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA"
    assert stored.raw["reason"] == "Bounced Address"
    assert stored.normalized["status"] == "failed"
    # SendGrid dropped it because the address bounced before: no more email to it
    assert world.next_wave(hello)["email"] == ("suppressed", "opted out")
    assert world.next_wave()["email"][0] == "planned"  # the other contact is untouched


def test_delivery_events_follow_the_ledger_key(world: World) -> None:
    r = post(world, [event("processed", 1), event("delivered", 2)])
    assert r.status_code == 200
    m = world.message("email")
    assert (m.status, m.delivery_status) == ("delivered", "delivered")
    post(world, [event("open", 3, sg_machine_open=False), event("click", 4,
                                                                url="https://example.org")])
    assert world.message("email").delivery_status == "clicked"
    # a late "deferred" (queued) does not move it back
    post(world, [event("deferred", 5, response="400 try again later", attempt="5")])
    m = world.message("email")
    assert (m.status, m.delivery_status) == ("delivered", "clicked")
    assert world.next_wave()["email"][0] == "planned"  # opening is no opt-out
    with session_scope() as s:
        rows = {e.raw["event"]: e.normalized["status"] for e in s.scalars(select(WebhookEvent))}
    assert rows == {"processed": "queued", "delivered": "delivered", "open": "opened",
                    "click": "clicked", "deferred": "queued"}


def test_unknown_event_names_map_to_unknown(world: World) -> None:
    post(world, [event("group_resubscribe", 1)])
    with session_scope() as s:
        stored = s.scalar(select(WebhookEvent))
    assert stored.normalized["status"] == "unknown"
    assert world.message("email").delivery_status is None


@pytest.mark.parametrize("kind, extra, delivery", [
    ("bounce", {"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 no such user"},
     "bounced"),
    ("spamreport", {}, "complained"),
    ("unsubscribe", {}, "unsubscribed"),
    ("group_unsubscribe", {"asm_group_id": 1}, "unsubscribed"),
])
def test_bounce_spamreport_and_unsubscribe_keep_the_contact_out_of_the_next_email(
        world: World, kind: str, extra: dict, delivery: str) -> None:
    assert world.next_wave()["email"][0] == "planned"
    r = post(world, [event(kind, 1, **extra)])
    assert r.status_code == 200
    assert world.message("email").delivery_status == delivery
    plan = world.next_wave()
    assert plan["email"] == ("suppressed", "opted out")
    assert plan["sms"][0] == "planned"
    assert f"sendgrid: {kind}" in world.consent("email").withdrawn_source


def test_a_blocked_bounce_fails_the_message_but_keeps_the_consent(world: World) -> None:
    post(world, [event("bounce", 1, type="blocked", reason="554 IP listed on a blocklist")])
    m = world.message("email")
    assert (m.status, m.delivery_status) == ("failed", "failed")
    assert "blocklist" in m.reason
    assert world.next_wave()["email"][0] == "planned"


def test_events_without_the_custom_arg_match_by_message_id_and_address(world: World) -> None:
    post(world, [event("delivered", 1, key=None)])
    assert world.message("email").delivery_status == "delivered"
    # same X-Message-Id, another recipient of that API call: not this contact's row
    post(world, [event("bounce", 2, key=None, email="someone@else.org")])
    assert world.message("email").delivery_status == "delivered"


def test_a_repeated_batch_changes_nothing(world: World) -> None:
    batch = [event("delivered", 1), event("bounce", 2, type="bounce")]
    assert post(world, [dict(e) for e in batch]).status_code == 200
    before = world.snapshot()
    assert post(world, [dict(e) for e in batch]).status_code == 200
    assert world.snapshot() == before


@pytest.mark.parametrize("how", ["missing", "forged", "wrong timestamp", "tampered"])
def test_unsigned_or_forged_batches_are_refused_and_change_nothing(world: World, how: str) -> None:
    events = [event("bounce", 1, type="bounce")]
    events[0]["promo_key"] = events[0]["promo_key"].format(cid=world.contact_id)
    body = json.dumps(events).encode()
    headers = sendgrid_headers(body)
    if how == "missing":
        headers = {"Content-Type": "application/json"}
    elif how == "forged":
        headers["X-Twilio-Email-Event-Webhook-Signature"] = VECTOR_SIGNATURE
    elif how == "wrong timestamp":
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = "1700000001"
    elif how == "tampered":
        body = body.replace(b"bounce", b"spamreport", 1)
    before = world.snapshot()
    r = world.client.post("/sendgrid/events", content=body, headers=headers)
    assert r.status_code == 403
    assert world.snapshot() == before


def test_without_a_verification_key_every_batch_is_refused(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    from promo.settings import reset_settings
    from promo.webhooks.app import create_app

    monkeypatch.delenv("PROMO_SENDGRID_WEBHOOK_PUBLIC_KEY")
    client = TestClient(create_app(reset_settings()))
    body = json.dumps([event("bounce", 1)]).encode()
    assert client.post("/sendgrid/events", content=body,
                       headers=sendgrid_headers(body)).status_code == 403
    assert world.webhook_events() == 0
