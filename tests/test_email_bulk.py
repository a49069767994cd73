"""An email wave of 20,000 contacts through the send step and the real SendGrid SDK against
the fake: a few requests of up to 1,000 personalizations, and every recipient gets exactly
the email that was rendered for them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select

from channels.sendgrid_email import SendGridEmail
from flows.send import send_batch
from flows.store import save_event
from flows.wave import due_batches, prepare_wave
from promo.db import session_scope
from promo.db.models import Consent, Contact, ContactTopic, Message
from promo.domain.event import load_event
from promo.settings import get_settings, reset_settings
from tests.fakes import FakeSendGrid
from tests.helpers import write_event

MSK = ZoneInfo("Europe/Moscow")
START = datetime(2027, 3, 18, 19, 0, tzinfo=MSK)
ANNOUNCE = START - timedelta(days=14) + timedelta(hours=-8)  # 14 days before, 11:00
CAMPAIGN = """\
campaign:
  announce: {channels: [email]}
  last_call: null
  reminder: null
"""
CONTACTS = 20_000
# (a contact without a name gets another text, "Здравствуйте!": a content of its own)
NAMES = ["Анна Иванова", "O'Brien & <Co>", "Мария-Луиза", "Kate", "Дмитрий"]


@pytest.fixture
def sendgrid(store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSendGrid]:
    with FakeSendGrid("SG.bulk-key") as fake:
        monkeypatch.setenv("PROMO_SENDGRID_API_KEY", "SG.bulk-key")
        monkeypatch.setenv("PROMO_SENDGRID_HOST", fake.url)
        monkeypatch.setenv("PROMO_EMAIL_FROM", "Moscow Python <events@example.org>")
        reset_settings()
        yield fake


def seed(folder: Path) -> None:
    path = write_event(folder, START, extra=CAMPAIGN)
    with session_scope() as s:
        save_event(s, load_event(path), path)
        s.execute(insert(Contact), [
            {"id": i, "name": NAMES[i % len(NAMES)], "language": "en" if i % 10 == 0 else "ru",
             "timezone": "Europe/Moscow", "email": f"guest{i}@example.org"}
            for i in range(1, CONTACTS + 1)])
        s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"}
                                         for i in range(1, CONTACTS + 1)])
        s.execute(insert(Consent), [
            {"contact_id": i, "channel": "email", "granted_at": START - timedelta(days=90),
             "granted_source": "test"} for i in range(1, CONTACTS + 1)])


def test_an_email_wave_of_20000_goes_in_at_most_100_requests(
        sendgrid: FakeSendGrid, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(store)
    rendered: dict[str, object] = {}  # address -> the email rendered for that recipient
    deliver = SendGridEmail.deliver

    def keep(self, messages):
        rendered.update((m.address, m) for m in messages)
        return deliver(self, messages)

    monkeypatch.setattr(SendGridEmail, "deliver", keep)
    settings = get_settings()
    prepare_wave("python-meetup-74", "announce", ANNOUNCE, settings)
    for _, ids in due_batches("python-meetup-74", "announce", ANNOUNCE, settings):
        send_batch(ids, ANNOUNCE, settings)

    # the send step's 40 batches of 500, each in two languages: 80 requests
    assert len(sendgrid.requests) <= 100
    assert len(rendered) == CONTACTS
    got = {m["to"][0]: m for m in sendgrid.received}
    assert len(sendgrid.received) == CONTACTS == len(got)  # each once
    for address, m in rendered.items():
        # what one request each carried: the rendered email itself
        mail = got[address]
        assert mail["subject"] == m.subject
        assert mail["content"] == {"text/plain": m.text, "text/html": m.html}
        assert mail["headers"] == m.headers
        assert mail["custom_args"] == {"promo_key": m.key, "promo_message_id": str(m.id)}
    # the per-recipient values were there to substitute: names and signed links differ
    assert "O&#39;Brien &amp; &lt;Co&gt;" in got["guest1@example.org"]["content"]["text/html"]
    assert got["guest1@example.org"]["headers"]["List-Unsubscribe"] != \
        got["guest7@example.org"]["headers"]["List-Unsubscribe"]
    with session_scope() as s:
        statuses = set(s.scalars(select(Message.status)))
    assert statuses == {"sent"}
