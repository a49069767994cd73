"""The registration webhook: HMAC-SHA256 over the body; a registration stops promotion."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from promo.db import session_scope
from promo.db.models import Contact, Registration
from promo.webhooks.registrations import sign
from tests.webhook_support import REGISTRATION_SECRET, SLUG, World, make_world


@pytest.fixture
def world(store: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return make_world(store, monkeypatch)


def post(world: World, data: dict, secret: str = REGISTRATION_SECRET,
         header: str | None = None):
    body = json.dumps(data, ensure_ascii=False).encode()
    if header is None:
        # exactly what the README tells a sender to compute
        header = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return world.client.post("/registrations", content=body,
                             headers={"X-Promo-Signature": header,
                                      "Content-Type": "application/json"})


def registrations() -> list[tuple[int, int, str]]:
    with session_scope() as s:
        return sorted((r.event_id, r.contact_id, r.source)
                      for r in s.scalars(select(Registration)))


def test_sign_matches_the_documented_recipe() -> None:
    body = b'{"event": "python-meetup-74", "email": "anna@example.org"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign("s3cret", body) == "sha256=" + expected


def test_a_registration_stops_promotion_before_the_next_wave(world: World) -> None:
    assert world.next_wave()["email"][0] == "planned"
    r = post(world, {"event": SLUG, "id": "tp-1", "email": "Anna@Example.org",
                     "source": "timepad"})
    assert r.status_code == 200
    assert r.json()["contact_id"] == world.contact_id
    assert r.json()["new_registration"] is True
    assert registrations() == [(world.event_id, world.contact_id, "webhook: timepad")]
    plan = world.next_wave()
    assert plan == {"email": ("suppressed", "registered")}  # no channel at all
    # delivered again: nothing changes
    before = world.snapshot()
    assert post(world, {"event": SLUG, "id": "tp-1", "email": "Anna@Example.org",
                        "source": "timepad"}).json() == {"outcome": "duplicate"}
    assert world.snapshot() == before


def test_a_new_person_is_added_with_the_consent_they_gave(world: World) -> None:
    r = post(world, {"event": SLUG, "phone": "8 (916) 765-43-21", "name": "Илья",
                     "language": "ru-RU", "consent": ["sms"],
                     "registered_at": "2026-11-20T10:00:00+03:00"})
    assert r.status_code == 200 and r.json()["new_contact"] is True
    with session_scope() as s:
        person = s.scalar(select(Contact).where(Contact.phone == "+79167654321"))
        assert (person.name, person.language) == ("Илья", "ru")
    assert world.consent("sms", person.id).granted_source.startswith("webhook: registration")
    assert [cid for _, cid, _ in registrations()] == [person.id]


@pytest.mark.parametrize("data, field", [
    ({"email": "anna@example.org"}, "event"),
    ({"event": "no-such-event", "email": "anna@example.org"}, "event"),
    ({"event": SLUG}, "contact_id, email or phone"),
    ({"event": SLUG, "email": "not an email"}, "not a valid email"),
    ({"event": SLUG, "contact_id": 999}, "contact_id"),
    ({"event": SLUG, "email": "a@example.org", "consent": ["fax"]}, "consent"),
    ({"event": SLUG, "email": "a@example.org", "registered_at": "2026-11-20 10:00"},
     "registered_at"),
])
def test_a_signed_body_that_cannot_be_applied_says_why_and_changes_nothing(
        world: World, data: dict, field: str) -> None:
    before = world.snapshot()
    r = post(world, data)
    assert r.status_code == 422
    assert field in r.json()["error"]
    assert world.snapshot() == before


@pytest.mark.parametrize("how", ["missing", "other secret", "tampered", "bare garbage"])
def test_unsigned_or_forged_registrations_are_refused(world: World, how: str) -> None:
    data = {"event": SLUG, "email": "anna@example.org"}
    body = json.dumps(data).encode()
    header = {"missing": "", "other secret": sign("guess", body),
              "tampered": sign(REGISTRATION_SECRET, body + b" "),
              "bare garbage": "deadbeef"}[how]
    before = world.snapshot()
    r = world.client.post("/registrations", content=body,
                          headers={"X-Promo-Signature": header} if header else {})
    assert r.status_code == 403
    assert world.snapshot() == before
    assert world.next_wave()["email"][0] == "planned"
