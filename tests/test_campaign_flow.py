"""A demo-sized campaign through the real Prefect flows, checked from the ledger and the outbox."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from flows.campaign import wave_flow
from promo.db import session_scope
from promo.db.models import Contact, Event, Message, Registration
from promo.settings import get_settings

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo_run(prefect_api, tmp_path_factory):
    """One demo campaign for the module (1,000 contacts, three waves, simulated clock)."""
    import os

    from promo.db import dispose_engines
    from promo.demo import run_demo
    from promo.settings import reset_settings

    folder = tmp_path_factory.mktemp("demo")
    saved = {k: os.environ.get(k) for k in ("PROMO_DATABASE_URL", "PROMO_OUTBOX_DIR")}
    result = run_demo(folder, contacts=1000, now=NOW)
    yield folder, result
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    dispose_engines()
    reset_settings()


def sent_rows():
    with session_scope() as s:
        event = s.scalar(select(Event).where(Event.slug == "python-meetup-74"))
        rows = s.execute(select(Message.contact_id, Message.wave, Message.channel, Message.sent_at,
                                Message.status).where(Message.event_id == event.id)).all()
        registered = {cid: at for cid, at in s.execute(
            select(Registration.contact_id, Registration.registered_at)
            .where(Registration.event_id == event.id))}
        zones = dict(s.execute(select(Contact.id, Contact.timezone)).all())
        return event, rows, registered, zones


def test_outbox_holds_all_three_waves(demo_run):
    folder, _ = demo_run
    outbox = folder / "outbox"
    emails = list((outbox / "email").glob("*.eml"))
    waves_by_email = Counter(w for p in emails for w in ("announce", "last_call", "reminder")
                             if f"_{w}_" in p.name)
    assert set(waves_by_email) == {"announce", "last_call", "reminder"}, waves_by_email
    lines = [json.loads(line) for f in outbox.glob("*/*.jsonl") for line in f.read_text().splitlines()]
    # the series' monthly digest went first (its public posts too)
    assert {m["wave"] for m in lines} == {"announce", "last_call", "reminder", "digest"}
    assert {m["channel"] for m in lines} >= {"sms", "vk", "telegram", "vk_wall"}
    keys = [m["key"] for m in lines] + [p.name for p in emails]
    assert len(keys) == len(set(keys)), "a message was written twice"
    sample = next(p for p in emails if "_reminder_" in p.name).read_text()
    assert "List-Unsubscribe" in sample and "One-Click" in sample


def test_every_rule_holds_in_the_ledger(demo_run):
    event, rows, registered, zones = sent_rows()
    settings = get_settings()
    went = [r for r in rows if r.status == "sent"]
    assert len(went) > 500
    per_wave = Counter((r.contact_id, r.wave) for r in went if r.contact_id and r.wave != "reminder")
    assert max(per_wave.values()) == 1, "fallback mode sends a promotional wave once per contact"
    for r in went:
        assert r.sent_at < event.starts_at
        if r.contact_id is None:
            continue
        if r.wave == "reminder":
            assert r.contact_id in registered
        else:
            # no promotion after the person registered
            assert r.contact_id not in registered or registered[r.contact_id] > r.sent_at
        window = settings.send_windows().get(r.channel)
        if window:
            tz = zones[r.contact_id] or event.timezone
            # against the window itself, not the production next_send_time it would share a bug with
            local = r.sent_at.astimezone(ZoneInfo(tz)).time()
            assert window.start <= local < window.end, (r, tz, local)
    # caps hold across this campaign and the earlier meetup's messages
    with session_scope() as s:
        all_sent = s.execute(select(Message.contact_id, Message.channel, Message.sent_at).where(
            Message.status == "sent", Message.contact_id.is_not(None))).all()
    by_contact = defaultdict(list)
    for cid, channel, at in all_sent:
        by_contact[(cid, channel)].append(at)
        by_contact[(cid, "direct")].append(at)
    for (cid, channel), times in by_contact.items():
        cap = settings.cap_rules()[channel]
        times.sort()
        for i, t in enumerate(times):
            in_window = [u for u in times[i:] if u < t + cap.window]
            assert len(in_window) <= cap.limit, (cid, channel, times)


def test_outcomes_show_caps_and_suppressions(demo_run):
    _, rows, _, _ = sent_rows()
    statuses = Counter(r.status for r in rows)
    assert statuses["sent"] and statuses["suppressed"] and statuses["capped"]
    assert statuses["planned"] == 0 and statuses["sending"] == 0


def test_a_rerun_of_a_wave_sends_nothing_new(demo_run):
    _, before, _, _ = sent_rows()
    reminder_at = max(r.sent_at for r in before if r.wave == "reminder" and r.sent_at)
    result = wave_flow("python-meetup-74", "reminder", reminder_at.isoformat())
    assert result["sent"].get("sent", 0) == 0
    _, after, _, _ = sent_rows()
    assert sorted(map(tuple, before), key=str) == sorted(map(tuple, after), key=str)


def test_the_demo_sends_the_series_digest(demo_run):
    folder, result = demo_run
    digest = result["digest"]
    assert digest["digest"] == f"digest-python-{NOW.astimezone(ZoneInfo('Europe/Moscow')):%Y-%m}"
    assert digest["sent"]["sent"] > 100
    emails = list((folder / "outbox" / "email").glob(f"{digest['digest']}*.eml"))
    assert len(emails) == digest["sent"]["sent"] - 2  # and the VK wall and Telegram posts
    import email

    msg = email.message_from_bytes(emails[0].read_bytes())
    text = next(p.get_payload(decode=True).decode() for p in msg.walk()
                if p.get_content_type() == "text/plain")
    assert "python-meetup-73/asyncio" in text and "utm_medium=digest" in text
