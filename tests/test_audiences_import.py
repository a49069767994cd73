"""Contact imports with real-world-shaped files: Excel's cp1251 and `;`, BOMs, tabs, quoted
values, Russian phone spellings, one person across several files, and every kind of bad row."""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from audiences.importer import ImportRefused, run_import
from promo.db import session_scope
from promo.db.models import Consent, Contact, ContactTopic

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def imp(path: Path, **kwargs):
    with session_scope() as s:
        return run_import(s, path, now=kwargs.pop("now", NOW), **kwargs)


def contacts() -> dict[str, Contact]:
    """Every stored contact by email, phone or chat id (whichever it has first)."""
    with session_scope() as s:
        rows = list(s.scalars(select(Contact)))
    return {str(c.email or c.phone or c.telegram_chat_id): c for c in rows}


def consents(contact_id: int) -> dict[str, Consent]:
    with session_scope() as s:
        return {c.channel: c for c in s.scalars(select(Consent).where(
            Consent.contact_id == contact_id))}


def topics(contact_id: int) -> set[str]:
    with session_scope() as s:
        return set(s.scalars(select(ContactTopic.topic).where(
            ContactTopic.contact_id == contact_id)))


def count() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Contact))


def test_a_cp1251_semicolon_sheet_from_excel(store: Path) -> None:
    report = imp(DATA / "contacts_meetup_cp1251.csv")
    assert (report.encoding, report.delimiter, report.format) == ("cp1251", ";", "generic")
    assert report.new == 4 and report.applied
    by = contacts()
    ivan = by["ivan.ivanov@example.ru"]
    assert ivan.name == "Иванов Иван"
    assert ivan.phone == "+79161234567"  # 8 (916) 123-45-67
    assert ivan.timezone == "Europe/Moscow"
    assert topics(ivan.id) == {"python", "data"}
    assert set(consents(ivan.id)) == {"email", "sms"}
    assert consents(ivan.id)["email"].granted_source == "import contacts_meetup_cp1251.csv:2"
    assert consents(ivan.id)["email"].granted_at == NOW
    anna = by["anna@example.ru"]
    assert anna.name == "Петрова; Анна"  # a quoted delimiter
    assert anna.vk_id == 12345
    assert by["serge@example.ru"].name == 'Сергей "Серж" Ким'  # doubled quotes
    alena = by["+79031112233"]
    assert alena.name == "Ёлкина Алёна" and alena.timezone == "Europe/Moscow"


def test_one_person_across_files_is_one_contact(store: Path) -> None:
    imp(DATA / "contacts_meetup_cp1251.csv")
    report = imp(DATA / "contacts_vk_bom.csv")
    assert (report.encoding, report.delimiter) == ("utf-8-sig", ",")
    # Иван by phone (+7 916 123 45 67), Анна by email in upper case (she had consented to vk
    # already: nothing new); Мария is new
    assert (report.new, report.merged, report.unchanged) == (1, 1, 1)
    by = contacts()
    ivan = by["ivan.ivanov@example.ru"]
    assert ivan.vk_id == 777001
    assert ivan.name == "Иванов Иван"  # a stored value is kept
    assert set(consents(ivan.id)) == {"email", "sms", "vk"}
    assert "vk" in consents(by["anna@example.ru"].id)

    report = imp(DATA / "contacts_telegram_tab.csv")
    assert report.delimiter == "\t"
    # the same chat twice in the file is one contact; Мария Соколова of the VK file has no
    # chat id stored, so nothing links her to the chat: a new contact, as the file says
    assert (report.new, report.duplicates) == (2, 1)
    chat = by_chat = {c.telegram_chat_id: c for c in contacts().values() if c.telegram_chat_id}
    assert topics(chat[500000001].id) == {"data", "python"}
    assert len(by_chat) == 2
    assert count() == 7

    again = imp(DATA / "contacts_vk_bom.csv")
    assert (again.new, again.merged, again.unchanged) == (0, 0, 3)
    assert count() == 7


def test_a_differing_address_is_kept_and_noted(store: Path) -> None:
    imp(DATA / "contacts_meetup_cp1251.csv")
    f = store / "update.csv"
    f.write_text("name,email,phone\nИван,ivan.ivanov@example.ru,+7 999 000 00 01\n")
    report = imp(f)
    assert report.unchanged == 1
    assert any(n.column == "phone" and "kept +79161234567" in n.reason for n in report.notes)
    assert contacts()["ivan.ivanov@example.ru"].phone == "+79161234567"


# (line, column, words of the reason) for every row of contacts_bad_rows.csv but the good ones
BAD_ROWS = [
    (3, "email", "not a valid email address"),
    (4, "email", "should have a period"),
    (5, "email", "display name"),
    (6, "email", "SPACE"),
    (7, "phone", "not a phone number"),
    (8, "phone", "too short"),
    (9, "phone", "not a valid phone number in RU"),
    (10, "vk_id", "screen name"),
    (11, "vk_id", "community"),
    (12, "telegram_chat_id", "username"),
    (13, "telegram_chat_id", "group or channel"),
    (14, "timezone", "not a known time zone"),
    (15, "timezone", "an offset"),
    (16, "language", "not a language code"),
    (17, "consent", "'fax' is not a channel"),
    (18, "consent", "consent to sms, but the row has no phone"),
    (19, "consent_at", "not a date"),
    (20, "consent_at", "in the future"),
    (21, "row", "no address"),
    (22, "row", "11 fields, the header has 10"),
    (23, "row", "2 fields, the header has 10"),
    (24, "row", "broken quoting"),
    (25, "name", "at most 200"),
    (26, "topics", "at most 64"),
    (27, "name", "control characters"),
    (28, "row", "two different people: email matches contact 1; phone matches contact 2"),
]


def _two_stored_people(store: Path) -> None:
    f = store / "stored.csv"
    f.write_text("name,email,phone\nАнна,anna@example.ru,\nОльга,olga@example.ru,8 926 555 44 33\n")
    imp(f)


def test_every_bad_row_is_reported_with_its_line_and_nothing_changes(store: Path) -> None:
    _two_stored_people(store)
    with pytest.raises(ImportRefused) as caught:
        imp(DATA / "contacts_bad_rows.csv")
    report = caught.value.report
    found = [(p.line, p.column, p.reason) for p in report.problems]
    for line, column, words in BAD_ROWS:
        assert any(ln == line and col == column and words in reason
                   for ln, col, reason in found), (line, column, words, found)
    assert {p.line for p in report.problems} == {line for line, _, _ in BAD_ROWS}
    message = str(caught.value)
    assert f"{DATA / 'contacts_bad_rows.csv'}:3: email: 'ivan@@example' is not a valid email " \
           f"address" in message
    assert "nothing was imported" in message and "--skip-invalid" in message
    assert count() == 2  # the good rows (2 and 29) were not imported either


def test_skip_invalid_imports_the_valid_rows(store: Path) -> None:
    _two_stored_people(store)
    report = imp(DATA / "contacts_bad_rows.csv", skip_invalid=True)
    assert report.new == 2 and report.invalid_rows == len(BAD_ROWS)
    assert {"maria.ivanova@example.org", "irina@example.org"} <= set(contacts())
    assert count() == 4


def test_dry_run_counts_and_changes_nothing(store: Path) -> None:
    imp(DATA / "contacts_meetup_cp1251.csv")
    report = imp(DATA / "contacts_vk_bom.csv", dry_run=True)
    assert (report.new, report.merged, report.unchanged, report.applied) == (1, 1, 1, False)
    assert count() == 4
    assert contacts()["ivan.ivanov@example.ru"].vk_id is None


def test_an_old_list_does_not_resubscribe_someone_who_opted_out(store: Path) -> None:
    from audiences.contacts import opt_out_everywhere, withdraw_consent

    imp(DATA / "contacts_meetup_cp1251.csv", now=NOW - timedelta(days=30))
    ivan = contacts()["ivan.ivanov@example.ru"]
    anna = contacts()["anna@example.ru"]
    with session_scope() as s:
        withdraw_consent(s, ivan.id, "email", source="unsubscribe link",
                         at=NOW - timedelta(days=10))
        opt_out_everywhere(s, anna.id, source="complaint", at=NOW - timedelta(days=10))
    report = imp(DATA / "contacts_meetup_cp1251.csv", consent=["email", "sms", "vk"])
    # Ivan's email; Anna's email, VK and SMS (opted out everywhere, older grants or none)
    assert report.opt_outs_kept == 4
    assert consents(ivan.id)["email"].granted_at == NOW - timedelta(days=30)
    assert "sms" not in consents(anna.id)  # not even a channel she never had

    # a consent the file dates after the opt-out is a new consent: it counts
    f = store / "resubscribed.csv"
    f.write_text("email,consent,consent_at\nivan.ivanov@example.ru,email,"
                 f"{(NOW - timedelta(days=1)):%d.%m.%Y %H:%M}\n")
    report = imp(f)
    assert report.consents_granted == 1
    email = consents(ivan.id)["email"]
    assert email.granted_at > email.withdrawn_at


def test_topic_and_consent_options_apply_to_every_row(store: Path) -> None:
    report = imp(DATA / "contacts_telegram_tab.csv", topics=["python-msk"], consent=["telegram,email"])
    assert report.new == 2
    for c in contacts().values():
        assert "python-msk" in topics(c.id)
        assert set(consents(c.id)) == {"telegram"}  # no email address: no email consent


def test_file_level_problems_are_user_errors(store: Path) -> None:
    from promo.errors import UserError

    f = store / "names.csv"
    f.write_text("Имя;Город\nИван;Москва\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"names.csv:1: no address column"):
        imp(f)
    empty = store / "empty.csv"
    empty.write_bytes(b"\xef\xbb\xbf\r\n")
    with pytest.raises(UserError, match="empty"):
        imp(empty)
    with pytest.raises(UserError, match="--consent: 'fax' is not a channel"):
        imp(DATA / "contacts_vk_bom.csv", consent=["fax"])
    with pytest.raises(UserError, match="cannot read"):
        imp(store / "missing.csv")


def test_excel_sep_line_and_utf16(store: Path) -> None:
    f = store / "excel.csv"
    f.write_bytes("sep=;\r\nname;email\r\nИван;ivan@example.org\r\n".encode("utf-16"))
    report = imp(f)
    assert (report.encoding, report.delimiter, report.new) == ("utf-16", ";", 1)


def test_cli_prints_every_problem_and_exits_2_without_a_traceback(
        store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from promo.cli import main

    bad = store / "contacts.csv"
    shutil.copy(DATA / "contacts_bad_rows.csv", bad)
    monkeypatch.setattr(sys, "argv", ["promo", "contacts", "import", str(bad)])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    lines = [ln.strip() for ln in out.err.splitlines()]
    assert f"{bad}:7: phone: 'позвонить вечером' is not a phone number" in lines
    # with no stored people, line 28 is a valid row
    assert sum(1 for ln in lines if ln.startswith(f"{bad}:")) == len(BAD_ROWS) - 1
    assert count() == 0

    monkeypatch.setattr(sys, "argv", ["promo", "contacts", "import", str(bad), "--skip-invalid",
                                      "--topic", "python"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    out = capsys.readouterr()
    assert "new contacts: 3" in out.out
    assert count() == 3


@pytest.mark.postgres
def test_the_same_imports_on_postgresql(pg_store: str) -> None:
    imp(DATA / "contacts_meetup_cp1251.csv")
    report = imp(DATA / "contacts_vk_bom.csv")
    assert (report.new, report.merged, report.unchanged) == (1, 1, 1)
    assert contacts()["ivan.ivanov@example.ru"].vk_id == 777001
    with pytest.raises(ImportRefused):
        imp(DATA / "contacts_bad_rows.csv")
    assert count() == 5
