"""The campaign plan: the 21-day rule, at most two promotional waves, late campaigns."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from flows.plan import plan_campaign
from promo.domain.event import parse_event
from promo.errors import PlanError
from tests.helpers import EVENT_TEMPLATE

MSK = ZoneInfo("Europe/Moscow")
START = datetime(2026, 12, 10, 19, 0, tzinfo=MSK)


def event(campaign: str = "", starts_at: datetime = START):
    return parse_event(EVENT_TEMPLATE.format(slug="python-meetup-74", starts_at=starts_at.isoformat())
                       + campaign)


def at(day: int, hour: int = 11, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=MSK) if day > 0 else \
        datetime(2026, 11, 30 + day, hour, minute, tzinfo=MSK)


def test_default_plan_three_weeks_ahead():
    plan = plan_campaign(event(), datetime(2026, 11, 19, 12, 0, tzinfo=MSK))
    assert [(w.name, w.status, w.send_at) for w in plan.waves] == [
        ("announce", "scheduled", datetime(2026, 11, 26, 11, 0, tzinfo=MSK)),
        ("last_call", "scheduled", datetime(2026, 12, 7, 11, 0, tzinfo=MSK)),
        ("reminder", "scheduled", datetime(2026, 12, 9, 11, 0, tzinfo=MSK)),
    ]


def test_twenty_one_days_is_counted_to_the_minute():
    # 21 days before at 11:00 is 21 days and 8 hours before a 19:00 start: refused
    with pytest.raises(PlanError, match="more than 21 days before the start"):
        plan_campaign(event("campaign:\n  announce: {days_before: 21}\n"),
                      datetime(2026, 11, 1, tzinfo=MSK))
    ok = event("campaign:\n  announce: {days_before: 21, at: \"19:00\"}\n")
    plan = plan_campaign(ok, datetime(2026, 11, 1, tzinfo=MSK))
    assert plan.wave("announce").send_at == START - timedelta(days=21)


def test_event_in_the_past_is_refused():
    with pytest.raises(PlanError, match="in the past"):
        plan_campaign(event(), START + timedelta(minutes=1))


def test_late_campaign_sends_announce_at_once_when_last_call_is_far():
    now = datetime(2026, 11, 28, 9, 30, tzinfo=MSK)  # announce (26th) passed, last call on the 7th
    plan = plan_campaign(event(), now)
    announce = plan.wave("announce")
    assert announce.status == "late" and announce.send_at == now
    assert "has passed" in announce.note


def test_late_campaign_drops_announce_when_last_call_is_close():
    now = datetime(2026, 12, 6, 9, 0, tzinfo=MSK)  # last call tomorrow at 11:00
    plan = plan_campaign(event(), now)
    announce = plan.wave("announce")
    assert announce.status == "dropped" and announce.send_at is None
    assert "next wave follows in" in announce.note
    assert plan.wave("last_call").status == "scheduled"


def test_very_late_campaign_keeps_only_what_makes_sense():
    now = datetime(2026, 12, 9, 15, 0, tzinfo=MSK)  # the day before, after the reminder time
    plan = plan_campaign(event(), now)
    states = {w.name: w.status for w in plan.waves}
    assert states == {"announce": "dropped", "last_call": "late", "reminder": "late"}
    now = datetime(2026, 12, 10, 6, 0, tzinfo=MSK)  # the day itself, 13 hours before
    plan = plan_campaign(event(), now)
    states = {w.name: w.status for w in plan.waves}
    assert states == {"announce": "dropped", "last_call": "late", "reminder": "dropped"}
    assert "no longer the day before" in plan.wave("reminder").note
    now = datetime(2026, 12, 10, 12, 0, tzinfo=MSK)  # 7 hours before the start
    plan = plan_campaign(event(), now)
    assert plan.wave("last_call").status == "dropped"
    assert all(w.send_at is None or w.send_at < START for w in plan.waves)


def test_announce_must_come_before_the_last_call_on_the_same_day():
    same_day = event('campaign:\n  announce: {days_before: 3, at: "12:00"}\n'
                     '  last_call: {days_before: 3, at: "11:00"}\n')
    with pytest.raises(PlanError, match="must come before the last call"):
        plan_campaign(same_day, datetime(2026, 11, 19, 12, 0, tzinfo=MSK))
