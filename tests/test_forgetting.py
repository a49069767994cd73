"""Forgetting a person reaches everything that held them: waiting messages, raw webhook
reports, and a registration webhook replaying an old registration."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from audiences.privacy import forget
from flows.send import send_batch
from promo.db import session_scope
from promo.db.models import Contact, Message, WebhookEvent
from promo.settings import get_settings
from tests.webhook_support import REGISTRATION_SECRET, SLUG, make_world


def test_forgetting_stops_waiting_messages_and_scrubs_raw_reports(store, monkeypatch):
    make_world(store, monkeypatch)
    with session_scope() as s:
        person = s.scalar(select(Contact).where(Contact.email.is_not(None)))
        email, phone, cid = person.email, person.phone, person.id
        s.add(WebhookEvent(provider="sendgrid", dedupe_key="sg-1",
                           raw={"email": email, "event": "open"}, normalized={"to": email}))
        s.add(WebhookEvent(provider="twilio", dedupe_key="tw-1", raw={"From": "+70000000000"},
                           normalized=None))
    with session_scope() as s:  # a reminder for them is waiting to go
        event_id = s.scalar(select(Message.event_id).limit(1))
        waiting = Message(key=f"{SLUG}/reminder/{cid}/email", event_id=event_id, wave="reminder",
                          contact_id=cid, channel="email", status="planned",
                          send_at=datetime.now(UTC) - timedelta(minutes=1))
        s.add(waiting)
        s.flush()
        waiting_id = waiting.id
    with session_scope() as s:
        forget(s, email)
    with session_scope() as s:
        raws = {e.dedupe_key: e.raw for e in s.scalars(select(WebhookEvent))}
        left = s.scalars(select(Message).where(Message.key.contains(f"/{cid}/"))).all()
    assert raws["sg-1"] == {"forgotten": True}
    assert raws["tw-1"] == {"From": "+70000000000"}
    assert left and all(m.contact_id is None for m in left)
    assert {(m.status, m.reason) for m in left if m.id == waiting_id} == {
        ("suppressed", "contact forgotten")}
    # even a batch that still names the row sends nothing to the forgotten address
    with session_scope() as s:
        s.execute(Message.__table__.update().where(Message.id == waiting_id)
                  .values(status="planned"))
    outcome = send_batch([waiting_id], datetime.now(UTC), get_settings())
    assert outcome == {"suppressed": 1}
    sent_to = "".join(p.read_text(errors="replace") for p in (store / "outbox").rglob("*.*"))
    assert email not in sent_to and (phone is None or phone not in sent_to)


def test_an_old_registration_does_not_bring_a_forgotten_person_back(store, monkeypatch):
    world = make_world(store, monkeypatch)
    with session_scope() as s:
        forget(s, "new.person@example.org")

    def post(data):
        body = json.dumps(data).encode()
        sig = "sha256=" + hmac.new(REGISTRATION_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return world.client.post("/registrations", content=body, headers={
            "X-Promo-Signature": sig, "Content-Type": "application/json"})

    old = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    r = post({"event": SLUG, "email": "new.person@example.org", "registered_at": old})
    assert r.status_code == 422 and "forgotten" in r.text
    with session_scope() as s:
        assert s.scalar(select(Contact).where(Contact.email == "new.person@example.org")) is None
    # registering again after the forgetting is a new act: the person is added
    r = post({"event": SLUG, "email": "new.person@example.org", "id": "again"})
    assert r.status_code == 200 and r.json()["new_contact"] is True
