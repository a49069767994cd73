"""Event files: the contract's shape loads; every mistake is named with its line and field."""

from __future__ import annotations

from datetime import time

import pytest

from promo.domain.event import load_event, parse_event
from promo.errors import EventError

CONTRACT = """\
slug: python-meetup-74
title: "Moscow Python Meetup #74"
starts_at: 2026-12-10T19:00:00+03:00
timezone: Europe/Moscow
venue: "Точка кипения, ул. Малая Андроньевская, 15"   # or url: for an online event
registration_url: https://example.org/python-meetup-74
topic: python
language: ru
campaign:                      # optional; each wave optional; `announce: null` skips a wave
  announce:  {days_before: 14, at: "11:00", channels: [email, vk, telegram, voice], mode: fallback}
  last_call: {days_before: 3,  at: "11:00", channels: [email, vk, telegram, sms],   mode: fallback}
  reminder:  {at: "11:00", channels: [email, sms, vk, telegram], mode: all}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(EventError) as info:
        parse_event(text, "events/meetup.yaml")
    assert str(info.value).startswith("events/meetup.yaml: invalid event")
    return info.value.problems


def test_the_contract_shape_loads():
    event = parse_event(CONTRACT)
    waves = event.campaign.waves()
    assert list(waves) == ["announce", "last_call", "reminder"]
    assert waves["announce"].channels == ["email", "vk", "telegram", "voice"]
    assert waves["reminder"].mode == "all" and waves["reminder"].days_before == 1
    last_call = event.wave_time(waves["last_call"])
    assert last_call.isoformat() == "2026-12-07T11:00:00+03:00"


def test_missing_campaign_gets_the_defaults_and_null_skips_a_wave():
    base = CONTRACT.split("campaign:")[0]
    event = parse_event(base)
    assert [(n, w.days_before, w.mode) for n, w in event.campaign.waves().items()] == [
        ("announce", 14, "fallback"), ("last_call", 3, "fallback"), ("reminder", 1, "all")]
    event = parse_event(base + "campaign:\n  announce: null\n  last_call: {days_before: 5}\n")
    waves = event.campaign.waves()
    assert list(waves) == ["last_call", "reminder"]
    assert waves["last_call"].days_before == 5 and waves["last_call"].at == time(11, 0)


def test_unquoted_time_of_day_is_read_as_a_time():
    event = parse_event(CONTRACT.replace('at: "11:00", channels: [email, vk, telegram, voice]',
                                         "at: 10:30, channels: [email]"))
    assert event.campaign.announce.at == time(10, 30)


@pytest.mark.parametrize("change, expected", [
    (("Europe/Moscow", "Mars/Olympus"), "line 4: timezone: 'Mars/Olympus' is not an IANA time zone"),
    (("2026-12-10T19:00:00+03:00", "2026-12-10T19:00:00"), "line 3: starts_at: needs a UTC offset"),
    (("days_before: 14", "days_before: 30"), "announce.days_before is 30: promotion starts no earlier than 21 days"),
    (("channels: [email, vk, telegram, voice]", "channels: [email, fax]"), "line 10: campaign.announce.channels.1: Input should be"),
    (("mode: fallback}", "mode: everyone}"), "campaign.announce.mode: Input should be 'fallback' or 'all'"),
    (("reminder:  {at", "second_call: {at"), "unknown wave 'second_call': a campaign has at most two promotional waves"),
    (("reminder:  {at: \"11:00\"", "reminder:  {days_before: 2, at: \"11:00\""), "reminder.days_before must be 1"),
    (("https://example.org/python-meetup-74", "not a url"), "line 6: registration_url:"),
    (("slug: python-meetup-74", "slug: Python Meetup"), "line 1: slug: String should match pattern"),
    (("language: ru", "language: fr"), "line 8: language: Input should be 'ru' or 'en'"),
    (("topic: python\n", "topic: python\ncolour: blue\n"), "line 8: colour: is not a known field"),
    (('at: "11:00", channels: [email, vk, telegram, voice]', 'at: "noon", channels: [email]'), "campaign.announce.at: must be a time of day"),
])
def test_each_mistake_is_named(change, expected):
    old, new = change
    assert old in CONTRACT
    found = problems(CONTRACT.replace(old, new, 1))
    assert any(expected in p for p in found), found


def test_all_problems_are_reported_at_once():
    text = CONTRACT.replace("Europe/Moscow", "Nowhere/City").replace("language: ru", "language: fr")
    found = problems(text.replace("topic: python\n", ""))
    assert len(found) == 3
    assert {p.split(": ")[1] for p in found} == {"timezone", "topic", "language"}


def test_venue_or_url_is_required():
    found = problems(CONTRACT.replace('venue: "Точка кипения, ул. Малая Андроньевская, 15"   # or url: for an online event\n', ""))
    assert any("give a venue" in p for p in found)
    online = parse_event(CONTRACT.replace('venue: "Точка кипения, ул. Малая Андроньевская, 15"', "url: https://youtube.com/live/x"))
    assert str(online.url) == "https://youtube.com/live/x"


def test_broken_yaml_and_missing_file(tmp_path):
    assert problems("slug: [unclosed\n")[0].startswith("line 2: not valid YAML")
    with pytest.raises(EventError, match="no such file"):
        load_event(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(EventError, match="must be a mapping"):
        load_event(tmp_path / "list.yaml")


def test_wave_defaults_come_from_the_settings_and_the_file_overrides_them(monkeypatch):
    from promo.settings import reset_settings

    monkeypatch.setenv("PROMO_WAVES", '{"announce": {"days_before": 10, "at": "12:30"}, '
                                      '"last_call": {"channels": ["email", "sms"]}}')
    reset_settings()
    try:
        base = CONTRACT.split("campaign:")[0]
        waves = parse_event(base).campaign.waves()
        assert (waves["announce"].days_before, waves["announce"].at) == (10, time(12, 30))
        assert waves["last_call"].channels == ["email", "sms"] and waves["last_call"].days_before == 3
        own = parse_event(base + "campaign:\n  announce: {days_before: 7}\n").campaign.announce
        assert (own.days_before, own.at) == (7, time(12, 30))
    finally:
        monkeypatch.delenv("PROMO_WAVES")
        reset_settings()
