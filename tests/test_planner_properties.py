"""Invariants of the planner over random audiences, events, caps and clocks (hypothesis).

The campaign is simulated with the same plain functions the flows run: plan the waves,
decide each wave in order (each counting what the earlier ones send), and check the
outcome with independent brute-force checks.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_case
from hypothesis import strategies as st
from pydantic import ValidationError

from flows.decide import Recipient, decide_wave
from flows.plan import plan_campaign
from flows.wave import wave_rules
from promo.domain.event import EventSpec
from promo.domain.names import DIRECT_CHANNELS, PROMOTIONAL_WAVES
from promo.errors import PlanError
from promo.settings import Settings

ZONES = ["Europe/Moscow", "Asia/Vladivostok", "America/New_York", "Europe/Kaliningrad",
         "Asia/Kolkata", "Pacific/Auckland"]
BLOCKS = [None, None, None, "no consent", "opted out", "no address", "unreachable"]


def max_in_any_window(times: list[datetime], window: timedelta) -> int:
    """Brute force: the most messages in any half-open window [t, t + window)."""
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


@st.composite
def windows(draw):
    start = draw(st.integers(0, 14))
    end = draw(st.integers(start + 1, 24))
    return f"{start:02d}:00-{end:02d}:00" if end < 24 else f"{start:02d}:00-23:59"


@st.composite
def scenarios(draw):
    zone = draw(st.sampled_from(ZONES))
    start_day = datetime(2027, 1, 1) + timedelta(days=draw(st.integers(0, 365)))
    starts_at = datetime.combine(start_day.date(), time(draw(st.integers(8, 21)), 0),
                                 tzinfo=ZoneInfo(zone))
    channels = st.lists(st.sampled_from(DIRECT_CHANNELS), min_size=1, max_size=5, unique=True)
    announce_days = draw(st.integers(0, 25))
    last_days = draw(st.integers(0, min(announce_days, 10)))
    campaign = {
        "announce": {"days_before": announce_days, "at": f"{draw(st.integers(0, 23)):02d}:00",
                     "channels": draw(channels), "mode": draw(st.sampled_from(["fallback", "all"]))},
        "last_call": {"days_before": last_days, "at": f"{draw(st.integers(0, 23)):02d}:30",
                      "channels": draw(channels), "mode": "fallback"},
        "reminder": {"at": f"{draw(st.integers(0, 23)):02d}:00", "channels": draw(channels),
                     "mode": "all"},
    }
    for name in ("announce", "last_call"):
        if draw(st.booleans()) and draw(st.integers(0, 4)) == 0:
            campaign[name] = None
    caps = {c: f"{draw(st.integers(1, 3))}/{draw(st.integers(1, 30))}d" for c in DIRECT_CHANNELS}
    caps["direct"] = f"{draw(st.integers(1, 5))}/{draw(st.integers(1, 14))}d"
    quiet = {"sms": draw(windows()), "voice": draw(windows())}
    now = starts_at - timedelta(hours=draw(st.integers(1, 30 * 24)))
    n = draw(st.integers(1, 25))
    recipients = []
    for i in range(1, n + 1):
        blocked = {c: draw(st.sampled_from(BLOCKS)) for c in DIRECT_CHANNELS}
        recipients.append(Recipient(i, draw(st.sampled_from([None, *ZONES])), blocked,
                                    draw(st.integers(0, 3)) == 0))
    history_offsets = draw(st.lists(
        st.tuples(st.integers(1, n), st.sampled_from(DIRECT_CHANNELS), st.integers(1, 40 * 24)),
        max_size=30))
    reminder_counts = draw(st.booleans())
    return {"zone": zone, "starts_at": starts_at, "campaign": campaign, "caps": caps, "quiet": quiet,
                "now": now, "recipients": recipients, "history": history_offsets,
                "reminder_counts": reminder_counts}


def build_event(s) -> EventSpec:
    return EventSpec.model_validate({
        "slug": "prop-event", "title": "Property meetup", "starts_at": s["starts_at"],
        "timezone": s["zone"], "venue": "Somewhere", "registration_url": "https://example.org/r",
        "topic": "python", "language": "ru", "campaign": s["campaign"],
    })


def initial_history(s, settings_: Settings) -> dict[int, dict[str, list[datetime]]]:
    """Random past messages that themselves respect the caps."""
    caps = settings_.cap_rules()
    history: dict[int, dict[str, list[datetime]]] = {}
    for cid, channel, hours in s["history"]:
        t = s["now"] - timedelta(hours=hours)
        h = history.setdefault(cid, {})
        trial_c = h.get(channel, []) + [t]
        trial_d = h.get("direct", []) + [t]
        if (max_in_any_window(trial_c, caps[channel].window) <= caps[channel].limit
                and max_in_any_window(trial_d, caps["direct"].window) <= caps["direct"].limit):
            h[channel] = sorted(trial_c)
            h["direct"] = sorted(trial_d)
    return history


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_campaign_invariants(s):
    try:
        event = build_event(s)
    except ValidationError as exc:
        # refused only for the rules: too early a promotional wave
        assert "promotion starts no earlier than 21 days" in str(exc)
        assert (s["campaign"]["announce"] or {}).get("days_before", 0) > 21
        note_case("refused: more than 21 days")
        return
    settings_ = Settings(caps=s["caps"], quiet_hours=s["quiet"],
                         reminder_counts_against_caps=s["reminder_counts"])
    try:
        plan = plan_campaign(event, s["now"])
    except PlanError as exc:
        waves = event.campaign.waves()
        if "must come before the last call" in str(exc):
            assert event.wave_time(waves["announce"]) >= event.wave_time(waves["last_call"])
            note_case("refused: waves out of order")
            return
        assert "more than 21 days" in str(exc) or "not before the start" in str(exc)
        limit = event.starts_at - timedelta(days=21)
        assert any(event.wave_time(w) < limit or event.wave_time(w) >= event.starts_at
                   for n, w in waves.items() if n in PROMOTIONAL_WAVES)
        note_case("refused by the plan")
        return
    # each promotional wave of the event file once, in order, at increasing times: a wave
    # planned twice (or one the event does not have) would send a third promotion
    promotional = [w for w in plan.waves if w.name in PROMOTIONAL_WAVES]
    configured = [n for n in event.campaign.waves() if n in PROMOTIONAL_WAVES]
    assert [w.name for w in promotional] == configured
    times = [w.scheduled_at for w in promotional]
    assert times == sorted(times) and len(set(times)) == len(times)

    history = initial_history(s, settings_)
    start_state = {cid: {k: list(v) for k, v in h.items()} for cid, h in history.items()}
    sends: list[tuple[int, str, str, datetime]] = []
    for w in plan.active:
        at = max(w.send_at, s["now"])
        rules = wave_rules(event, plan, w.name, at, settings_)
        audience = [r for r in s["recipients"] if r.registered or rules.promotional]
        for d in decide_wave(rules, audience, history):
            if d.status in ("planned", "deferred") and d.contact_id is not None:
                sends.append((d.contact_id, w.name, d.channel, d.send_at))

    note_case(f"messages sent: {'some' if sends else 'none'}")
    caps = settings_.cap_rules()
    windows_ = settings_.send_windows()
    by_id = {r.id: r for r in s["recipients"]}
    per_wave: dict[tuple[int, str], int] = {}
    for cid, wave, channel, t in sends:
        r = by_id[cid]
        assert t < event.starts_at, "nothing after the start"
        assert t >= s["now"] - timedelta(seconds=1), "nothing in the past"
        assert r.blocked[channel] is None, "only on a channel that can carry it"
        if wave in PROMOTIONAL_WAVES:
            assert t >= event.starts_at - timedelta(days=21), "no promotion before 21 days"
            assert not r.registered, "no promotion to registrants"
        else:
            assert r.registered, "the reminder goes to registrants only"
        if channel in windows_:  # nothing at night for SMS and voice
            local = t.astimezone(ZoneInfo(r.timezone or event.timezone)).time()
            assert windows_[channel].start <= local < windows_[channel].end, (channel, local)
        per_wave[(cid, wave)] = per_wave.get((cid, wave), 0) + 1
    for (cid, wave), count in per_wave.items():
        mode = event.campaign.waves()[wave].mode
        if mode == "fallback":
            assert count == 1, "a fallback wave reaches a contact once"

    counted = [x for x in sends if x[1] != "reminder" or s["reminder_counts"]]
    for cid in by_id:
        before = start_state.get(cid, {})
        for channel in DIRECT_CHANNELS:
            times = before.get(channel, []) + [t for c, _, ch, t in counted if c == cid and ch == channel]
            assert max_in_any_window(times, caps[channel].window) <= caps[channel].limit, \
                (cid, channel, sorted(times))
        times = before.get("direct", []) + [t for c, _, _, t in counted if c == cid]
        assert max_in_any_window(times, caps["direct"].window) <= caps["direct"].limit


def test_lookahead_keeps_the_reminder_slot_when_another_channel_can_carry_the_wave():
    """SMS 1 per 7 days: a last call by SMS two days before would cap the registrant-to-be's
    SMS reminder; the wave goes by email instead, and says why SMS was passed over."""
    start = datetime(2027, 3, 10, 19, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    event = EventSpec.model_validate({
        "slug": "look-ahead", "title": "T", "starts_at": start, "timezone": "Europe/Moscow",
        "venue": "V", "registration_url": "https://example.org/r", "topic": "python",
        "campaign": {"announce": None,
                     "last_call": {"days_before": 2, "channels": ["sms", "email"]},
                     "reminder": {"channels": ["sms"]}},
    })
    settings_ = Settings()
    plan = plan_campaign(event, start - timedelta(days=5))
    rules = wave_rules(event, plan, "last_call", plan.wave("last_call").send_at, settings_)
    both = Recipient(1, None, {"sms": None, "email": None})
    sms_only = Recipient(2, None, {"sms": None, "email": "no consent"})
    decisions = decide_wave(rules, [both, sms_only], {})
    got = {(d.contact_id, d.channel): (d.status, d.reason) for d in decisions}
    assert got[(1, "email")] == ("planned", None)
    assert got[(1, "sms")] == ("capped", "kept for the reminder (sms: 1 per 7 days)")
    # with no other channel, the wave still goes by SMS
    assert got[(2, "sms")] == ("planned", None)
    # and when the reminder does not count, nothing is held back
    rules = wave_rules(event, plan, "last_call", plan.wave("last_call").send_at,
                       Settings(reminder_counts_against_caps=False))
    decisions = decide_wave(rules, [both], {})
    assert [(d.channel, d.status) for d in decisions] == [("sms", "planned")]


def test_quiet_hours_defer_and_drop():
    start = datetime(2027, 3, 10, 19, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    event = EventSpec.model_validate({
        "slug": "quiet", "title": "T", "starts_at": start, "timezone": "Europe/Moscow",
        "venue": "V", "registration_url": "https://example.org/r", "topic": "python",
        "campaign": {"announce": None, "last_call": {"days_before": 1, "at": "07:00",
                                                     "channels": ["sms"]},
                     "reminder": None},
    })
    plan = plan_campaign(event, start - timedelta(days=3))
    rules = wave_rules(event, plan, "last_call", plan.wave("last_call").send_at, Settings())
    moscow = Recipient(1, "Europe/Moscow", {"sms": None})
    new_york = Recipient(2, "America/New_York", {"sms": None})  # 23:00 the evening before
    decisions = {d.contact_id: d for d in decide_wave(rules, [moscow, new_york], {})}
    assert decisions[1].status == "deferred"
    assert decisions[1].send_at == datetime(2027, 3, 9, 9, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    assert decisions[1].reason == "quiet hours (09:00-21:00)"
    # New York's 09:00 is 17:00 in Moscow, before the 19:00 start: held until then
    assert decisions[2].status == "deferred"
    assert decisions[2].send_at.astimezone(ZoneInfo("America/New_York")).hour == 9
    # at 12:00 in Moscow it is 23:00 in Honolulu, whose 09:00 comes after the 19:00 start
    late = Recipient(3, "Pacific/Honolulu", {"sms": None})
    rules.send_at = datetime(2027, 3, 10, 12, 0, tzinfo=ZoneInfo("Europe/Moscow"))
    (d,) = decide_wave(rules, [late], {})
    assert d.status == "dropped" and "after the start" in d.reason


@pytest.mark.parametrize("mode, expected", [("fallback", {"email"}), ("all", {"email", "vk"})])
def test_modes(mode, expected):
    start = datetime(2027, 3, 10, 19, 0, tzinfo=UTC)
    event = EventSpec.model_validate({
        "slug": "modes", "title": "T", "starts_at": start, "timezone": "UTC", "venue": "V",
        "registration_url": "https://example.org/r", "topic": "python",
        "campaign": {"announce": {"days_before": 7, "channels": ["email", "vk"], "mode": mode}},
    })
    plan = plan_campaign(event, start - timedelta(days=10))
    rules = wave_rules(event, plan, "announce", plan.wave("announce").send_at, Settings())
    decisions = decide_wave(rules, [Recipient(1, None, {"email": None, "vk": None})], {})
    assert {d.channel for d in decisions if d.status == "planned"} == expected
    registered = decide_wave(rules, [Recipient(2, None, {"email": None}, registered=True)], {})
    assert [(d.status, d.reason) for d in registered] == [("suppressed", "registered")]
