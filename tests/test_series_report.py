"""`promo report` on a hand-built series (100/30, 110/27, 130/40 and one to come): the
numbers, the attribution of registrations (UTM, short link, last message, none), opt-outs
and money per wave, the JSON and CSV contracts and the picture."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from audiences.importer import run_import
from flows.store import find_event
from promo.cli import app
from promo.db import session_scope
from promo.db.models import Consent, Contact, Message, Registration
from promo.report.attribution import attribute
from tests.helpers import write_event

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=MSK)
SERIES = "moscow-python"
PAST = {  # slug: (start, registrants, those who came)
    "ms-1": (datetime(2026, 9, 10, 19, 0, tzinfo=MSK), range(100), range(30)),
    "ms-2": (datetime(2026, 10, 8, 19, 0, tzinfo=MSK), range(20, 130), range(20, 47)),
    "ms-3": (datetime(2026, 11, 5, 19, 0, tzinfo=MSK), range(100, 230), range(100, 140)),
}
NEXT = "ms-4"
NEXT_START = datetime(2026, 12, 10, 19, 0, tzinfo=MSK)
ANNOUNCE_AT = datetime(2026, 11, 26, 11, 0, tzinfo=MSK)
LAST_CALL_AT = datetime(2026, 12, 7, 11, 0, tzinfo=MSK)


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def add_event(folder: Path, slug: str, start: datetime) -> None:
    path = write_event(folder, start, slug=slug, extra=f"series: {SERIES}\n")
    out = cli("events", "add", str(path), "--now", NOW.isoformat()).stdout
    if start < NOW:
        assert "past event of the series moscow-python" in out and "nothing is planned" in out


@pytest.fixture
def series(store: Path) -> dict[str, int]:
    return build_series(store)


def build_series(store: Path) -> dict[str, int]:
    """The series in the store; returns contact ids by person number."""
    for slug, (start, _, _) in PAST.items():
        add_event(store, slug, start)
    add_event(store, NEXT, NEXT_START)
    with session_scope() as s:
        s.execute(insert(Contact), [{"name": f"P{i}", "email": f"p{i}@example.org"}
                                    for i in range(300)])
        ids = {int(c.name[1:]): c.id for c in s.query(Contact)}
        for slug, (start, registered, came) in PAST.items():
            event = find_event(s, slug)
            s.execute(insert(Registration), [
                {"event_id": event.id, "contact_id": ids[i],
                 "registered_at": start - timedelta(days=5), "attended": i in came,
                 "walk_in": False} for i in registered])
        event = find_event(s, NEXT)
        # announce on VK to persons 0-29, the last call by SMS to 40-49
        rows = [(i, "announce", "vk", ANNOUNCE_AT) for i in range(30)]
        rows += [(i, "last_call", "sms", LAST_CALL_AT) for i in range(40, 50)]
        s.execute(insert(Message), [
            {"key": f"{NEXT}/{w}/{ids[i]}/{c}", "event_id": event.id, "wave": w,
             "contact_id": ids[i], "channel": c, "status": "sent", "send_at": at,
             "sent_at": at, "decided_at": at, "counts_for_caps": True, "attempts": 1,
             "updated_at": at} for i, w, c, at in rows])
        # person 0 withdrew VK consent the day after the announce
        s.add(Consent(contact_id=ids[0], channel="vk", granted_at=ANNOUNCE_AT - timedelta(days=90),
                      withdrawn_at=ANNOUNCE_AT + timedelta(days=1), withdrawn_source="vk deny"))
    return ids


def import_next(store: Path) -> None:
    """The platform's export for the event to come: tags, short links, or nothing."""
    lines = ["email,registered_at,utm_source,utm_medium,utm_campaign,utm_content,short_link"]
    late = "2026-11-28 10:00"
    for i in range(10):  # came by the e-mail's link: the tags say so
        lines.append(f"p{i + 100}@example.org,{late},email,promotion,{NEXT},announce,")
    for i in range(5):  # by the SMS short link, the platform passes the referrer
        lines.append(f"p{i + 110}@example.org,{late},,,,,https://x.org/go/{NEXT}/sms/last_call")
    for i in range(3):  # a partner's newsletter: not ours
        lines.append(f"p{i + 120}@example.org,{late},partner,newsletter,digest,,")
    for i in range(20):  # got the VK announce, registered after it, no tags
        lines.append(f"p{i}@example.org,{late},,,,,")
    for i in range(2):  # nothing known
        lines.append(f"p{i + 200}@example.org,{late},,,,,")
    path = store / "next.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with session_scope() as s:
        report = run_import(s, path, event=find_event(s, NEXT), now=NOW)
    assert report.registrations_new == 40 and not report.problems


def test_past_events_report_their_numbers(series: dict[str, int]) -> None:
    data = json.loads(cli("report", "--series", SERIES, "--json", "--now", NOW.isoformat()).stdout)
    assert data["series"] == SERIES
    assert [e["event"] for e in data["events"]] == ["ms-1", "ms-2", "ms-3", "ms-4"]
    got = [(e["registered"], e["attended"], e["show_up_rate"]) for e in data["events"]]
    assert got == [(100, 30, 0.3), (110, 27, 0.245), (130, 40, 0.308), (0, None, None)]
    ms2 = data["events"][1]
    # ms-2's attendees 20-46: 20-29 had come to ms-1
    assert (ms2["returning_attendees"], ms2["new_attendees"]) == (10, 17)
    assert all(e["forecast"] is None for e in data["events"][:3])
    assert data["events"][0]["registrations_by"] == [
        {"wave": None, "channel": None, "registrations": 100, "how": {"none": 100}}]
    assert all(e["series"] == SERIES for e in data["events"])
    trend = data["trend"]
    assert trend["past_events"] == 3 and trend["events_with_attendance"] == 3
    assert trend["registered_per_event"] == 15.0  # 100, 110, 130
    assert trend["show_up_rate_per_event"] == pytest.approx((0.308 - 0.3) / 2, abs=1e-4)
    assert trend["last_show_up_rate_vs_before"] == pytest.approx(0.308 - (0.3 + 0.245) / 2,
                                                                 abs=1e-4)
    text = cli("report", "--series", SERIES, "--now", NOW.isoformat()).stdout
    assert "registered +15.0 per event" in text


def test_the_event_to_come_attribution_money_opt_outs_and_forecast(series: dict[str, int],
                                                                   store: Path) -> None:
    import_next(store)
    data = json.loads(cli("report", NEXT, "--json", "--now", NOW.isoformat()).stdout)
    assert data["event"] == NEXT and data["series"] == SERIES
    assert data["registered"] == 40
    assert data["attended"] is None and data["show_up_rate"] is None
    by = {(r["wave"], r["channel"]): r["registrations"] for r in data["registrations_by"]}
    assert by == {("announce", "email"): 10, ("last_call", "sms"): 5, ("announce", "vk"): 20,
                  (None, None): 5}
    how = {(r["wave"], r["channel"]): r["how"] for r in data["registrations_by"]}
    assert how[("announce", "email")] == {"utm": 10}
    assert how[("last_call", "sms")] == {"short_link": 5}
    assert how[("announce", "vk")] == {"last_message": 20}
    assert how[(None, None)] == {"none": 2, "other_link": 3}
    waves = {(w["wave"], w["channel"]): w for w in data["waves"]}
    assert waves[("announce", "vk")]["reached"] == 30
    assert waves[("announce", "vk")]["opt_outs"] == 1
    assert waves[("last_call", "sms")]["cost"] == pytest.approx(10 * 0.05)
    assert data["cost"]["total"] == pytest.approx(0.5)
    f = data["forecast"]
    assert set(f) >= {"expected", "low", "high"}
    assert f["basis"] == "history" and f["events_used"] == 3
    assert 0 <= f["low"] <= f["expected"] <= f["high"] <= 40
    # the 20 VK registrants (persons 0-19) came to ms-1 (0-29) and partly to ms-2: their
    # record lifts the forecast above the series' plain rate
    assert f["expected"] > round(0.29 * 40)
    # after the start: no forecast
    later = json.loads(cli("report", NEXT, "--json", "--now",
                           (NEXT_START + timedelta(minutes=1)).isoformat()).stdout)
    assert later["forecast"] is None


@pytest.mark.postgres
def test_the_same_report_on_postgres(pg_store: str, tmp_path: Path) -> None:
    build_series(tmp_path)
    import_next(tmp_path)
    data = json.loads(cli("report", "--series", SERIES, "--json", "--now", NOW.isoformat()).stdout)
    got = [(e["registered"], e["attended"], e["show_up_rate"]) for e in data["events"]]
    assert got == [(100, 30, 0.3), (110, 27, 0.245), (130, 40, 0.308), (40, None, None)]
    upcoming = data["events"][-1]
    by = {(r["wave"], r["channel"]): r["registrations"] for r in upcoming["registrations_by"]}
    assert by == {("announce", "email"): 10, ("last_call", "sms"): 5, ("announce", "vk"): 20,
                  (None, None): 5}
    waves = {(w["wave"], w["channel"]): w for w in upcoming["waves"]}
    assert waves[("announce", "vk")]["reached"] == 30 and waves[("announce", "vk")]["opt_outs"] == 1
    assert upcoming["forecast"]["events_used"] == 3


def test_csv_and_the_picture(series: dict[str, int], store: Path) -> None:
    import_next(store)
    png = store / "report.png"
    out = cli("report", "--series", SERIES, "--csv", "--plot", str(png), "--now",
              NOW.isoformat()).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["event", "series", "starts_at", "wave", "channel", "measure",
                             "value"]
    value = {(r["event"], r["wave"], r["channel"], r["measure"]): r["value"] for r in rows}
    assert value[("ms-2", "", "", "attended")] == "27"
    assert value[("ms-4", "", "", "attended")] == ""
    assert value[("ms-4", "announce", "vk", "registrations")] == "20"
    assert int(value[("ms-4", "", "", "forecast_low")]) <= int(
        value[("ms-4", "", "", "forecast_expected")])
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    single = store / "one.png"
    text = cli("report", NEXT, "--plot", str(single), "--now", NOW.isoformat()).stdout
    assert "forecast:" in text and single.read_bytes()[:4] == b"\x89PNG"


def test_bad_report_requests_are_told() -> None:
    runner = CliRunner()
    for args, message in ((["report"], "EVENT slug or --series"),
                          (["report", "x", "--series", "y"], "one of them"),
                          (["report", "x", "--json", "--csv"], "not both"),
                          (["report", "x", "--plot", "out.jpg"], "PNG")):
        result = runner.invoke(app, args)
        assert result.exit_code != 0 and message in str(result.exception), args


def test_unknown_series_names_the_known_ones(series: dict[str, int]) -> None:
    result = CliRunner().invoke(app, ["report", "--series", "moscow-pyton", "--now",
                                      NOW.isoformat()])
    assert "no series 'moscow-pyton'" in str(result.exception)
    assert "moscow-python" in str(result.exception)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"utm_source": "email", "utm_campaign": "ms-4", "utm_content": "announce"},
     ("announce", "email", "utm")),
    ({"utm_source": "SMS", "utm_content": "last_call"}, ("last_call", "sms", "utm")),
    ({"utm_source": "sms", "messages": [(NOW - timedelta(days=3), "announce", "sms"),
                                        (NOW - timedelta(days=1), "last_call", "email")]},
     ("announce", "sms", "utm")),
    ({"utm_source": "sms"}, (None, "sms", "utm")),
    ({"utm_source": "email", "utm_campaign": "ms-3", "utm_content": "announce"},
     (None, None, "other_link")),
    ({"short_link": "https://h.org/go/ms-4/vk/last_call"}, ("last_call", "vk", "short_link")),
    ({"short_link": "https://h.org/go/ms-3/vk/last_call"}, (None, None, "other_link")),
    ({"messages": [(NOW - timedelta(days=3), "announce", "email"),
                   (NOW - timedelta(days=1), "last_call", "sms"),
                   (NOW + timedelta(hours=1), "reminder", "sms")]},
     ("last_call", "sms", "last_message")),
    ({"messages": [(NOW + timedelta(hours=1), "reminder", "sms")]}, (None, None, "none")),
    ({}, (None, None, "none")),
])
def test_attribution_order(kwargs: dict, expected: tuple) -> None:
    a = attribute("ms-4", registered_at=NOW, **kwargs)
    assert (a.wave, a.channel, a.how) == expected
