"""The monthly digest (issue 17): what it lists, whom it reaches and why not (caps, the
spacing around the campaign waves, its own unsubscribe), an empty month, re-runs, through
the real flows and the outbox."""

from __future__ import annotations

import email
import json
import re
from datetime import datetime, timedelta
from email.header import decode_header, make_header
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from flows.digest import preview_digest
from flows.digest_flow import digest_flow
from flows.store import find_event
from promo.cli import app
from promo.db import session_scope
from promo.db.models import Consent, Contact, ContactTopic, Event, Message, Registration
from promo.errors import UserError
from promo.settings import get_settings
from tests.helpers import write_event

MSK = ZoneInfo("Europe/Moscow")
# the first Monday of December 2026, at the deployment's 11:00
NOW = datetime(2026, 12, 7, 11, 0, tzinfo=MSK)
SERIES = "moscow-python"
RECORDINGS = """\
recordings:
  - https://video.example.org/ms-1/keynote
  - {title: "Async in practice", url: "https://video.example.org/ms-1/async"}
links:
  slides: https://slides.example.org/ms-1
"""


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def add_event(folder: Path, slug: str, start: datetime, extra: str = "") -> None:
    path = write_event(folder, start, slug=slug, extra=f"series: {SERIES}\n" + extra)
    cli("events", "add", str(path), "--now", NOW.isoformat())


def people(spec: dict[str, dict]) -> dict[str, int]:
    """Contacts who follow python, by name; each value says their email consent and digest."""
    at = NOW - timedelta(days=200)
    with session_scope() as s:
        ids = {}
        for name, p in spec.items():
            c = Contact(name=name, email=f"{name}@example.org", language="en",
                        digest=p.get("digest"), digest_at=at if "digest" in p else None)
            s.add(c)
            s.flush()
            ids[name] = c.id
            s.add(ContactTopic(contact_id=c.id, topic="python"))
            if p.get("consent", True):
                s.add(Consent(contact_id=c.id, channel="email", granted_at=at,
                              withdrawn_at=at + timedelta(days=1) if p.get("withdrawn") else None))
    return ids


def ledger(slug: str) -> dict[tuple[int | None, str], tuple[str, str | None]]:
    with session_scope() as s:
        row = find_event(s, slug)
        return {(m.contact_id, m.channel): (m.status, m.reason) for m in s.scalars(
            select(Message).where(Message.event_id == row.id, Message.wave == "digest"))}


def emails(store: Path) -> dict[str, email.message.Message]:
    out = {}
    for path in sorted((store / "outbox" / "email").glob("digest-*.eml")):
        msg = email.message_from_bytes(path.read_bytes())
        out[msg["To"]] = msg
    return out


def unsubscribe_path(msg: email.message.Message) -> str:
    header = str(make_header(decode_header(msg["List-Unsubscribe"])))
    return re.search(r"/unsubscribe/[^>,\s]+", header).group(0)


def text_of(msg: email.message.Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            return part.get_payload(decode=True).decode()
    raise AssertionError("no text part")


@pytest.fixture
def series(store: Path) -> dict[str, int]:
    add_event(store, "ms-1", datetime(2026, 11, 5, 19, 0, tzinfo=MSK), RECORDINGS)
    add_event(store, "ms-2", datetime(2026, 11, 19, 19, 0, tzinfo=MSK))
    add_event(store, "ms-old", datetime(2026, 9, 10, 19, 0, tzinfo=MSK), RECORDINGS)
    add_event(store, "ms-3", datetime(2027, 1, 14, 19, 0, tzinfo=MSK))
    return people({
        "anna": {}, "boris": {"consent": False},
        "vera": {"digest": True, "withdrawn": True},  # asked for the digest only
        "gleb": {"digest": False},  # unsubscribed from the digest
        "dina": {},
    })


def test_the_content_of_a_month_with_upcoming_and_past_events(series: dict[str, int],
                                                               store: Path,
                                                               prefect_api: None) -> None:
    with session_scope() as s:
        data = preview_digest(s, SERIES, NOW, get_settings())
    assert data["digest"] == "digest-moscow-python-2026-12" and data["predicted"]
    assert [e["event"] for e in data["upcoming"]] == ["ms-3"]
    # the past month's events, the one without recordings too; not September's
    assert [e["event"] for e in data["past"]] == ["ms-1", "ms-2"]
    assert data["past"][0]["recordings"] == ["https://video.example.org/ms-1/keynote",
                                             "https://video.example.org/ms-1/async"]
    assert data["past"][1]["recordings"] == [] and data["past"][1]["slides"] is None

    result = digest_flow(SERIES, NOW.isoformat())
    assert result["note"] == "moscow-python, 2026-12: 1 upcoming, 2 past event(s)"
    assert result["sent"]["sent"] == 5  # anna, vera, dina by email; the VK wall; Telegram
    got = emails(store)
    assert sorted(got) == ["anna@example.org", "dina@example.org", "vera@example.org"]
    text = text_of(got["anna@example.org"])
    # when, in the event's zone with the zone named; the registration link tagged digest
    assert "  When: Thursday, January 14, 7:00 PM (Moscow time)\n  Where: Точка кипения" in text
    assert "https://example.org/python-meetup-74?utm_source=email&utm_medium=digest" \
           "&utm_campaign=ms-3&utm_content=digest" in text
    assert 'Recording "Async in practice": https://video.example.org/ms-1/async' in text
    assert "Slides: https://slides.example.org/ms-1" in text
    ms2 = text.index("Moscow Python Meetup #74 (Thursday, November 19)")
    assert "Recording" not in text[ms2:].split("\n--\n")[0]  # listed without recordings
    # the one-click unsubscribe is the digest's own, and the email says announcements stay
    msg = got["anna@example.org"]
    assert "List-Unsubscribe=One-Click" in msg["List-Unsubscribe-Post"]
    assert "event invitations keep coming" in text
    assert not [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    wall = [json.loads(x) for x in (store / "outbox" / "vk_wall").glob("*.jsonl")
            for x in x.read_text().splitlines()]
    assert len(wall) == 1 and "utm_source=vk_wall&utm_medium=digest" in wall[0]["text"]
    # every decision is in the ledger with its reason
    rows = ledger("digest-moscow-python-2026-12")
    assert rows[(series["boris"], "email")] == ("suppressed", "no consent")
    assert rows[(series["gleb"], "email")] == ("suppressed", "unsubscribed from the digest")
    assert rows[(series["vera"], "email")][0] == "sent"
    # the digest is no event of the series: the report leaves it out, the daily run too
    report = json.loads(cli("report", "--series", SERIES, "--json", "--now",
                            NOW.isoformat()).stdout)
    assert [e["event"] for e in report["events"]] == ["ms-old", "ms-1", "ms-2", "ms-3"]

    listed = json.loads(cli("events", "list", "--json", "--now", NOW.isoformat()).stdout)
    (digest,) = [e for e in listed if e["kind"] == "digest"]
    assert digest["slug"] == "digest-moscow-python-2026-12"
    assert [(w["wave"], w["state"], w["reached"]) for w in digest["waves"]] == [
        ("digest", "ran", 3)]
    # a re-run in the same month sends nothing more (and a later day of it neither)
    again = digest_flow(SERIES, (NOW + timedelta(days=3)).isoformat())
    assert again["sent"] == {} and len(emails(store)) == 3
    assert sum(1 for _ in (store / "outbox" / "vk_wall").glob("*.jsonl")) == 1
    why = json.loads(cli("why", str(series["gleb"]), "digest-moscow-python-2026-12",
                         "--json", "--now", NOW.isoformat()).stdout)
    assert [(d["wave"], d["status"], d["reason"]) for d in why["decisions"]] == [
        ("digest", "suppressed", "unsubscribed from the digest")]


def test_caps_and_the_room_kept_for_the_campaign_waves(store: Path, prefect_api: None) -> None:
    # an event on December 21: its announce goes on December 7 too, its last call on the 18th
    add_event(store, "ms-5", datetime(2026, 12, 21, 19, 0, tzinfo=MSK))
    ids = people({"anna": {}, "boris": {}, "vera": {}})
    with session_scope() as s:
        ms5 = find_event(s, "ms-5")
        # boris and vera registered (no promotion for them), vera got three emails this
        # week (the cap)
        for name in ("boris", "vera"):
            s.add(Registration(event_id=ms5.id, contact_id=ids[name], registered_at=NOW))
        s.execute(insert(Message), [
            {"key": f"other/{i}", "event_id": ms5.id, "wave": f"x{i}",
             "contact_id": ids["vera"], "channel": "email", "status": "sent",
             "send_at": NOW - timedelta(days=i + 1), "sent_at": NOW - timedelta(days=i + 1),
             "decided_at": NOW, "counts_for_caps": True, "attempts": 1, "updated_at": NOW}
            for i in range(3)])
    with session_scope() as s:
        data = preview_digest(s, SERIES, NOW, get_settings())
    assert data["outcomes"]["email"] == {"capped": 2, "planned": 1}
    digest_flow(SERIES, NOW.isoformat())
    rows = ledger("digest-moscow-python-2026-12")
    assert rows[(ids["anna"], "email")] == (
        "capped", "within 3 days of the announce of ms-5")
    assert rows[(ids["boris"], "email")][0] == "sent"
    assert rows[(ids["vera"], "email")] == ("capped", "email: 3 per 7 days")
    # the spacing is a setting
    assert get_settings().digest_spacing_days == 3


def test_a_month_with_nothing_to_say_sends_nothing(store: Path, prefect_api: None) -> None:
    add_event(store, "ms-old", datetime(2026, 9, 10, 19, 0, tzinfo=MSK), RECORDINGS)
    add_event(store, "ms-2", datetime(2026, 11, 19, 19, 0, tzinfo=MSK))  # no recordings
    people({"anna": {}})
    out = cli("digest", "preview", "--series", SERIES, "--now", NOW.isoformat()).stdout
    assert "nothing to say" in out
    result = digest_flow(SERIES, NOW.isoformat())
    assert result["digest"] is None and "no digest is sent" in result["note"]
    # the deployment's run, for every series in the store, says the same
    (every,) = digest_flow(None, NOW.isoformat())["digests"]
    assert every["series"] == SERIES and every["digest"] is None
    with session_scope() as s:
        assert s.scalar(select(Event).where(Event.kind == "digest")) is None
        assert s.scalar(select(Message)) is None
    assert not (store / "outbox" / "email").exists()
    # an unknown series: one message naming the known ones, before any flow runs
    bad = CliRunner().invoke(app, ["digest", "run", "--series", "nope", "--now", NOW.isoformat()])
    assert isinstance(bad.exception, UserError)
    assert "no series 'nope'" in str(bad.exception) and "moscow-python" in str(bad.exception)


def test_the_digest_only_unsubscribe(series: dict[str, int], store: Path,
                                     prefect_api: None) -> None:
    from starlette.testclient import TestClient

    from promo.webhooks.app import create_app

    digest_flow(SERIES, NOW.isoformat())
    msg = emails(store)["anna@example.org"]
    path = unsubscribe_path(msg)
    client = TestClient(create_app(get_settings()))
    page = client.get(path)
    assert "Only the digest" in page.text and "Everything" in page.text
    # the mail client's one click: the digest only
    assert client.post(path, content="List-Unsubscribe=One-Click").status_code == 200
    with session_scope() as s:
        anna = s.get(Contact, series["anna"])
        assert anna.digest is False
        consent = s.get(Consent, (anna.id, "email"))
        assert consent.withdrawn_at is None  # announcements keep coming
    # dina's page: everything
    dina = unsubscribe_path(emails(store)["dina@example.org"])
    client.post(dina, data={"scope": "everything"})
    with session_scope() as s:
        assert s.get(Contact, series["dina"]).digest is False
        assert s.get(Consent, (series["dina"], "email")).withdrawn_at is not None
    # January: anna and dina get no digest; anna still gets the ms-3 announce by email
    january = datetime(2027, 1, 4, 11, 0, tzinfo=MSK)
    digest_flow(SERIES, january.isoformat())
    rows = ledger("digest-moscow-python-2027-01")
    assert rows[(series["anna"], "email")] == ("suppressed", "unsubscribed from the digest")
    assert rows[(series["dina"], "email")] == ("suppressed", "unsubscribed from the digest")
    why = json.loads(cli("why", str(series["anna"]), "ms-3", "--json",
                         "--now", january.isoformat()).stdout)
    announce = [d for d in why["decisions"] if d["wave"] == "announce"]
    assert announce and announce[0]["channel"] == "email" and announce[0]["status"] == "planned"


def test_the_subscription_by_import_and_by_the_registration_webhook(store: Path) -> None:
    from audiences.import_report import ImportRefused
    from audiences.importer import run_import
    from promo.webhooks.registrations import handle

    add_event(store, "ms-3", datetime(2027, 1, 14, 19, 0, tzinfo=MSK))
    path = store / "people.csv"
    path.write_text("email,topics,consent,digest\n"
                    "only@example.org,python,,yes\n"  # the digest only: no email consent
                    "none@example.org,python,email,no\n"
                    "plain@example.org,python,email,\n", encoding="utf-8")
    with session_scope() as s:
        report = run_import(s, path, now=NOW)
    assert not report.problems
    bad = store / "bad.csv"
    bad.write_text("email,digest\nx@example.org,maybe\n", encoding="utf-8")
    with pytest.raises(ImportRefused) as refused, session_scope() as s:
        run_import(s, bad, now=NOW)
    assert "bad.csv:2: digest: 'maybe' is not yes or no" in str(refused.value)
    handle(get_settings(), {"event": "ms-3", "email": "form@example.org", "digest": True,
                            "registered_at": NOW.isoformat()})
    with session_scope() as s:
        got = {c.email: c.digest for c in s.scalars(select(Contact))}
        assert "x@example.org" not in got  # a broken file changes nothing
        assert got == {"only@example.org": True, "none@example.org": False,
                       "plain@example.org": None, "form@example.org": True}
        data = preview_digest(s, SERIES, NOW, get_settings())
    # the digest-only person and the one from the form (registered, no email consent) get
    # it, the one who said no does not, the plain one by their email consent
    assert data["outcomes"]["email"] == {"planned": 3, "suppressed": 1}


def test_the_send_time_claim_keeps_the_spacing_too(series: dict[str, int]) -> None:
    """Decided on Monday, sent after an announce went out meanwhile: the claim's `judge`
    sees the announce and holds the digest back, with the same reason the planner gives."""
    from flows.digest import compose, save_digest
    from flows.send import send_batch
    from flows.wave import due_batches, prepare_wave

    settings = get_settings()
    with session_scope() as s:
        spec, _ = compose(s, SERIES, NOW, settings)
        save_digest(s, spec)
    prepared = prepare_wave(spec.slug, "digest", NOW, settings)
    assert prepared.new_decisions["email"]["planned"] == 3
    later = NOW + timedelta(days=2)
    with session_scope() as s:
        ms3 = find_event(s, "ms-3")
        s.add(Message(key="ms-3/announce/anna/email", event_id=ms3.id, wave="announce",
                      contact_id=series["anna"], channel="email", status="sent",
                      send_at=later - timedelta(days=1), sent_at=later - timedelta(days=1),
                      counts_for_caps=True, attempts=1))
    for _, ids in due_batches(spec.slug, "digest", later, settings):
        send_batch(ids, later, settings)
    rows = ledger(spec.slug)
    assert rows[(series["anna"], "email")] == ("capped", "within 3 days of the announce of ms-3")
    assert rows[(series["dina"], "email")][0] == "sent"


def test_the_event_file_fields_and_their_errors(store: Path) -> None:
    from promo.domain.event import parse_event
    from promo.errors import EventError

    base = write_event(store, datetime(2026, 11, 5, 19, 0, tzinfo=MSK)).read_text()
    spec = parse_event(base + RECORDINGS)
    assert [(r.title, str(r.url)) for r in spec.recordings] == [
        (None, "https://video.example.org/ms-1/keynote"),
        ("Async in practice", "https://video.example.org/ms-1/async")]
    assert str(spec.links.slides) == "https://slides.example.org/ms-1" and spec.links.photos is None
    with pytest.raises(EventError) as bad:
        parse_event(base + "recordings:\n  - not a url\n", "ev.yaml")
    assert "line 10: recordings.0.url" in str(bad.value)
    with pytest.raises(EventError) as bad:
        parse_event(base + "links: {video: https://x.org}\n", "ev.yaml")
    assert "line 9: links.video: is not a known field" in str(bad.value)


def test_an_overridden_digest_template_is_used_and_checked(store: Path,
                                                           prefect_api: None) -> None:
    folder = store / "texts" / "digest"
    folder.mkdir(parents=True)
    for name in ("vk_wall.ru.txt.j2", "telegram_channel.ru.txt.j2"):
        (folder / name).write_text("Наш дайджест {{ month }}: {{ upcoming[0].title }}\n")
    add_event(store, "ms-3", datetime(2027, 1, 14, 19, 0, tzinfo=MSK), "templates: texts\n")
    people({"anna": {}})
    digest_flow(SERIES, NOW.isoformat())
    wall = json.loads(
        (store / "outbox" / "vk_wall" / "digest-moscow-python-2026-12.jsonl").read_text())
    assert wall["text"] == "Наш дайджест 2026-12: Moscow Python Meetup #74"
    # a broken override is refused before anything is stored or sent, naming the file
    (folder / "vk_wall.ru.txt.j2").write_text("{{ upcoming[0].nope }}\n")
    add_event(store, "ms-4", datetime(2027, 2, 11, 19, 0, tzinfo=MSK), "templates: texts\n")
    bad = CliRunner().invoke(app, ["digest", "run", "--series", SERIES, "--now",
                                   datetime(2027, 1, 4, 11, 0, tzinfo=MSK).isoformat()])
    assert "vk_wall.ru.txt.j2" in str(bad.exception) or "vk_wall.ru.txt.j2" in bad.output
    with session_scope() as s:
        assert s.scalar(select(Event).where(Event.slug == "digest-moscow-python-2027-01")) is None
