"""`promo demo`: a whole campaign on the embedded defaults, with a simulated clock.

A synthetic audience of 1,000 contacts, a sample event three weeks ahead, some history
from an earlier meetup (so caps bite), and registrations that arrive between the waves.
Every wave runs through the Prefect flows "at" its time; messages land in the outbox.
"""

from __future__ import annotations

import os
import random
import shutil
import textwrap
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from prefect import flow
from sqlalchemy import insert, select

from audiences import synthetic
from channels.samples import sample_check
from flows.campaign import release_held, wave_flow
from flows.digest_flow import digest_flow
from flows.plan import plan_campaign
from flows.store import save_event
from promo.db import dispose_engines, session_scope
from promo.db.models import Event, Message, Registration
from promo.demo_series import add_history
from promo.domain.event import EventSpec, load_event
from promo.domain.names import Status
from promo.domain.times import shown
from promo.settings import get_settings, reset_settings

EVENT_SLUG = "python-meetup-74"
DEMO_SERIES = "python"


def event_yaml(starts_at: datetime) -> str:
    return textwrap.dedent(f"""\
        slug: {EVENT_SLUG}
        title: "Moscow Python Meetup #74"
        starts_at: {starts_at.isoformat()}
        timezone: Europe/Moscow
        venue: "Точка кипения, ул. Малая Андроньевская, 15"
        registration_url: https://example.org/python-meetup-74
        topic: python
        language: ru
        campaign:
          announce:  {{days_before: 14, at: "11:00", channels: [email, vk, telegram, voice, vk_wall], mode: fallback}}
          last_call: {{days_before: 3,  at: "11:00", channels: [email, vk, telegram, sms],   mode: fallback}}
          reminder:  {{at: "11:00", channels: [email, sms, vk, telegram], mode: all}}
        """)


def prepare(folder: Path, contacts: int, now: datetime) -> Path:
    """Fresh demo store and event file in `folder`; returns the event file."""
    for name in ("promo.db", "promo.db-wal", "promo.db-shm"):
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / "outbox", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMO_DATABASE_URL"] = f"sqlite:///{(folder / 'promo.db').resolve()}"
    os.environ["PROMO_OUTBOX_DIR"] = str((folder / "outbox").resolve())
    dispose_engines()
    reset_settings()

    msk = ZoneInfo("Europe/Moscow")
    day = now.astimezone(msk).date() + timedelta(days=20)
    starts_at = datetime.combine(day, time(19, 0), tzinfo=msk)
    path = folder / f"{EVENT_SLUG}.yaml"
    path.write_text(event_yaml(starts_at), encoding="utf-8")

    audience = list(synthetic.generate(contacts))
    rng = random.Random(7)
    with session_scope() as s:
        synthetic.store(s, audience, granted_at=now - timedelta(days=400))
        # an earlier meetup wrote to part of this audience recently: the caps remember it
        spec = load_event(path)
        previous = Event(slug="python-meetup-73", title="Moscow Python Meetup #73",
                         starts_at=now - timedelta(days=10), timezone="Europe/Moscow",
                         topic="python", series="python", language="ru",
                         definition=_previous_definition(now - timedelta(days=10)))
        s.add(previous)
        s.flush()
        announce_at = spec.wave_time(spec.campaign.announce)
        rows = []
        for c in audience:
            for channel in c.consents:
                if rng.random() < 0.12:
                    sent = announce_at - timedelta(days=rng.uniform(1, 6))
                    rows.append({"key": f"python-meetup-73/last_call/{c.id}/{channel}",
                                 "event_id": previous.id, "wave": "last_call",
                                 "contact_id": c.id, "channel": channel, "status": Status.sent,
                                 "send_at": sent, "sent_at": sent, "decided_at": sent,
                                 "counts_for_caps": True, "attempts": 1, "updated_at": sent})
        if rows:
            s.execute(insert(Message), rows)
        # the series before this meetup: its registrations and who came (promo report)
        add_history(s, audience, previous)
        event = save_event(s, spec, path)
        followers = [c.id for c in audience if "python" in c.topics]
        early = rng.sample(followers, k=len(followers) // 12)
        s.execute(insert(Registration), [
            {"event_id": event.id, "contact_id": cid, "registered_at": now, "source": "demo"}
            for cid in early])
    return path


def _previous_definition(starts_at: datetime) -> dict:
    """The earlier meetup as its event file would say, with what it left behind (the
    monthly digest lists its recordings and slides)."""
    return EventSpec.model_validate({
        "slug": "python-meetup-73", "title": "Moscow Python Meetup #73",
        "starts_at": starts_at.isoformat(), "timezone": "Europe/Moscow",
        "venue": "Точка кипения, ул. Малая Андроньевская, 15",
        "registration_url": "https://example.org/python-meetup-73", "topic": "python",
        "language": "ru",
        "recordings": ["https://video.example.org/python-meetup-73/keynote",
                       {"title": "asyncio в продакшене",
                        "url": "https://video.example.org/python-meetup-73/asyncio"}],
        "links": {"slides": "https://slides.example.org/python-meetup-73"},
    }).model_dump(mode="json")


def _register_some(slug: str, wave: str, share: float, seed: int, at: datetime) -> int:
    """People who got a wave register, some of them: the next waves must notice."""
    rng = random.Random(seed)
    with session_scope() as s:
        event = s.scalar(select(Event).where(Event.slug == slug))
        registered = set(s.scalars(select(Registration.contact_id).where(
            Registration.event_id == event.id)))
        reached = sorted(set(s.scalars(select(Message.contact_id).where(
            Message.event_id == event.id, Message.wave == wave, Message.status == Status.sent,
            Message.contact_id.is_not(None)))) - registered)
        new = [cid for cid in reached if rng.random() < share]
        if new:
            s.execute(insert(Registration), [
                {"event_id": event.id, "contact_id": cid, "registered_at": at,
                 "source": f"demo, after {wave}"}
                for cid in new])
        return len(new)


@flow(name="demo-campaign", flow_run_name="demo campaign {event_file}")
def demo_flow(event_file: str, now: str) -> dict:
    clock = datetime.fromisoformat(now)
    spec = load_event(event_file)
    plan = plan_campaign(spec, clock)
    sample_check(spec, {w.name: list(w.spec.channels) for w in plan.active},
                 settings=get_settings())
    registrations = {}
    for i, w in enumerate(plan.active):
        first = wave_flow(spec.slug, w.name, w.send_at.isoformat())
        later = release_held(spec.slug, w.name, spec.starts_at)
        sent = sum(r.get("sent", {}).get("sent", 0) for r in [first, *later])
        held = sum(r.get("sent", {}).get("sent", 0) for r in later)
        line = f"  {w.name:<9} {shown(w.send_at, spec.zone)}: {sent} sent"
        if held:
            line += f" ({held} of them held by quiet hours until the contact's morning)"
        if w.promotional:
            registrations[w.name] = _register_some(
                spec.slug, w.name, 0.15, seed=i, at=w.send_at + timedelta(hours=12))
            line += f"; {registrations[w.name]} more people registered after it"
        print(line, flush=True)
    return {"registrations": registrations}


def run_demo(folder: Path, contacts: int = 1000, now: datetime | None = None) -> dict:
    now = now or datetime.now(UTC)
    path = prepare(folder, contacts, now)
    # today's monthly digest first (the next meetup, the last one's recordings): the
    # campaign's waves then count it against the caps like any message
    digest = digest_flow(DEMO_SERIES, now.isoformat())
    result = demo_flow(str(path), now.isoformat())
    return {"event_file": path, "digest": digest, **result}
