"""The outbox's email files: written in one pass, byte for byte what `EmailMessage` writes;
a wave past `outbox_eml_limit` in one mailbox file."""

from __future__ import annotations

import email
import mailbox
from datetime import datetime, timedelta
from email import policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select

from channels.base import OutgoingMessage
from channels.outbox import OutboxChannel, _fast_eml, eml_bytes, eml_message
from flows.send import send_batch
from flows.store import save_event
from flows.wave import due_batches, prepare_wave
from promo.db import session_scope
from promo.db.models import Consent, Contact, ContactTopic, Message
from promo.domain.event import load_event
from promo.settings import get_settings, reset_settings
from tests.helpers import write_event

ICS = ("python-meetup-74.ics", "text/calendar",
       b"BEGIN:VCALENDAR\r\nSUMMARY:" + "Встреча".encode() * 200 + b"\r\nEND:VCALENDAR\r\n")
HEADERS = {"List-Unsubscribe": "<http://127.0.0.1:8000/unsubscribe/WzEsImVtYWlsIl0.abc>",
           "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
FROM = "Moscow Python <events@example.org>"
DATE = "Mon, 30 Nov 2026 09:54:39 -0000"
MSGID = "<179603247978.24912.18407772135167214481@event-promo.local>"
BOUNDARIES = ("===============1111111111111111111==", "===============2222222222222222222==")


def message(**kw) -> OutgoingMessage:
    fields = {"id": 1, "key": "python-meetup-74/announce/1/email", "channel": "email",
              "address": "guest1@example.org", "language": "ru",
              "subject": "Moscow Python Meetup #74: четверг, 18 марта, 19:00",
              "text": "Анна, здравствуйте!\n\nFrom the organizers: приходите.",
              "html": "<p>Здравствуйте, <b>Анна</b>!</p>\n<p>x</p>", "headers": HEADERS,
              "attachments": [ICS], "event_slug": "python-meetup-74", "wave": "announce"}
    return OutgoingMessage(**{**fields, **kw})


SHAPES = {
    "text, html and the invitation": {},
    "text only": {"html": None, "attachments": []},
    "text and html": {"attachments": []},
    "text and the invitation": {"html": None},
    "an ASCII subject and text": {"subject": "Meetup #74", "text": "Hello\nworld"},
    "no unsubscribe headers": {"headers": {}},
}
# what the one-pass writer leaves to EmailMessage: it would have to encode or fold them
ODD = {
    "a line over 998 bytes": {"text": "Привет " * 200},
    "a non-ASCII address": {"address": "анна@пример.рф"},
    "an encoded-word look-alike": {"headers": {"X-Note": "=?utf-8?q?x?="}},
    "a header value too long for one line": {"headers": {"List-Unsubscribe": "<" + "a" * 1200 + ">"}},
    "an empty subject": {"subject": None},
}


@pytest.mark.parametrize("shape", [*SHAPES, *ODD])
def test_an_eml_is_byte_for_byte_what_email_message_writes(shape: str) -> None:
    m = message(**{**SHAPES, **ODD}[shape])
    reference = bytes(eml_message(m, FROM, DATE, MSGID, BOUNDARIES))
    assert eml_bytes(m, FROM, DATE, MSGID, BOUNDARIES) == reference
    if shape in SHAPES:  # written in one pass, not through EmailMessage
        assert _fast_eml(m, FROM, DATE, MSGID, BOUNDARIES) == reference
    parsed = email.message_from_bytes(reference, policy=policy.default)
    assert parsed["X-Promo-Key"] == m.key
    assert parsed.get_body(("plain",)).get_content().rstrip("\n") == m.text


def test_a_file_per_email_below_the_limit_one_mailbox_above(tmp_path: Path) -> None:
    """Separate waves: the large one in its `.mbox` (read back by Python's `mailbox`, each
    message whole, a text line "From ..." escaped), the other as `.eml` files."""
    outbox = OutboxChannel("email", tmp_path, FROM,
                           mailbox_waves={("python-meetup-74", "announce")})
    big = [message(id=i, key=f"python-meetup-74/announce/{i}/email",
                   address=f"guest{i}@example.org") for i in range(1, 6)]
    small = [message(id=9, key="python-meetup-74/reminder/9/email", wave="reminder")]
    results = outbox.send_batch([big[0], small[0], *big[1:]])
    assert [r.message_id for r in results] == [1, 9, 2, 3, 4, 5] and all(r.ok for r in results)
    files = sorted(p.name for p in (tmp_path / "email").iterdir())
    assert files == ["python-meetup-74_announce.mbox",
                     "python-meetup-74_reminder_9_email.eml"]
    box = mailbox.mbox(tmp_path / "email" / "python-meetup-74_announce.mbox")
    got = {m["X-Promo-Key"]: m for m in box}
    assert sorted(got) == sorted(m.key for m in big)
    for m in big:
        parsed = email.message_from_bytes(got[m.key].as_bytes(), policy=policy.default)
        assert parsed["To"] == m.address
        assert parsed["Subject"] == m.subject
        assert parsed["List-Unsubscribe"] == HEADERS["List-Unsubscribe"]
        # mboxrd: the text's "From the organizers" line is kept from starting a message
        assert parsed.get_body(("plain",)).get_content().rstrip("\n") == \
            m.text.replace("\nFrom ", "\n>From ")
        assert parsed.get_body(("html",)).get_content().rstrip("\n") == m.html
        ics = next(p for p in parsed.iter_attachments())
        assert ics.get_filename() == ICS[0] and ics.get_payload(decode=True) == ICS[2]
    outbox.send_batch(big[:2])  # appended, not overwritten
    assert len(mailbox.mbox(tmp_path / "email" / "python-meetup-74_announce.mbox")) == 7


MSK = ZoneInfo("Europe/Moscow")
START = datetime(2027, 3, 18, 19, 0, tzinfo=MSK)
ANNOUNCE = START - timedelta(days=14) + timedelta(hours=-8)
CAMPAIGN = """\
campaign:
  announce: {channels: [email, telegram], mode: all}
  last_call: null
  reminder: null
"""


@pytest.mark.parametrize(("limit", "mailbox_file"), [(10, False), (9, True)])
def test_a_wave_past_the_limit_goes_into_one_mailbox(
        store: Path, monkeypatch: pytest.MonkeyPatch, limit: int, mailbox_file: bool) -> None:
    monkeypatch.setenv("PROMO_OUTBOX_EML_LIMIT", str(limit))
    reset_settings()
    path = write_event(store, START, extra=CAMPAIGN)
    with session_scope() as s:
        save_event(s, load_event(path), path)
        s.execute(insert(Contact), [{"id": i, "name": f"Гость {i}", "language": "ru",
                                     "timezone": "Europe/Moscow", "email": f"g{i}@example.org",
                                     "telegram_chat_id": 1000 + i} for i in range(1, 11)])
        s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"}
                                         for i in range(1, 11)])
        s.execute(insert(Consent), [{"contact_id": i, "channel": ch, "granted_source": "test",
                                     "granted_at": START - timedelta(days=90)}
                                    for i in range(1, 11) for ch in ("email", "telegram")])
    settings = get_settings()
    prepare_wave("python-meetup-74", "announce", ANNOUNCE, settings)
    for _, ids in due_batches("python-meetup-74", "announce", ANNOUNCE, settings):
        send_batch(ids, ANNOUNCE, settings)
    with session_scope() as s:
        sent = dict(s.execute(select(Message.key, Message.status)).all())
    assert set(sent.values()) == {"sent"} and len(sent) == 20
    folder = store / "outbox" / "email"
    if mailbox_file:  # ten emails, more than the limit of nine
        assert [p.name for p in folder.iterdir()] == ["python-meetup-74_announce.mbox"]
        keys = [m["X-Promo-Key"] for m in mailbox.mbox(folder / "python-meetup-74_announce.mbox")]
    else:
        keys = [email.message_from_bytes(p.read_bytes())["X-Promo-Key"]
                for p in folder.glob("*.eml")]
    assert sorted(keys) == sorted(k for k in sent if k.endswith("/email"))
    # the other channels as always
    assert len((store / "outbox" / "telegram" / "python-meetup-74.jsonl")
               .read_text().splitlines()) == 10
