"""The demo's series: the meetups before the demo's event, with their registrations (how each
came: UTM tags, a short link, or nothing known) and who came (walk-ins too), so that
`make demo` can show the series report, its picture and the forecast for the event to come.

The people behave as in the forecast's backtest (bench/forecast_backtest.py): each has a
propensity to come and a taste for the series; late registrants come more often,
first-timers less; every event has its own luck; the series grows.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from audiences.synthetic import SyntheticContact
from flows.store import save_event
from promo.db.models import Event, Registration
from promo.domain.event import EventSpec

PAST_MEETUPS = (68, 69, 70, 71, 72)  # #73 is the demo's previous meetup, #74 its event
WEEKS_APART = 4
SHARES = {"email": 0.45, "vk": 0.25, "telegram": 0.2, "sms": 0.1}


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _spec(number: int, starts_at: datetime) -> EventSpec:
    return EventSpec.model_validate({
        "slug": f"python-meetup-{number}", "title": f"Moscow Python Meetup #{number}",
        "starts_at": starts_at.isoformat(), "timezone": "Europe/Moscow",
        "venue": "Точка кипения, ул. Малая Андроньевская, 15",
        "registration_url": f"https://example.org/python-meetup-{number}",
        "topic": "python", "language": "ru"})


def add_history(session: Session, audience: list[SyntheticContact], previous: Event,
                seed: int = 68) -> list[str]:
    """Store the past meetups of the series (`previous` is the last of them) with their
    registrations and attendance; returns their slugs, oldest first."""
    rng = random.Random(seed)
    followers = [c.id for c in audience if "python" in c.topics]
    rng.shuffle(followers)
    # people find the series over time: a growing share of the followers knows it
    people = {cid: (rng.betavariate(1.2, 2.4), rng.betavariate(1.5, 6.0)) for cid in followers}
    events: list[Event] = []
    for i, number in enumerate(PAST_MEETUPS):
        weeks = WEEKS_APART * (len(PAST_MEETUPS) - i)
        starts_at = previous.starts_at - timedelta(weeks=weeks)
        events.append(save_event(session, _spec(number, starts_at)))
    events.append(previous)
    seen: set[int] = set()
    for i, event in enumerate(events):
        known = followers[: int(len(followers) * (0.45 + 0.1 * i))]
        luck = rng.gauss(0, 0.15)
        rows: list[dict[str, Any]] = []
        registered: set[int] = set()
        for cid in known:
            propensity, taste = people[cid]
            if rng.random() >= min(0.9, taste * (0.6 + propensity)):
                continue
            late = rng.random() < 0.3
            lead = rng.uniform(0.1, 3.0) if late else rng.uniform(3.0, 14.0)
            chance = _sigmoid(math.log(propensity / (1 - propensity)) + (0.5 if late else -0.15)
                              - (0.5 if cid not in seen else 0.0) + luck)
            wave = "last_call" if late else "announce"
            channel = rng.choices(list(SHARES), weights=list(SHARES.values()))[0]
            how = rng.random()
            tags: dict[str, Any] = {}
            if how < 0.55:  # the platform passed the tags of the link on
                tags = {"utm_source": channel, "utm_medium": "promotion",
                        "utm_campaign": event.slug, "utm_content": wave}
            elif how < 0.65:
                tags = {"short_link": f"http://127.0.0.1:8000/go/{event.slug}/sms/{wave}"}
            elif how < 0.72:  # a partner's post
                tags = {"utm_source": "partner", "utm_campaign": "moscow-it-digest"}
            rows.append({"event_id": event.id, "contact_id": cid,
                         "registered_at": event.starts_at - timedelta(days=lead),
                         "attended": rng.random() < chance, "walk_in": False,
                         "source": "demo history", **tags})
            registered.add(cid)
        others = [cid for cid in known if cid not in registered]
        for cid in rng.sample(others, k=min(len(others), rng.randint(2, 6))):
            rows.append({"event_id": event.id, "contact_id": cid,
                         "registered_at": event.starts_at, "attended": True, "walk_in": True,
                         "source": "demo check-in"})
        keys = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "short_link")
        for r in rows:
            for k in keys:
                r.setdefault(k, None)
        session.execute(insert(Registration), rows)
        seen |= {r["contact_id"] for r in rows}
    session.flush()
    return [e.slug for e in events]


def show(folder: Path, event_slug: str, console: Any) -> None:
    """Print the series report and the forecast for the demo's event as of its reminder, and
    draw the picture."""
    from promo.cli.report import show as show_reports
    from promo.db import session_scope
    from promo.report.plot import picture
    from promo.report.series import series_of, series_report
    from promo.settings import get_settings

    settings = get_settings()
    with session_scope() as s:
        row = s.scalar(select(Event).where(Event.slug == event_slug))
        # as of the reminder, the day before: the registrations are (almost) all in
        now = row.starts_at - timedelta(hours=20)
        series = series_of(row)
        data = series_report(s, series, now, settings)
        current = next(e for e in data["events"] if e["event"] == event_slug)
        png = picture(s, row, current, data["events"])
        s.rollback()
    path = folder / "series.png"
    path.write_bytes(png)
    console.print()
    show_reports(data["events"], series, data["trend"])
    show_reports([current], None)
    console.print(f"picture: {path}  (promo report {event_slug} --plot FILE.png; "
                  f"promo report --series {series} --json)", highlight=False)
