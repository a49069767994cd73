"""Bad event files get a clear error naming the file, line and field, quickly; and any error
of a command is one message, with the traceback only when asked for."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promo.domain.event import parse_event
from promo.errors import EventError
from tests.bad_input import run_promo, within
from tests.helpers import EVENT_TEMPLATE, write_event

STARTS = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
VALID = EVENT_TEMPLATE.format(slug="python-meetup-74", starts_at=STARTS.isoformat())


def problems(text: str) -> str:
    with within(20), pytest.raises(EventError) as caught:
        parse_event(text, "event.yaml")
    return str(caught.value)


@pytest.mark.parametrize(("change", "where"), [
    (("starts_at: " + STARTS.isoformat(), "starts_at: 0"), "line 3: starts_at"),
    (("starts_at: " + STARTS.isoformat(), "starts_at: true"), "line 3: starts_at"),
    (("language: ru", "language: ru\ncampaign:\n  announce: {at: true}"),
     "line 10: campaign.announce.at"),
    (("language: ru", "language: ru\ncampaign:\n  announce: {days_before: true}"),
     "line 10: campaign.announce.days_before"),
    (("language: ru", "language: ru\ncancelled: 'yes'"), "line 9: cancelled"),
])
def test_values_are_not_coerced(change: tuple[str, str], where: str) -> None:
    assert where in problems(VALID.replace(*change))


def test_a_time_zone_name_too_long_for_a_file_name_is_an_error() -> None:
    assert "line 4: timezone: " in problems(VALID.replace("Europe/Moscow", "Europe/" + "x" * 300))


def test_a_start_out_of_the_calendar_s_range_is_an_error() -> None:
    text = VALID.replace(STARTS.isoformat(), "'9999-12-31T23:59:59+14:00'")
    assert "line 3: starts_at: the year 9999 is out of range" in problems(text)


def test_a_yaml_time_out_of_range_is_an_error() -> None:
    # YAML reads an unquoted 2026-13-45T99:00:00 as a time itself (found by bench/bad_inputs.py)
    text = VALID.replace(STARTS.isoformat(), "2026-13-45T99:00:00")
    assert "not valid YAML: a value cannot be read" in problems(text)


def billion_laughs(levels: int = 9) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_file_that_fails_validation_ends_at_once() -> None:
    # the unknown fields l0..l9 fail validation: the error's line lookup must not expand them
    assert "YAML bomb" in problems(VALID + billion_laughs())


def test_a_small_alias_is_still_fine() -> None:
    text = VALID.replace("language: ru", "language: ru\ncampaign:\n  announce: &a "
                         "{days_before: 14, channels: [email]}\n  last_call: null")
    assert parse_event(text).campaign.announce.days_before == 14


@pytest.mark.parametrize("text", ["x: " + "[" * 5000 + "]" * 5000,
                                  "".join("  " * i + f"k{i}:\n" for i in range(3000))])
def test_deep_nesting_is_an_error_not_a_recursion_error(text: str) -> None:
    assert "nested too deep" in problems(VALID + text + "\n")


def test_events_check_refuses_an_event_that_has_started(store: Path) -> None:
    path = write_event(store, datetime(2020, 3, 1, 19, 0, tzinfo=UTC))
    result = run_promo("events", "check", str(path))
    assert result.code == 2
    assert result.err.startswith(f"error: {path}: ") and "in the past" in result.err
    later = run_promo("events", "check", str(path), "--now", "2020-02-20T10:00:00+03:00")
    assert later.code == 0 and f"{path}: ok" in later.out


def test_plan_of_an_event_at_the_end_of_time_is_a_message(store: Path) -> None:
    path = store / "far.yaml"
    path.write_text(VALID.replace(STARTS.isoformat(), "'9999-12-31T23:59:59+14:00'"))
    result = run_promo("plan", str(path))
    assert result.code == 2, result
    assert f"{path}: invalid event" in result.err and "starts_at" in result.err


def test_an_unexpected_error_is_one_line_and_the_traceback_only_with_debug(
        store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import promo.domain.event

    def broken(path: object) -> None:
        raise KeyError("something nobody foresaw")

    monkeypatch.setattr(promo.domain.event, "load_event", broken)
    path = write_event(store, STARTS)
    result = run_promo("events", "check", str(path))
    assert result.code == 1
    assert result.err.startswith("error: unexpected KeyError: 'something nobody foresaw'")
    assert "--debug" in result.err and "Traceback" not in result.err
    for how in ({"args": ("--debug",), "env": {}}, {"args": (), "env": {"PROMO_DEBUG": "1"}}):
        with pytest.raises(KeyError):
            run_promo("events", "check", str(path), *how["args"], env=how["env"])


SCALARS = (st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats()
           | st.text(max_size=30) | st.sampled_from(["11:00", "25:99", "Europe/Moscow", "∞",
                                                      "2020-01-01T00:00:00+00:00", "*a", "&a"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=8)
FIELDS = ["slug", "title", "starts_at", "ends_at", "timezone", "venue", "url",
          "registration_url", "topic", "language", "templates", "texts", "campaign",
          "cancelled", "campaign.announce", "campaign.announce.days_before",
          "campaign.announce.at", "campaign.announce.channels", "campaign.reminder.mode",
          "texts.announce.sms.ru", "unknown"]


def with_value(path: str, value: object) -> dict:
    data = yaml.safe_load(VALID)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_any_value_in_any_field_is_accepted_or_named(field: str, value: object) -> None:
    text = yaml.safe_dump(with_value(field, value), allow_unicode=True)
    with within(10):
        try:
            parse_event(text, "event.yaml")
        except EventError as exc:
            assert exc.problems and all(p.strip() for p in exc.problems)
            assert str(exc).startswith("event.yaml: invalid event")


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=300) | st.builds(
    lambda head, cut, tail: head[:cut] + tail, st.just(VALID), st.integers(0, len(VALID)),
    st.text(alphabet="&*[]{}:-|>!%@`'\"\n #", max_size=40)))
def test_any_text_is_an_event_or_an_error(text: str) -> None:
    with within(10):
        try:
            parse_event(text, "event.yaml")
        except EventError as exc:
            assert exc.problems


def test_json_is_yaml_too() -> None:
    # a generated event (from another tool) in JSON: one more way in, read the same way
    data = yaml.safe_load(VALID)
    data["starts_at"] = STARTS.isoformat()
    assert parse_event(json.dumps(data)).slug == "python-meetup-74"
