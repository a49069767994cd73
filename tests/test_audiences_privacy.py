"""What is stored about a person, and forgetting them: tombstones keep a later import from
bringing the person, or their consent, back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from audiences.importer import run_import
from audiences.privacy import forget, show
from flows.events import load_event
from flows.store import save_event
from promo.cli import app
from promo.db import session_scope
from promo.db.models import Consent, Contact, Message, Registration, Tombstone
from promo.errors import UserError
from tests.helpers import write_event

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def imp(path: Path, now: datetime = NOW, **kwargs):
    with session_scope() as s:
        return run_import(s, path, now=now, **kwargs)


def contact_count() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Contact))


@pytest.fixture
def ivan_with_history(store: Path) -> int:
    """Иван: imported, registered for a past meetup, and with one message in the ledger."""
    path = write_event(store, NOW - timedelta(days=10), slug="python-meetup-73")
    with session_scope() as s:
        event = save_event(s, load_event(path), path)
    imp(DATA / "contacts_meetup_cp1251.csv")
    with session_scope() as s:
        ivan = s.scalar(select(Contact).where(Contact.email == "ivan.ivanov@example.ru"))
        s.add(Registration(event_id=event.id, contact_id=ivan.id, registered_at=NOW,
                           attended=True, source="test"))
        s.add(Message(key=f"python-meetup-73/announce/{ivan.id}/email", event_id=event.id,
                      wave="announce", contact_id=ivan.id, channel="email", status="sent",
                      sent_at=NOW, decided_at=NOW))
        return ivan.id


def test_show_has_everything_stored_about_a_person(ivan_with_history: int) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["contacts", "show", "8 (916) 123-45-67", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["id"] == ivan_with_history
    assert data["name"] == "Иванов Иван" and data["email"] == "ivan.ivanov@example.ru"
    assert data["topics"] == ["data", "python"]
    email = next(c for c in data["consents"] if c["channel"] == "email")
    assert email["can_send"] and email["granted_source"] == "import contacts_meetup_cp1251.csv:2"
    voice = next(c for c in data["consents"] if c["channel"] == "voice")
    assert voice["why_not"] == "no consent"
    assert data["registrations"][0]["event"] == "python-meetup-73"
    assert data["messages"][0]["status"] == "sent"
    # by email and by id too; the table form prints the same person
    with session_scope() as s:
        assert show(s, "IVAN.IVANOV@example.ru")["id"] == ivan_with_history
        assert show(s, str(ivan_with_history))["phone"] == "+79161234567"
    table = runner.invoke(app, ["contacts", "show", "ivan.ivanov@example.ru"])
    assert table.exit_code == 0 and "Иванов Иван" in table.stdout


def test_forget_erases_and_a_later_import_does_not_resurrect(ivan_with_history: int,
                                                            store: Path) -> None:
    before = contact_count()
    runner = CliRunner()
    result = runner.invoke(app, ["contacts", "forget", "ivan.ivanov@example.ru", "--yes",
                                       "--now", NOW.isoformat()])
    assert result.exit_code == 0, result.output
    assert contact_count() == before - 1
    with session_scope() as s:
        assert s.get(Contact, ivan_with_history) is None
        assert s.scalar(select(func.count()).select_from(Consent).where(
            Consent.contact_id == ivan_with_history)) == 0
        assert s.scalar(select(func.count()).select_from(Registration)) == 0
        # the ledger keeps its row, without the person
        message = s.scalar(select(Message))
        assert message.contact_id is None and message.status == "sent"
        tombs = list(s.scalars(select(Tombstone)))
        assert {t.kind for t in tombs} == {"email", "phone"}
        # the store's keyed hash of each address, not a digest anyone could recompute
        import hashlib

        from audiences.privacy import address_hash, tombstone_key

        key = tombstone_key(s, create=False)
        addresses = {("email", "ivan.ivanov@example.ru"), ("phone", "+79161234567")}
        assert {t.address_hash for t in tombs} == {address_hash(key, k, v) for k, v in addresses}
        assert not {t.address_hash for t in tombs} & {
            hashlib.sha256(v.encode()).hexdigest() for _, v in addresses}
        with pytest.raises(UserError, match="no such contact"):
            show(s, "ivan.ivanov@example.ru")

    # the same sign-up sheet again, or another list with his phone: he stays forgotten
    report = imp(DATA / "contacts_meetup_cp1251.csv", now=NOW + timedelta(days=1))
    assert (report.forgotten, report.new, report.unchanged) == (1, 0, 3)
    report = imp(DATA / "contacts_vk_bom.csv", now=NOW + timedelta(days=1))
    assert report.forgotten == 1
    assert any("asked to be forgotten" in n.reason and n.line == 2 for n in report.notes)
    with session_scope() as s:
        assert s.scalar(select(Contact).where(Contact.phone == "+79161234567")) is None
        # a new contact never reuses the forgotten one's id (the ledger names contacts by id)
        assert max(s.scalars(select(Contact.id))) > ivan_with_history

    # a consent he gives anew, dated after the forgetting, brings him back
    f = store / "resubscribe.csv"
    f.write_text("name,email,consent,consent_at\nИван,ivan.ivanov@example.ru,email,"
                 f"{(NOW + timedelta(days=3)):%Y-%m-%d %H:%M}\n", encoding="utf-8")
    report = imp(f, now=NOW + timedelta(days=5))
    assert (report.new, report.forgotten) == (1, 0)


def test_forget_an_address_that_is_not_stored_yet(store: Path) -> None:
    with session_scope() as s:
        assert forget(s, "+7 916 765 43 21", now=NOW) == {"contact_id": None,
                                                          "tombstones": ["phone"]}
    report = imp(DATA / "contacts_meetup_cp1251.csv")
    assert report.forgotten == 1 and report.new == 3  # Анна Петрова's phone
    with session_scope() as s:
        with pytest.raises(UserError, match="no such contact"):
            forget(s, "12345")
        with pytest.raises(UserError, match="not a contact id, email or phone"):
            forget(s, "ivan@@example")


def test_list_json_is_every_contact(store: Path) -> None:
    imp(DATA / "contacts_meetup_cp1251.csv")
    result = CliRunner().invoke(app, ["contacts", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data) == 4
    alena = next(c for c in data if c["phone"] == "+79031112233")
    assert alena["reachable_on"] == ["sms"] and alena["topics"] == ["python"]
    go = json.loads(CliRunner().invoke(app, ["contacts", "list", "--json", "--topic", "go"]).stdout)
    assert [c["email"] for c in go] == ["serge@example.ru"]
