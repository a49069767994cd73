"""The Telegram adapters through the real `python-telegram-bot` against a fake Bot API."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from channels.telegram import TelegramChannelPost, TelegramDirect
from tests.fakes import FakeTelegram
from tests.fakes.harness import CLIENT_TIMEOUT, SLOW, deliver_one, fast, message, outcome

TOKEN = "987654:telegram-test-token"
BLOCKED, UNKNOWN = 5001, 5002


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram(TOKEN, blocked={BLOCKED}, unknown={UNKNOWN},
                      channels={"@pymeetup": -1009876543210}) as f:
        yield f


def direct(fake: FakeTelegram, token: str = TOKEN) -> TelegramDirect:
    return TelegramDirect(token, base_url=fake.url + "/bot", timeout=CLIENT_TIMEOUT)


def channel_post(fake: FakeTelegram, channel: str = "@pymeetup") -> TelegramChannelPost:
    return TelegramChannelPost(TOKEN, channel=channel, base_url=fake.url + "/bot",
                               timeout=CLIENT_TIMEOUT)


CASES = [
    ("success", None, {}, "sent", 1, 1),
    ("blocked the bot: 403 Forbidden", None, {"address": str(BLOCKED)}, "unreachable", 1, 0),
    ("chat not found: 400", None, {"address": str(UNKNOWN)}, "unreachable", 1, 0),
    ("not a chat id: never sent", None, {"address": "@someone"}, "unreachable", 0, 0),
    ("wrong token: 401", None, {"token": "987654:wrong"}, "configuration", 1, 0),
    ("429 with retry_after", ("rate_limit", 1, {"retry_after": 3}), {}, "sent", 2, 1),
    ("429 without a hint", ("rate_limit", 1, {}), {}, "sent", 2, 1),
    ("5xx twice, then sent", ("error", 2, {"status": 502}), {}, "sent", 3, 1),
    ("timeout after arriving", ("slow", 1, {"delay": SLOW}), {}, "uncertain", 1, 1),
    ("connection reset", ("reset", 1, {}), {}, "uncertain", 1, 0),
]


@pytest.mark.parametrize(("fault", "change", "expected", "requests", "accepted"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_telegram_outcomes(fake: FakeTelegram, fault, change, expected, requests,
                           accepted) -> None:
    change = dict(change)
    channel = direct(fake, token=change.pop("token", TOKEN))
    waits = fast(channel)
    if fault:
        kind, times, params = fault
        fake.fail(kind, times, **params)
    try:
        assert deliver_one(channel, message(1, "telegram", change.pop("address", "4001"))) == expected
    finally:
        channel.close()
    assert len(fake.requests) == requests
    assert len(fake.received) == accepted
    if fault and fault[0] == "rate_limit":
        hint = fault[2].get("retry_after")
        assert waits.seconds[0] == hint if hint else waits.seconds[0] < 1.0


def test_telegram_messages_go_concurrently_through_one_bot(fake: FakeTelegram) -> None:
    channel = direct(fake)
    channel.concurrency = 4
    results = channel.deliver([message(i, "telegram", str(4000 + i)) for i in range(1, 21)])
    channel.close()
    assert all(r.ok for r in results)
    assert sorted(r["chat_id"] for r in fake.received) == list(range(4001, 4021))
    assert results[0].provider_message_id.startswith("4001:")


def test_telegram_channel_post(fake: FakeTelegram) -> None:
    channel = channel_post(fake)
    [result] = channel.deliver([message(1, "telegram_channel", None, text="Анонс: встреча #74")])
    channel.close()
    [post] = fake.received
    assert post["chat"] == "@pymeetup" and post["text"] == "Анонс: встреча #74"
    assert result.provider_message_id == f"-1009876543210:{post['message_id']}"


def test_telegram_channel_unknown_fails_without_marking_anyone(fake: FakeTelegram) -> None:
    channel = channel_post(fake, channel="@not_ours")
    [result] = channel.deliver([message(1, "telegram_channel", None)])
    channel.close()
    assert outcome(result) == "failed"  # a post has no contact to mark unreachable


def test_the_bot_token_stays_out_of_logs_and_errors(fake: FakeTelegram,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    channel = direct(fake)
    fast(channel)
    fake.fail("error", status=502)
    results = channel.deliver([message(1, "telegram", str(BLOCKED)), message(2, "telegram", "7")])
    channel.close()
    assert [outcome(r) for r in results] == ["unreachable", "sent"]
    assert any("sendMessage" in r.getMessage() for r in caplog.records)  # httpx logged them
    assert TOKEN not in caplog.text
    assert all(TOKEN not in str(r.error) for r in results if r.error)


def test_closing_the_adapter_closes_its_http_connections() -> None:
    """An uninitialized Bot's shutdown() closes nothing: the adapter closes its clients."""
    from channels.telegram import _BotLoop

    loop = _BotLoop("123:abc", "http://127.0.0.1:9/bot", 2, 4)

    async def the_bot(bot):
        return bot

    bot = loop.run(the_bot)
    loop.close()
    assert [r._client.is_closed for r in bot._request] == [True, True]
