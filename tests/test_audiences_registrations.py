"""Registration imports (Timepad, Meetup, generic) matched to contacts, with attendance; and the
segment of a promotional wave: topic followers and past attendees with a reachable channel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from audiences.importer import run_import
from audiences.segments import segment_size, wave_audience
from flows.store import find_event, save_event
from promo.db import session_scope
from promo.db.models import Consent, Contact, Registration
from promo.domain.event import load_event
from promo.errors import UserError
from tests.helpers import write_event

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def add_event(folder: Path, slug: str, starts_at: datetime) -> None:
    path = write_event(folder, starts_at, slug=slug)
    with session_scope() as s:
        save_event(s, load_event(path), path)


def imp(path: Path, slug: str | None = None, **kwargs):
    with session_scope() as s:
        event = find_event(s, slug) if slug else None
        return run_import(s, path, event=event, now=NOW, **kwargs)


def registrations(slug: str) -> dict[str, Registration]:
    with session_scope() as s:
        event = find_event(s, slug)
        q = (select(Contact.email, Registration).join(Contact, Contact.id == Registration.contact_id)
             .where(Registration.event_id == event.id))
        return {email: reg for email, reg in s.execute(q)}


def test_a_timepad_export_with_attendance(store: Path) -> None:
    add_event(store, "python-meetup-73", NOW - timedelta(days=10))
    imp(DATA / "contacts_meetup_cp1251.csv")  # Иван is known, by email and phone
    report = imp(DATA / "timepad_export_cp1251.csv", "python-meetup-73")
    assert (report.format, report.encoding, report.delimiter) == ("timepad", "cp1251", ";")
    assert report.cancelled == 1  # "Отменён"
    assert (report.new, report.merged + report.unchanged) == (2, 1)
    regs = registrations("python-meetup-73")
    assert set(regs) == {"ivan.ivanov@example.ru", "olga@example.ru", "tanya@example.ru"}
    assert regs["ivan.ivanov@example.ru"].attended is True
    assert regs["olga@example.ru"].attended is False
    assert regs["tanya@example.ru"].attended is True  # the status says "Посетил"
    # "Дата регистрации" in the event's time zone (Moscow, UTC+3)
    assert regs["ivan.ivanov@example.ru"].registered_at == datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    assert regs["olga@example.ru"].source == "import timepad_export_cp1251.csv (timepad)"
    with session_scope() as s:
        olga = s.scalar(select(Contact).where(Contact.email == "olga@example.ru"))
        assert olga.name == "Ольга Новикова" and olga.phone == "+79265554433"
        # registering implies no consent; the export's mailing-list box does
        channels = {c.email: {r.channel for r in s.scalars(select(Consent).where(
            Consent.contact_id == c.id))} for c in s.scalars(select(Contact))}
    assert channels["olga@example.ru"] == set()
    assert channels["tanya@example.ru"] == {"email"}

    # importing again after the event changes nothing and duplicates nobody
    again = imp(DATA / "timepad_export_cp1251.csv", "python-meetup-73")
    assert (again.new, again.registrations_new, again.registrations_updated) == (0, 0, 0)
    assert len(registrations("python-meetup-73")) == 3


def test_a_meetup_attendee_list(store: Path) -> None:
    add_event(store, "python-meetup-74", NOW + timedelta(days=10))
    report = imp(DATA / "meetup_attendees.csv", "python-meetup-74", consent=["email"])
    assert report.format == "meetup"
    assert report.cancelled == 1  # RSVP "No"
    regs = registrations("python-meetup-74")
    assert set(regs) == {"john@example.com", "kate@example.com", "bob@example.com"}
    assert (regs["john@example.com"].attended, regs["kate@example.com"].attended,
            regs["bob@example.com"].attended) == (True, False, None)
    assert report.consents_granted == 3


def test_registrations_need_a_stored_event(store: Path) -> None:
    with pytest.raises(UserError, match="promo events add"):
        imp(DATA / "meetup_attendees.csv", "no-such-event")


def test_dry_run_counts_registrations_without_storing(store: Path) -> None:
    add_event(store, "python-meetup-74", NOW + timedelta(days=10))
    report = imp(DATA / "meetup_attendees.csv", "python-meetup-74", dry_run=True)
    assert (report.new, report.registrations_new) == (3, 3)
    assert registrations("python-meetup-74") == {}


def test_the_segment_is_followers_and_past_attendees_with_a_reachable_channel(
        store: Path) -> None:
    add_event(store, "python-meetup-73", NOW - timedelta(days=10))
    add_event(store, "python-meetup-74", NOW + timedelta(days=10))
    # Иван (python, email+sms), Анна (python, email+vk), Серж (go), Алёна (python, sms only)
    imp(DATA / "contacts_meetup_cp1251.csv")
    # Ольга attended #73 (no topic of her own); Татьяна too, with email consent
    imp(DATA / "timepad_export_cp1251.csv", "python-meetup-73", consent=["email"])
    with session_scope() as s:
        event = find_event(s, "python-meetup-74")
        emails = {c.id: c.email or c.phone for c in s.scalars(select(Contact))}
        audience = {emails[i] for i in wave_audience(s, event, ["email", "vk"])}
        assert audience == {"ivan.ivanov@example.ru", "anna@example.ru", "tanya@example.ru"}
        # Ольга attended but gave no consent; Алёна can only be reached by SMS
        assert {emails[i] for i in wave_audience(s, event, ["sms"])} == {
            "ivan.ivanov@example.ru", "+79031112233"}
        assert segment_size(s, event, ["email", "sms", "vk"]) == 4
