"""Bad CSV files are refused with `file:line: column: what`, through the real command, and a
refused import changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bad_input import run_promo, snapshot, within
from tests.helpers import write_event

GOOD = "email,name,telegram_chat_id,timezone\nanna@example.org,Анна,5001,Europe/Moscow\n"


def refused(store: Path, content: str | bytes, *args: str) -> str:
    path = store / "contacts.csv"
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    before = snapshot()
    result = run_promo("contacts", "import", str(path), *args)
    assert result.code == 2, result
    assert "Traceback" not in result.err
    assert snapshot() == before  # nothing imported
    return result.err


def test_a_quote_inside_an_unquoted_value_is_refused(store: Path) -> None:
    err = refused(store, 'email,name\nanna@example.org,Анна "Ника\nboris@example.org,"Борис"\n')
    assert 'contacts.csv:2: name: a quote (") inside a value that does not start with one' in err
    assert "contacts.csv:3" not in err  # a quoted value is fine


def test_quoted_values_with_doubled_quotes_and_delimiters_still_import(store: Path) -> None:
    path = store / "contacts.csv"
    path.write_text('email;name\nanna@example.org;"Анна ""Ника""; A"\n', encoding="utf-8")
    result = run_promo("contacts", "import", str(path))
    assert result.code == 0, result
    assert "new contacts: 1" in result.out


def test_a_nul_byte_in_the_header_is_refused_with_its_line(store: Path) -> None:
    err = refused(store, b"email,na\x00me\nanna@example.org,x\n")
    assert "contacts.csv:1: the header contains control characters" in err


def test_a_telegram_id_with_a_plus_is_refused(store: Path) -> None:
    err = refused(store, "email,telegram_chat_id\nanna@example.org,+5\n")
    assert "contacts.csv:2: telegram_chat_id: '+5' is not a Telegram chat id" in err
    err = refused(store, "email,telegram_chat_id\nanna@example.org,٥٥\n")
    assert "contacts.csv:2: telegram_chat_id:" in err


def test_a_header_cell_over_the_field_limit_is_reported(store: Path) -> None:
    err = refused(store, "email," + "n" * 140_000 + "\nanna@example.org,x\n")
    assert "contacts.csv:1: the header line cannot be read: field larger than field limit" in err


def test_a_time_zone_too_long_for_a_file_name_is_a_row_problem(store: Path) -> None:
    err = refused(store, "email,timezone\nanna@example.org,Europe/" + "x" * 300 + "\n")
    assert "contacts.csv:2: timezone: " in err and "is not a known time zone" in err


def test_registrations_for_an_unknown_event_name_the_file(store: Path) -> None:
    path = store / "registrations.csv"
    path.write_text(GOOD, encoding="utf-8")
    result = run_promo("registrations", "import", str(path), "--event", "no-such-event")
    assert result.code == 2
    assert result.err.startswith(f"error: {path}: --event no-such-event: no event")


CELLS = st.sampled_from([
    "anna@example.org", "not-an-email", "+79161234567", "+5", "5001", "-100123", "0",
    "99999999999999999999999", "Europe/Moscow", "Europe/" + "x" * 300, "+03:00", "ru", "xx-yy",
    "email|sms", "fax", "да", "maybe", "2026-11-20 10:00", "2999-01-01", "31.02.2026", "",
    'a"b', '"quoted"', '"unclosed', "\x00", "\x1b[31m", "x" * 1000, "id123", "https://vk.com/id5",
    "Анна", "=cmd|' /C calc'!A0", "\ufeff", "\r", ";", "\t",
]) | st.text(max_size=12)
HEADERS = st.lists(st.sampled_from([
    "email", "phone", "name", "telegram_chat_id", "vk_id", "timezone", "language", "topics",
    "consent", "consent_at", "registered_at", "attended", "status", "Email", "e-mail", "",
    "unknown", "na\x00me"]), min_size=1, max_size=6)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(header=HEADERS, rows=st.lists(st.lists(CELLS, max_size=7), max_size=5),
       delimiter=st.sampled_from([",", ";", "\t"]),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1251", "utf-16"]),
       registrations=st.booleans())
def test_any_csv_imports_or_is_refused_naming_the_file_and_changing_nothing(
        store: Path, header: list[str], rows: list[list[str]], delimiter: str, encoding: str,
        registrations: bool) -> None:
    text = "\n".join(delimiter.join(r) for r in [header, *rows]) + "\n"
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode("utf-8")
    path = store / "contacts.csv"
    path.write_bytes(data)
    if registrations and not (store / "python-meetup-74.yaml").exists():
        event = write_event(store, datetime.now(UTC) + timedelta(days=10))
        assert run_promo("events", "add", str(event)).code == 0
    args = (("registrations", "import", str(path), "--event", "python-meetup-74")
            if registrations else ("contacts", "import", str(path)))
    before = snapshot()
    with within(20):
        result = run_promo(*args)
    assert not result.crashed, result
    if result.code == 2:
        assert str(path) in result.err or "--" in result.err, result.err
        assert snapshot() == before


@pytest.mark.parametrize("data", [b"", b"\n\n\n", b"\xff\xfe\x00", b"PK\x03\x04\x00\x00binary",
                                  "email\n".encode("utf-16-le")])
def test_empty_binary_and_odd_files_are_refused_by_name(store: Path, data: bytes) -> None:
    assert "contacts.csv" in refused(store, data)
