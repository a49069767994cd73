"""Telegram: /start <token> links a chat and grants consent, /stop and blocking the bot
withdraw it; by webhook (secret token header) and by long polling against a local fake
Bot API server driven through python-telegram-bot."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from promo.settings import reset_settings
from promo.tokens import telegram_link, telegram_link_token
from promo.webhooks.telegram import poll
from tests.webhook_support import TELEGRAM_SECRET, World, add_contact, make_world

HEADERS = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
BOT_TOKEN = "123456:TEST-token"


@pytest.fixture
def world(store: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return make_world(store, monkeypatch)


def update(update_id: int, chat_id: int, text: str, chat_type: str = "private",
           language: str = "ru") -> dict:
    """A message update as the Bot API delivers it."""
    return {"update_id": update_id, "message": {
        "message_id": update_id + 100, "date": 1763700000,
        "from": {"id": chat_id, "is_bot": False, "first_name": "Анна",
                 "language_code": language},
        "chat": {"id": chat_id, "type": chat_type, "first_name": "Анна"},
        "text": text,
        "entities": [{"offset": 0, "length": len(text.split()[0]), "type": "bot_command"}],
    }}


def blocked(update_id: int, chat_id: int) -> dict:
    return {"update_id": update_id, "my_chat_member": {
        "chat": {"id": chat_id, "type": "private", "first_name": "Анна"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "Анна"},
        "date": 1763700000,
        "old_chat_member": {"user": {"id": 1, "is_bot": True, "first_name": "Promo"},
                            "status": "member"},
        "new_chat_member": {"user": {"id": 1, "is_bot": True, "first_name": "Promo"},
                            "status": "kicked", "until_date": 0},
    }}


def test_start_with_a_link_token_links_the_chat_and_grants_consent(world: World) -> None:
    new = add_contact("pavel@example.org", "+79161234573", None, None)
    link = telegram_link(world.settings, new)
    assert link == f"https://t.me/promo_test_bot?start={telegram_link_token(world.settings, new)}"
    assert world.next_wave(new)["telegram"] == ("suppressed", "no address")
    token = link.split("start=")[1]
    r = world.client.post("/telegram/webhook", json=update(1, 7007, f"/start {token}"),
                          headers=HEADERS)
    assert r.status_code == 200
    answer = r.json()  # the bot answers in the webhook's response
    assert answer["method"] == "sendMessage" and answer["chat_id"] == 7007
    assert "Готово" in answer["text"]
    assert world.contact(new).telegram_chat_id == 7007
    assert world.next_wave(new)["telegram"][0] == "planned"
    # delivered again: no second answer, nothing changes
    before = world.snapshot()
    r = world.client.post("/telegram/webhook", json=update(1, 7007, f"/start {token}"),
                          headers=HEADERS)
    assert (r.status_code, r.text) == (200, "ok")
    assert world.snapshot() == before


def test_stop_keeps_the_contact_out_of_the_next_wave_on_telegram(world: World) -> None:
    assert world.next_wave()["telegram"][0] == "planned"
    r = world.client.post("/telegram/webhook", json=update(2, 5001, "/stop"), headers=HEADERS)
    assert r.status_code == 200 and "отписаны" in r.json()["text"]
    plan = world.next_wave()
    assert plan["telegram"] == ("suppressed", "opted out")
    assert plan["email"][0] == "planned"
    assert world.consent("telegram").withdrawn_source == "Telegram: /stop"
    # /start in the same chat (no token needed: the chat is known) brings it back
    r = world.client.post("/telegram/webhook", json=update(3, 5001, "/start"), headers=HEADERS)
    assert "Готово" in r.json()["text"]
    assert world.next_wave()["telegram"][0] == "planned"


def test_blocking_the_bot_is_an_opt_out(world: World) -> None:
    r = world.client.post("/telegram/webhook", json=blocked(4, 5001), headers=HEADERS)
    assert (r.status_code, r.text) == (200, "ok")
    assert world.next_wave()["telegram"] == ("suppressed", "opted out")


def test_a_forged_link_token_links_nobody(world: World) -> None:
    new = add_contact("pavel@example.org", "+79161234573", None, None)
    before = world.snapshot()
    for n, token in enumerate((f"{new}-AAAAAAAAAAAAAAAAAAAAAA", "garbage",
                               telegram_link_token(world.settings, new)[:-1] + "x"), start=5):
        r = world.client.post("/telegram/webhook", json=update(n, 7007, f"/start {token}",
                                                               language="en"), headers=HEADERS)
        assert "not valid" in r.json()["text"]
    assert world.snapshot()[:4] == before[:4]
    assert world.contact(new).telegram_chat_id is None


def test_group_chats_and_other_messages_are_ignored(world: World) -> None:
    before = world.snapshot()
    for n, body in enumerate((update(8, -100123, "/stop", chat_type="group"),
                              update(9, 5001, "hello"), update(10, 5001, "/help")), start=1):
        r = world.client.post("/telegram/webhook", json=body, headers=HEADERS)
        assert (r.status_code, r.text) == (200, "ok")
    assert world.snapshot() == before


@pytest.mark.parametrize("header", [None, "", "guess", TELEGRAM_SECRET + "x"])
def test_updates_without_the_secret_token_are_refused(world: World, header: str | None) -> None:
    before = world.snapshot()
    headers = {} if header is None else {"X-Telegram-Bot-Api-Secret-Token": header}
    r = world.client.post("/telegram/webhook", json=update(11, 5001, "/stop"), headers=headers)
    assert r.status_code == 403
    assert world.snapshot() == before


# -- long polling ------------------------------------------------------------------------------


class FakeBotAPI:
    """The few Bot API methods the poller calls, with updates waiting to be fetched."""

    def __init__(self, updates: list[dict]) -> None:
        self.updates = updates
        self.calls: list[tuple[str, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    params = json.loads(raw or "{}")
                else:
                    params = {k: v[0] for k, v in parse_qs(raw).items()}
                method = self.path.rsplit("/", 1)[-1]
                fake.calls.append((method, params))
                body = json.dumps({"ok": True, "result": fake.answer(method, params)}).encode()
                # headers and body in one write: no delayed-ACK stall on loopback
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, method: str, params: dict) -> object:
        if method == "getMe":
            return {"id": 1, "is_bot": True, "first_name": "Promo", "username": "promo_test_bot"}
        if method == "getUpdates":
            offset = int(params.get("offset") or 0)
            return [u for u in self.updates if u["update_id"] >= offset]
        if method == "sendMessage":
            return {"message_id": 1, "date": 1763700000, "text": params.get("text"),
                    "chat": {"id": int(params["chat_id"]), "type": "private"}}
        return True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/bot"


@pytest.fixture
def fake_bot_api() -> Iterator[FakeBotAPI]:
    api = FakeBotAPI([])
    api.thread.start()
    yield api
    api.server.shutdown()
    api.server.server_close()


def test_poll_handles_start_and_stop_like_the_webhook(world: World, fake_bot_api: FakeBotAPI,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    new = add_contact("pavel@example.org", "+79161234573", None, None, language="en")
    token = telegram_link_token(world.settings, new)
    fake_bot_api.updates = [update(40, 7007, f"/start {token}", language="en"),
                            update(41, 5001, "/stop")]
    monkeypatch.setenv("PROMO_TELEGRAM_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("PROMO_TELEGRAM_BASE_URL", fake_bot_api.url)
    settings = reset_settings()
    assert asyncio.run(poll(settings, once=True)) == 2
    assert world.contact(new).telegram_chat_id == 7007
    assert world.next_wave(new)["telegram"][0] == "planned"
    assert world.next_wave()["telegram"] == ("suppressed", "opted out")
    sent = [(int(p["chat_id"]), p["text"]) for m, p in fake_bot_api.calls if m == "sendMessage"]
    assert [chat for chat, _ in sent] == [7007, 5001]
    assert sent[0][1].startswith("Done") and "отписаны" in sent[1][1]
    # the last getUpdates acknowledged both, and a second run handles nothing twice
    offsets = [int(p.get("offset") or 0) for m, p in fake_bot_api.calls if m == "getUpdates"]
    assert offsets[-1] == 42
    before = world.snapshot()
    fake_bot_api.updates = [update(41, 5001, "/stop")]  # redelivered by mistake
    assert asyncio.run(poll(settings, once=True)) == 1
    assert world.snapshot() == before


def test_poll_without_a_bot_token_says_so(world: World) -> None:
    from promo.errors import UserError

    with pytest.raises(UserError, match="telegram_bot_token"):
        asyncio.run(poll(world.settings, once=True))
