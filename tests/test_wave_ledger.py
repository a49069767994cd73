"""One wave against a real store: idempotent re-runs, crashes, quiet hours, late opt-outs,
and the preview commands' contracts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

from flows.lease import host_id
from flows.resume import resolve, take_over
from flows.send import send_batch
from flows.store import save_event
from flows.wave import due_batches, prepare_wave
from promo.cli import app
from promo.db import session_scope
from promo.db.models import Consent, Contact, ContactTopic, Message, Registration
from promo.domain.event import load_event
from promo.settings import get_settings
from tests.helpers import write_event

MSK = ZoneInfo("Europe/Moscow")
START = datetime(2027, 2, 20, 19, 0, tzinfo=MSK)
CAMPAIGN = """\
campaign:
  announce: {days_before: 10, at: "07:00", channels: [sms, email], mode: fallback}
  last_call: null
  reminder: {channels: [email, sms], mode: all}
"""


def seed(folder) -> tuple:
    """Five contacts following python; 1-2 reachable by SMS and email, 3 email only,
    4 registered, 5 in New York (SMS at 07:00 Moscow is 23:00 there)."""
    path = write_event(folder, START, extra=CAMPAIGN)
    spec = load_event(path)
    with session_scope() as s:
        event = save_event(s, spec, path)
        zones = {1: "Europe/Moscow", 2: "Europe/Moscow", 3: "Europe/Moscow", 4: "Europe/Moscow",
                 5: "America/New_York"}
        s.execute(insert(Contact), [
            {"id": i, "name": f"Гость {i}", "email": f"g{i}@example.org",
             "phone": f"+7916000000{i}", "timezone": zones[i], "language": "ru"}
            for i in range(1, 6)])
        s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"} for i in range(1, 6)])
        granted = START - timedelta(days=200)
        s.execute(insert(Consent), [
            {"contact_id": i, "channel": ch, "granted_at": granted, "granted_source": "test"}
            for i in range(1, 6) for ch in ("sms", "email") if not (i == 3 and ch == "sms")])
        s.execute(insert(Registration), [{"contact_id": 4, "event_id": event.id,
                                          "registered_at": granted}])
        event_id = event.id
    return path, spec, event_id


def run(slug: str, wave: str, now: datetime) -> Counter:
    settings = get_settings()
    prepared = prepare_wave(slug, wave, now, settings)
    total: Counter = Counter()
    if prepared.event_id is not None:  # what stopped workers left, as the send loop does
        total.update(resolve(take_over(prepared.event_id, wave, settings), now, settings))
    for _, batch in due_batches(slug, wave, now, settings):
        total.update(send_batch(batch, now, settings))
    return total


def ledger(event_id: int) -> dict[tuple[int | None, str], tuple[str, str | None]]:
    with session_scope() as s:
        return {(m.contact_id, m.channel): (m.status, m.reason) for m in s.scalars(
            select(Message).where(Message.event_id == event_id, Message.wave == "announce"))}


def outbox_lines(store, channel: str) -> list[dict]:
    path = store / "outbox" / channel / "python-meetup-74.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_wave_decides_holds_at_night_and_rerun_sends_nothing_twice(store):
    _, spec, event_id = seed(store)
    at = datetime(2027, 2, 10, 7, 0, tzinfo=MSK)
    first = run(spec.slug, "announce", at)
    rows = ledger(event_id)
    # SMS is first in the list but 07:00 is outside its window: email, which can go now, carries it
    assert rows[(1, "email")] == ("sent", None)
    assert (1, "sms") not in rows
    assert rows[(3, "sms")] == ("suppressed", "no consent")
    assert rows[(4, "sms")] == ("suppressed", "registered")
    assert first["sent"] == 4
    # nothing new on a re-run, at the same time or later
    assert run(spec.slug, "announce", at)["sent"] == 0
    assert run(spec.slug, "announce", at + timedelta(hours=5))["sent"] == 0
    assert len(list((store / "outbox" / "email").glob("*.eml"))) == 4


def test_sms_only_contact_is_held_until_the_window_opens(store):
    _, spec, event_id = seed(store)
    with session_scope() as s:
        s.execute(update(Consent).where(Consent.contact_id == 1, Consent.channel == "email")
                  .values(withdrawn_at=START - timedelta(days=1)))
    at = datetime(2027, 2, 10, 7, 0, tzinfo=MSK)
    run(spec.slug, "announce", at)
    rows = ledger(event_id)
    assert rows[(1, "sms")] == ("deferred", "quiet hours (09:00-21:00)")
    assert rows[(1, "email")] == ("suppressed", "opted out")
    assert outbox_lines(store, "sms") == []
    run(spec.slug, "announce", datetime(2027, 2, 10, 9, 0, tzinfo=MSK))
    assert ledger(event_id)[(1, "sms")] == ("sent", "held by quiet hours (09:00-21:00)")
    assert [m["to"] for m in outbox_lines(store, "sms")] == ["+79160000001"]


def test_opt_out_between_plan_and_send_is_respected_at_send_time(store):
    _, spec, event_id = seed(store)
    at = datetime(2027, 2, 10, 7, 0, tzinfo=MSK)
    prepare_wave(spec.slug, "announce", at, get_settings())
    with session_scope() as s:  # contact 2 unsubscribes a second later
        s.execute(update(Consent).where(Consent.contact_id == 2, Consent.channel == "email")
                  .values(withdrawn_at=datetime(2027, 2, 10, 4, 0, 1, tzinfo=ZoneInfo("UTC"))))
    for _, batch in due_batches(spec.slug, "announce", at, get_settings()):
        send_batch(batch, at, get_settings())
    assert ledger(event_id)[(2, "email")] == ("suppressed", "opted out")
    assert "g2@example.org" not in "".join(
        p.read_text() for p in (store / "outbox" / "email").glob("*.eml"))


def test_a_message_interrupted_mid_send_becomes_uncertain_and_is_not_resent(store):
    _, spec, event_id = seed(store)
    at = datetime(2027, 2, 10, 7, 0, tzinfo=MSK)
    prepare_wave(spec.slug, "announce", at, get_settings())
    with session_scope() as s:  # a worker claimed contact 1's email, then died
        s.execute(update(Message).where(Message.contact_id == 1, Message.channel == "email")
                  .values(status="sending", sent_at=at,
                          updated_at=datetime.now(ZoneInfo("UTC")) - timedelta(hours=1)))
    run(spec.slug, "announce", at + timedelta(minutes=30))
    status, reason = ledger(event_id)[(1, "email")]
    assert status == "uncertain" and "not sent again" in reason
    sent_to = "".join(p.read_text() for p in (store / "outbox" / "email").glob("*.eml"))
    assert "g1@example.org" not in sent_to and "g2@example.org" in sent_to


def test_a_dead_workers_messages_are_taken_over_at_once_a_live_ones_never(store):
    """A worker on this machine whose process is gone is dead without waiting for its lease;
    one whose lease is current and whose process lives keeps its messages."""
    from flows.lease import current_lease
    from promo.db.models import SendWorker

    _, spec, event_id = seed(store)
    at = datetime(2027, 2, 10, 7, 0, tzinfo=MSK)
    prepare_wave(spec.slug, "announce", at, get_settings())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    soon = datetime.now(ZoneInfo("UTC")) + timedelta(minutes=5)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with session_scope() as s:
            for wid, pid in (("dead-worker", dead.pid), ("live-worker", alive.pid)):
                s.add(SendWorker(id=wid, host=host_id(), pid=pid, process_start=None,
                                 lease_until=soon))
            s.flush()
            for cid, wid in ((1, "dead-worker"), (2, "live-worker")):
                s.execute(update(Message).where(Message.contact_id == cid,
                                                Message.channel == "email")
                          .values(status="sending", sent_at=at, claimed_by=wid, claimed_at=at))
        current_lease(get_settings().database_url, get_settings().send_lease_seconds)
        taken = take_over(event_id, "announce", get_settings())
        assert [(m.contact_id, m.channel) for m in taken] == [(1, "email")]
        resolve(taken, at, get_settings())
        rows = ledger(event_id)
        assert rows[(1, "email")][0] == "uncertain"
        assert rows[(2, "email")] == ("sending", None)
    finally:
        alive.kill()
        alive.wait()
    with session_scope() as s:
        assert s.get(SendWorker, "dead-worker") is None  # forgotten once nothing is held


def test_plan_json_contract_and_why(store):
    path, spec, event_id = seed(store)
    runner = CliRunner()
    now = "2027-02-01T12:00:00+03:00"
    result = runner.invoke(app, ["plan", str(path), "--now", now, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    waves = {w["name"]: w for w in data["waves"]}
    assert list(waves) == ["announce", "reminder"]
    assert datetime.fromisoformat(waves["announce"]["send_at"]) == datetime(2027, 2, 10, 7, 0, tzinfo=MSK)
    assert waves["announce"]["send_at"].endswith("+03:00")
    assert waves["announce"]["outcomes"]["email"]["planned"] == 4
    assert waves["announce"]["outcomes"]["sms"]["suppressed"] == 2
    assert waves["reminder"]["outcomes"]["email"]["planned"] == 1
    assert ledger(event_id) == {}, "a preview writes nothing"

    result = runner.invoke(app, ["why", "4", spec.slug, "--now", now, "--json"])
    assert result.exit_code == 0, result.output
    decisions = json.loads(result.output)["decisions"]
    assert {"wave": "announce", "channel": "sms", "status": "suppressed", "reason": "registered"}.items() \
        <= decisions[0].items()
    assert {(d["wave"], d["channel"], d["status"]) for d in decisions[1:]} == {
        ("reminder", "email", "planned"), ("reminder", "sms", "planned")}

    result = runner.invoke(app, ["why", "g3@example.org", spec.slug, "--now", now])
    assert result.exit_code == 0, result.output
    assert "sms" in result.output and "no consent" in result.output
    assert "not registered" in result.output  # the reminder goes to registrants only


@pytest.mark.parametrize("args, message", [
    (["plan", "missing.yaml"], "missing.yaml: invalid event"),
    (["why", "999", "python-meetup-74"], "no event 'python-meetup-74'"),
    (["run", "e.yaml", "--now", "yesterday"], "--now 'yesterday': not an ISO time"),
])
def test_bad_input_is_one_clear_line_not_a_traceback(store, args, message):
    import subprocess
    import sys

    (store / "e.yaml").write_text("slug: x\n")
    proc = subprocess.run([sys.executable, "-m", "promo.cli", *args], capture_output=True,
                          text=True, cwd=store, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_the_same_wave_on_postgresql(pg_store, tmp_path):
    """The store path (decisions recorded by the driver, claims under row locks) on PostgreSQL."""
    _, spec, event_id = seed(tmp_path)
    at = datetime(2027, 2, 10, 7, 0, tzinfo=MSK)
    assert run(spec.slug, "announce", at)["sent"] == 4
    assert run(spec.slug, "announce", at)["sent"] == 0
    rows = ledger(event_id)
    assert rows[(4, "sms")] == ("suppressed", "registered")
    assert rows[(5, "email")] == ("sent", None)
    assert len(list((tmp_path / "outbox" / "email").glob("*.eml"))) == 4


def test_plan_shows_the_counters_segments_and_costs(store, monkeypatch):
    from channels.render import render
    from channels.samples import sample_context
    from channels.sms_segments import segments
    from promo.settings import reset_settings

    monkeypatch.setenv("PROMO_PRICES", '{"sms": 0.04, "email": 0.002}')
    reset_settings()
    path, spec, _ = seed(store)
    result = CliRunner().invoke(app, ["plan", str(path), "--now", "2027-02-01T12:00:00+03:00",
                                      "--json"])
    assert result.exit_code == 0, result.output
    announce = json.loads(result.output)["waves"][0]
    settings = get_settings()
    for lang in ("ru", "en"):
        text = render(spec, "announce", "sms", lang,
                      sample_context(spec, "announce", "sms", lang, settings), None,
                      settings=settings).text
        assert announce["content"]["sms"]["segments"][lang] == segments(text)
    ru_sms = announce["content"]["sms"]["segments"]["ru"]
    assert announce["content"]["sms"]["cost_per_message"]["ru"] == pytest.approx(0.04 * ru_sms)
    # four emails planned at 0.002, no SMS (email carries the wave for everyone reachable)
    assert announce["content"]["email"]["estimated_cost"] == pytest.approx(4 * 0.002)
    assert announce["estimated_cost"] == pytest.approx(4 * 0.002)
    reset_settings()


def test_a_wave_of_a_cancelled_event_sends_nothing_and_says_why(store):
    _, spec, event_id = seed(store)
    with session_scope() as s:
        from promo.db.models import Event

        s.execute(update(Event).where(Event.id == event_id)
                  .values(cancelled_at=datetime(2027, 2, 5, tzinfo=MSK)))
    prepared = prepare_wave(spec.slug, "announce", datetime(2027, 2, 10, 7, 0, tzinfo=MSK),
                            get_settings())
    assert (prepared.status, prepared.note) == ("dropped", "the event was cancelled")
    assert ledger(event_id) == {}


def test_registering_after_the_decision_stops_a_held_promotion(store):
    _, spec, event_id = seed(store)
    with session_scope() as s:  # contact 1 is reachable by SMS only: held at 07:00
        s.execute(update(Consent).where(Consent.contact_id == 1, Consent.channel == "email")
                  .values(withdrawn_at=START - timedelta(days=1)))
    run(spec.slug, "announce", datetime(2027, 2, 10, 7, 0, tzinfo=MSK))
    assert ledger(event_id)[(1, "sms")][0] == "deferred"
    with session_scope() as s:
        s.execute(insert(Registration), [{"contact_id": 1, "event_id": event_id,
                                          "registered_at": datetime(2027, 2, 10, 8, 0, tzinfo=MSK)}])
    run(spec.slug, "announce", datetime(2027, 2, 10, 9, 0, tzinfo=MSK))
    assert ledger(event_id)[(1, "sms")] == ("suppressed", "registered")
    assert outbox_lines(store, "sms") == []


def test_two_workers_claiming_the_same_message_on_postgresql_send_it_once(pg_store, tmp_path):
    """Worker A claims and holds its transaction; worker B asks for the same row meanwhile."""
    import threading
    import time

    from flows.send import claim
    from flows.store import event_spec
    from promo.db.models import Event

    _, spec, event_id = seed(tmp_path)
    at = datetime(2027, 2, 10, 7, 0, tzinfo=MSK)
    prepare_wave(spec.slug, "announce", at, get_settings())
    with session_scope() as s:
        mid = s.scalar(select(Message.id).where(Message.contact_id == 2,
                                                Message.channel == "email"))
    claimed: dict[str, int] = {}

    def worker(name: str, delay: float, hold: float) -> None:
        time.sleep(delay)
        with session_scope() as s:
            specs = {event_id: event_spec(s.get(Event, event_id))}
            got, _ = claim(s, [mid], at, get_settings(), specs)
            claimed[name] = len(got)
            time.sleep(hold)

    threads = [threading.Thread(target=worker, args=("a", 0, 1.0)),
               threading.Thread(target=worker, args=("b", 0.3, 0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert claimed == {"a": 1, "b": 0}


def test_held_messages_go_even_when_a_late_run_would_drop_the_wave(store):
    """A reminder at 20:00 Moscow reaches Novosibirsk at midnight: held until 09:00 there
    (05:00 in Moscow), when the plan would call the reminder 'no longer the day before'."""
    path = write_event(store, START, slug="late-reminder", extra="""\
        campaign:
          announce: null
          last_call: null
          reminder: {at: "20:00", channels: [sms], mode: all}
        """)
    spec = load_event(path)
    with session_scope() as s:
        event = save_event(s, spec, path)
        s.execute(insert(Contact), [{"id": 1, "phone": "+79160000001",
                                     "timezone": "Asia/Novosibirsk", "language": "ru"}])
        s.execute(insert(Consent), [{"contact_id": 1, "channel": "sms",
                                     "granted_at": START - timedelta(days=90)}])
        s.execute(insert(Registration), [{"contact_id": 1, "event_id": event.id}])
        event_id = event.id
    run(spec.slug, "reminder", datetime(2027, 2, 19, 20, 0, tzinfo=MSK))
    with session_scope() as s:
        row = s.scalar(select(Message).where(Message.event_id == event_id))
        assert (row.status, row.send_at) == ("deferred", datetime(2027, 2, 20, 5, 0, tzinfo=MSK))
    prepared = prepare_wave(spec.slug, "reminder", datetime(2027, 2, 20, 5, 0, tzinfo=MSK),
                            get_settings())
    assert prepared.status == "held"
    for _, batch in due_batches(spec.slug, "reminder", datetime(2027, 2, 20, 5, 0, tzinfo=MSK),
                             get_settings()):
        send_batch(batch, datetime(2027, 2, 20, 5, 0, tzinfo=MSK), get_settings())
    with session_scope() as s:
        row = s.scalar(select(Message).where(Message.event_id == event_id))
        assert row.status == "sent"
    # and after the start, whatever still waits is dropped with the reason
    with session_scope() as s:
        s.execute(update(Message).where(Message.id == row.id).values(status="deferred"))
    late = prepare_wave(spec.slug, "reminder", START + timedelta(minutes=1), get_settings())
    assert (late.status, late.note) == ("dropped", "the event has started")
    with session_scope() as s:
        assert s.get(Message, row.id).status == "dropped"


def test_a_wave_of_public_posts_only_plans_with_registrants_in_the_segment(store):
    path = write_event(store, START, slug="posts-only", extra="""\
        campaign:
          announce: {days_before: 10, channels: [vk_wall]}
          last_call: null
        """)
    spec = load_event(path)
    with session_scope() as s:
        event = save_event(s, spec, path)
        s.execute(insert(Contact), [{"id": 1, "email": "r@example.org"}])
        s.execute(insert(ContactTopic), [{"contact_id": 1, "topic": "python"}])
        s.execute(insert(Registration), [{"contact_id": 1, "event_id": event.id}])
        event_id = event.id
    run(spec.slug, "announce", datetime(2027, 2, 10, 11, 0, tzinfo=MSK))
    assert ledger(event_id) == {(None, "vk_wall"): ("sent", None)}


def test_a_bad_edit_is_refused_and_the_stored_event_stays_as_it_was(store):
    import subprocess
    import sys

    path, _, event_id = seed(store)
    with session_scope() as s:
        from promo.db.models import Event

        before = s.get(Event, event_id).definition
    broken = store / "tpl" / "announce"
    broken.mkdir(parents=True)
    (broken / "email.ru.subject.j2").write_text("{{ event.title }} {{ speaker }}\n")
    path.write_text(path.read_text().replace("title: \"Moscow Python Meetup #74\"",
                                             "title: \"Renamed\"\ntemplates: tpl"))
    proc = subprocess.run([sys.executable, "-m", "promo.cli", "run", str(path), "--now",
                           "2027-02-10T07:00:00+03:00"], capture_output=True, text=True,
                          cwd=store, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "email.ru.subject.j2:1" in proc.stderr and "speaker" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    with session_scope() as s:
        assert s.get(Event, event_id).definition == before
    assert ledger(event_id) == {}


@pytest.mark.parametrize("config, env, message", [
    ('caps = {sms = "1/7d"\n', {}, "promo.toml: not valid TOML"),
    ("", {"PROMO_DEFAULT_TIMEZONE": "Mars/Base"}, "default_timezone: Value error, 'Mars/Base'"),
    ('[caps]\nsms = "often"\n', {}, "caps: Value error, 'often' is not a cap like '3/7d'"),
])
def test_bad_settings_are_one_clear_message(store, config, env, message):
    import os
    import subprocess
    import sys

    (store / "promo.toml").write_text(config)
    try:
        proc = subprocess.run([sys.executable, "-m", "promo.cli", "db", "upgrade"],
                              capture_output=True, text=True, cwd=store, check=False,
                              env={**os.environ, **env})
    finally:
        (store / "promo.toml").unlink()  # the fixture's teardown reads the settings again
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_promotional_wave_without_days_is_refused_clearly(store):
    from promo.domain.event import parse_event
    from promo.errors import EventError
    from tests.helpers import EVENT_TEMPLATE

    text = EVENT_TEMPLATE.format(slug="x", starts_at=START.isoformat())
    with pytest.raises(EventError, match="announce.days_before: give the number of days"):
        parse_event(text + "campaign:\n  announce: {days_before: null, channels: [email]}\n")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_recording_decisions_again_keeps_the_rows_in_the_ledger(backend, request, tmp_path):
    """The bulk path (COPY on PostgreSQL) inserts new keys only: a key already recorded keeps
    its row, status, reason and times, and the times read back as they went in."""
    from flows.decide import Decision
    from flows.ledger import record_decisions
    from flows.store import find_event
    from promo.db import hold_contacts

    request.getfixturevalue("store" if backend == "sqlite" else "pg_store")
    _, spec, event_id = seed(tmp_path)
    at = datetime(2027, 2, 10, 7, 0, tzinfo=MSK)
    first = [Decision(1, "email", "planned", None, at),
             Decision(2, "sms", "deferred", "held by quiet hours", at + timedelta(hours=3)),
             Decision(None, "vk_wall", "planned", None, at)]
    again = [Decision(1, "email", "capped", "cap", at),
             Decision(3, "email", "suppressed", "no consent", None)]
    for batch in (first, again):  # the first straight into the ledger (COPY), then through
        with session_scope() as s:  # the temporary table, its keys there already
            hold_contacts(s)
            record_decisions(s, find_event(s, spec.slug), "announce", batch, counts_for_caps=True,
                             contacts_held=True)
    with session_scope() as s:
        got = {(m.contact_id, m.channel): (m.status, m.reason, m.send_at, m.counts_for_caps)
               for m in s.scalars(select(Message).where(Message.event_id == event_id))}
    assert got == {
        (1, "email"): ("planned", None, at, True),
        (2, "sms"): ("deferred", "held by quiet hours", at + timedelta(hours=3), True),
        (None, "vk_wall"): ("planned", None, at, False),
        (3, "email"): ("suppressed", "no consent", None, True),
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_ledger_without_foreign_keys_still_unlinks_and_refuses_the_forgotten(
        backend, request, tmp_path):
    """The ledger has no foreign keys (migration 0006): forgetting unlinks a person's rows
    itself, a decision for someone forgotten after their wave's audience was read is left
    out, and the wave's rows for everyone else go in."""
    from audiences.privacy import forget
    from flows.decide import Decision
    from flows.ledger import record_decisions
    from flows.store import find_event

    request.getfixturevalue("store" if backend == "sqlite" else "pg_store")
    _, spec, event_id = seed(tmp_path)
    at = datetime(2027, 2, 10, 7, 0, tzinfo=MSK)
    with session_scope() as s:
        record_decisions(s, find_event(s, spec.slug), "announce",
                         [Decision(1, "email", "planned", None, at)], counts_for_caps=True)
    with session_scope() as s:
        forget(s, "g1@example.org")
        forget(s, "g2@example.org")
    # decided from an audience read before the second forget: contact 2 is gone by now
    with session_scope() as s:
        record_decisions(s, find_event(s, spec.slug), "last_call",
                         [Decision(2, "email", "planned", None, at),
                          Decision(3, "email", "planned", None, at)], counts_for_caps=True)
    with session_scope() as s:
        got = sorted((m.wave, m.contact_id, m.status, m.reason) for m in
                     s.scalars(select(Message).where(Message.event_id == event_id)))
    assert got == [("announce", None, "suppressed", "contact forgotten"),
                   ("last_call", 3, "planned", None)]
