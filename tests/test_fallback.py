"""Fallback does fall back: in a `fallback` wave, a permanent failure on one channel moves
the contact's wave to their next eligible channel, in the same run, under the same caps; and
`promo why` tells the story."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from flows.campaign import wave_flow
from flows.store import save_event
from promo.cli import app
from promo.db import session_scope
from promo.db.models import Consent, Contact, ContactTopic, Message
from promo.domain.event import load_event
from promo.settings import reset_settings
from tests.fakes import FakeTelegram
from tests.helpers import write_event

MSK = ZoneInfo("Europe/Moscow")
START = datetime(2027, 3, 18, 19, 0, tzinfo=MSK)
ANNOUNCE = START - timedelta(days=14) + timedelta(hours=-8)
BOT = "555888:fallback-bot"
CAMPAIGN = """\
campaign:
  announce: {channels: [telegram, email], mode: fallback}
  last_call: null
  reminder: null
"""


@pytest.fixture
def telegram(store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegram]:
    fake = FakeTelegram(BOT, blocked={700001, 700003}).start()
    monkeypatch.setenv("PROMO_TELEGRAM_BOT_TOKEN", BOT)
    monkeypatch.setenv("PROMO_TELEGRAM_BASE_URL", fake.url + "/bot")
    reset_settings()
    yield fake
    fake.stop()


def test_a_blocked_bot_moves_the_wave_to_the_next_channel(prefect_api: None, store: Path,
                                                          telegram: FakeTelegram) -> None:
    path = write_event(store, START, extra=CAMPAIGN)
    with session_scope() as s:
        event = save_event(s, load_event(path), path)
        event_id = event.id
        # 1 blocked the bot and has email; 2 gets Telegram; 3 blocked it and has no email
        s.execute(insert(Contact), [
            {"id": 1, "language": "ru", "telegram_chat_id": 700001, "email": "one@example.org"},
            {"id": 2, "language": "ru", "telegram_chat_id": 700002, "email": "two@example.org"},
            {"id": 3, "language": "ru", "telegram_chat_id": 700003},
        ])
        s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"} for i in (1, 2, 3)])
        s.execute(insert(Consent), [
            {"contact_id": i, "channel": ch, "granted_at": START - timedelta(days=90),
             "granted_source": "test"} for i in (1, 2, 3) for ch in ("telegram", "email")])
    wave_flow("python-meetup-74", "announce", ANNOUNCE.isoformat())
    with session_scope() as s:
        rows = {(m.contact_id, m.channel): (m.status, m.reason) for m in s.scalars(
            select(Message).where(Message.event_id == event_id))}
    assert rows[(1, "telegram")][0] == "failed"
    assert rows[(1, "email")] == (
        "sent", "telegram failed: Telegram: Forbidden: bot was blocked by the user -> sent by email")
    assert (2, "email") not in rows and rows[(2, "telegram")][0] == "sent"
    assert rows[(3, "telegram")][0] == "failed"
    assert rows[(3, "email")][0] == "suppressed"  # no address: nothing more to fall back to
    emails = list((store / "outbox" / "email").glob("*.eml"))
    assert len(emails) == 1 and "one@example.org" in emails[0].read_text()

    why = CliRunner().invoke(app, ["why", "1", "python-meetup-74",
                                   "--now", ANNOUNCE.isoformat()])
    assert why.exit_code == 0, why.output
    assert "telegram failed: Telegram: Forbidden: bot was blocked by the user -> sent by email" in \
        " ".join(why.output.split())
