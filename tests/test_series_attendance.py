"""Check-in lists (`promo attendance import`): who came, walk-ins, all or nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from audiences.attendance import AttendanceRefused, import_check_in
from flows.store import find_event, save_event
from promo.cli import app
from promo.db import session_scope
from promo.db.models import Contact, Registration
from promo.domain.event import load_event
from promo.errors import UserError
from tests.helpers import write_event

MSK = ZoneInfo("Europe/Moscow")
START = datetime(2026, 11, 20, 19, 0, tzinfo=MSK)
AFTER = START + timedelta(hours=3)
SLUG = "python-meetup-73"

CHECK_IN = "name,email\nAnna,anna@example.org\nVera,vera@example.org\nDmitry,dmitry@example.org\n"


@pytest.fixture
def event(store: Path) -> Path:
    """An event that has happened, two registrants (Anna, Boris) and a known non-registrant
    (Vera)."""
    path = write_event(store, START, slug=SLUG)
    with session_scope() as s:
        row = save_event(s, load_event(path), path)
        people = {name: Contact(name=name.capitalize(), email=f"{name}@example.org")
                  for name in ("anna", "boris", "vera")}
        s.add_all(people.values())
        s.flush()
        for name in ("anna", "boris"):
            s.add(Registration(event_id=row.id, contact_id=people[name].id,
                               registered_at=START - timedelta(days=3), source="test"))
    return store


def state() -> dict[str, tuple[bool | None, bool]]:
    """email -> (attended, walk_in) for the event's registrations."""
    with session_scope() as s:
        row = find_event(s, SLUG)
        return {email: (attended, walk_in) for email, attended, walk_in in s.execute(
            select(Contact.email, Registration.attended, Registration.walk_in)
            .join(Contact, Contact.id == Registration.contact_id)
            .where(Registration.event_id == row.id))}


def run(path: Path, **kwargs):
    with session_scope() as s:
        return import_check_in(s, path, find_event(s, SLUG), now=kwargs.pop("now", AFTER),
                               **kwargs)


def test_a_check_in_list_marks_who_came_and_records_walk_ins(event: Path) -> None:
    path = event / "check-in.csv"
    path.write_text(CHECK_IN, encoding="utf-8")
    report = run(path)
    assert report.applied and report.came == 3
    assert report.registrants_marked == 1  # Anna
    assert report.walk_ins == 2 and report.new_contacts == 1  # Vera, and Dmitry nobody knew
    assert report.no_shows_marked == 1  # Boris: registered, on no list
    assert state() == {"anna@example.org": (True, False), "boris@example.org": (False, False),
                       "vera@example.org": (True, True), "dmitry@example.org": (True, True)}
    with session_scope() as s:
        walk_in_at = s.scalar(select(Registration.registered_at).where(Registration.walk_in))
    assert walk_in_at == START


def test_the_same_list_again_changes_nothing(event: Path) -> None:
    path = event / "check-in.csv"
    path.write_text(CHECK_IN, encoding="utf-8")
    run(path)
    before = state()
    again = run(path)
    assert again.registrants_marked == 0 and again.walk_ins == 0 and again.new_contacts == 0
    assert again.registrants_already_marked == 1 and again.walk_ins_already == 2
    assert again.no_shows_marked == 0
    assert state() == before
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Contact)) == 4


def test_a_second_door_marks_its_people_as_come(event: Path) -> None:
    first = event / "door-1.csv"
    first.write_text("email\nanna@example.org\n", encoding="utf-8")
    second = event / "door-2.csv"
    second.write_text("email\nboris@example.org\n", encoding="utf-8")
    run(first)
    assert state()["boris@example.org"] == (False, False)
    run(second)
    assert state()["boris@example.org"] == (True, False)


def test_a_bad_row_is_named_and_nothing_changes(event: Path) -> None:
    path = event / "check-in.csv"
    path.write_text("name,email\nAnna,anna@example.org\nVera,vera-at-example\n", encoding="utf-8")
    before = state()
    with pytest.raises(AttendanceRefused) as refused:
        run(path)
    assert f"{path}:3: email:" in str(refused.value)
    assert "nothing was imported" in str(refused.value)
    assert state() == before


def test_a_dry_run_counts_and_writes_nothing(event: Path) -> None:
    path = event / "check-in.csv"
    path.write_text(CHECK_IN, encoding="utf-8")
    before = state()
    with session_scope() as s:
        report = import_check_in(s, path, find_event(s, SLUG), now=AFTER, dry_run=True)
        s.rollback()
    assert report.registrants_marked == 1 and report.walk_ins == 2 and not report.applied
    assert state() == before


def test_a_list_for_an_event_days_away_is_refused(event: Path) -> None:
    path = event / "check-in.csv"
    path.write_text(CHECK_IN, encoding="utf-8")
    with pytest.raises(UserError, match="at the door"):
        run(path, now=START - timedelta(days=2))


def test_the_command(event: Path) -> None:
    path = event / "check-in.csv"
    path.write_text(CHECK_IN, encoding="utf-8")
    runner = CliRunner()
    dry = runner.invoke(app, ["attendance", "import", str(path), "--event", SLUG, "--dry-run",
                              "--now", AFTER.isoformat(), "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["walk_ins"] == 2
    assert state()["anna@example.org"] == (None, False)
    done = runner.invoke(app, ["attendance", "import", str(path), "--event", SLUG,
                               "--now", AFTER.isoformat()])
    assert done.exit_code == 0, done.output
    assert "walk-ins (came without registering): 2" in done.stdout
    assert state()["anna@example.org"] == (True, False)
    bad = event / "bad.csv"
    bad.write_text("email\nnot-an-email\n", encoding="utf-8")
    refused = runner.invoke(app, ["attendance", "import", str(bad), "--event", SLUG,
                                  "--now", AFTER.isoformat()])
    assert refused.exit_code == 2
    assert f"{bad}:2: email:" in refused.output
