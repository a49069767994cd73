"""The series through the webhook server (UTM tags and attendance on the registration
webhook, short-link clicks) and through the real Prefect flows (the report artifacts)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from promo.db import session_scope
from promo.db.models import Contact, LinkClick, Registration
from tests.webhook_support import REGISTRATION_SECRET, SLUG, World, make_world


@pytest.fixture
def world(store: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return make_world(store, monkeypatch)


def post(world: World, data: dict):
    body = json.dumps(data).encode()
    header = "sha256=" + hmac.new(REGISTRATION_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return world.client.post("/registrations", content=body,
                             headers={"X-Promo-Signature": header,
                                      "Content-Type": "application/json"})


def registration(email: str) -> Registration | None:
    with session_scope() as s:
        return s.scalar(select(Registration).join(Contact, Contact.id == Registration.contact_id)
                        .where(Contact.email == email))


def test_the_registration_webhook_keeps_the_tags_and_takes_attendance(world: World) -> None:
    at = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    r = post(world, {"event": SLUG, "id": "tp-7", "email": "boris@example.org",
                     "registered_at": at, "utm_source": "sms", "utm_medium": "promotion",
                     "utm_campaign": SLUG, "utm_content": "last_call"})
    assert r.status_code == 200 and r.json()["new_registration"]
    reg = registration("boris@example.org")
    assert (reg.utm_source, reg.utm_campaign, reg.utm_content) == ("sms", SLUG, "last_call")
    assert reg.attended is None and not reg.walk_in
    # at the door: the same registration id, an attendance update (not a repeat)
    came = post(world, {"event": SLUG, "id": "tp-7", "email": "boris@example.org",
                        "attended": True})
    assert came.status_code == 200 and came.json()["outcome"] == "applied"
    assert registration("boris@example.org").attended is True
    assert post(world, {"event": SLUG, "id": "tp-7", "email": "boris@example.org",
                        "attended": True}).json()["outcome"] == "duplicate"
    # someone who never registered: a walk-in
    walk = post(world, {"event": SLUG, "email": "gleb@example.org", "attended": True})
    assert walk.json()["walk_in"] is True
    assert registration("gleb@example.org").walk_in is True
    bad = post(world, {"event": SLUG, "email": "gleb@example.org", "attended": "yes"})
    assert bad.status_code == 422 and "attended" in bad.json()["error"]
    long = post(world, {"event": SLUG, "email": "x@example.org", "utm_source": "s" * 201})
    assert long.status_code == 422 and "utm_source" in long.json()["error"]


def test_short_link_clicks_are_counted_per_wave_and_channel(world: World) -> None:
    for _ in range(2):
        assert world.client.get(f"/go/{SLUG}/sms/last_call",
                                follow_redirects=False).status_code == 302
    assert world.client.get(f"/go/{SLUG}/sms/announce", follow_redirects=False).status_code == 302
    assert world.client.get("/go/no-such-event/sms/announce").status_code == 404
    with session_scope() as s:
        clicks = sorted((c.wave, c.channel) for c in s.scalars(select(LinkClick)))
    assert clicks == [("announce", "sms"), ("last_call", "sms"), ("last_call", "sms")]


def test_the_campaign_and_the_daily_run_publish_the_report(prefect_api, store: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from audiences import synthetic
    from flows.campaign import campaign_flow
    from flows.daily import reminder_flow
    from tests.helpers import write_event

    slug = "series-flow-1"
    starts = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
    path = write_event(store, starts, slug=slug, extra=(
        "series: flow-test\ncampaign:\n  announce: null\n"
        "  last_call: {days_before: 3, at: \"11:00\", channels: [email]}\n"
        "  reminder: {at: \"11:00\", channels: [email]}\n"))
    people = [synthetic.SyntheticContact(
        id=i, name=f"P{i}", language="ru", timezone="Europe/Moscow",
        email=f"p{i}@example.org", phone=None, vk_id=None, telegram_chat_id=None,
        topics=["python"], consents=["email"]) for i in range(1, 6)]
    now = starts - timedelta(days=5)
    with session_scope() as s:
        synthetic.store(s, people, granted_at=now - timedelta(days=100))
    campaign_flow(str(path), now.isoformat())
    with session_scope() as s:
        from flows.store import find_event

        event = find_event(s, slug)
        assert event.series == "flow-test"
        for p in people[:3]:
            s.add(Registration(event_id=event.id, contact_id=p.id,
                               registered_at=now + timedelta(hours=1), source="test"))
    reminder_at = starts.astimezone(ZoneInfo("Europe/Moscow")).replace(
        hour=11, minute=0, second=0) - timedelta(days=1)
    reminder_flow((reminder_at + timedelta(minutes=5)).isoformat(), schedule=False)

    def artifacts(key: str):
        with get_client(sync_client=True) as client:
            return client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC)

    reports = artifacts(f"{slug}-report")
    assert len(reports) == 2, "one from the campaign run, one from the daily run"
    latest, first = reports
    assert "**Forecast:** nobody has registered yet" in first.data
    assert "**Registered:** 3" in latest.data and "**Forecast:**" in latest.data
    assert "data:image/png;base64,iVBOR" in latest.data
    (summary,) = artifacts(f"{slug}-reminder-summary")[:1]
    assert "**Forecast:**" in summary.data and "of the 3 registered so far" in summary.data
