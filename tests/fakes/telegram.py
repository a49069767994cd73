"""A fake Telegram Bot API: /bot<token>/sendMessage (and getMe).

Parameters come as a query string, form fields or JSON, as the Bot API accepts. Every
answer is `{"ok": true, "result": ...}` or `{"ok": false, "error_code", "description"}`
with the same HTTP status; a 429 carries `parameters.retry_after`. 403 "Forbidden: bot
was blocked by the user" for a chat that blocked the bot, 400 "Bad Request: chat not
found" for an unknown one, 401 for a wrong token.
"""

from __future__ import annotations

import time
from typing import Any

from tests.fakes.server import FakeProvider, Reply, Request, ceil_seconds


def tg_error(status: int, description: str, **parameters: Any) -> Reply:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Reply(status, body)


class FakeTelegram(FakeProvider):
    name = "telegram"

    def __init__(self, token: str = "123456:test-token", *, blocked: set[int] | None = None,
                 unknown: set[int] | None = None, channels: dict[str, int] | None = None,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.token = token
        self.blocked = set(blocked or ())
        self.unknown = set(unknown or ())
        # channels the bot may post to: "@name" -> its chat id
        self.channels = dict(channels or {"@promo_channel": -1001234567890})
        self._next_id = 0

    def _method(self, req: Request) -> tuple[str | None, str]:
        parts = req.path.strip("/").split("/")
        if len(parts) != 2 or not parts[0].startswith("bot"):
            return None, ""
        return parts[0][3:], parts[1]

    def sends(self, req: Request) -> bool:
        return self._method(req)[1] == "sendMessage"

    def account(self, req: Request) -> str:
        return "telegram"

    def rate_limit_reply(self, req: Request, retry_after: float | None) -> Reply:
        if retry_after is None:
            return tg_error(429, "Too Many Requests")
        seconds = ceil_seconds(retry_after)
        return tg_error(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)

    def error_reply(self, req: Request, status: int) -> Reply:
        return tg_error(status, "Internal Server Error" if status == 500 else "Bad Gateway")

    def handle(self, req: Request) -> Reply:
        token, method = self._method(req)
        if token is None:
            return tg_error(404, "Not Found")
        if token != self.token:
            return tg_error(401, "Unauthorized")
        params = req.form()
        if method == "getMe":
            return Reply(200, {"ok": True, "result": {
                "id": int(self.token.split(":")[0]), "is_bot": True, "first_name": "Promo",
                "username": "promo_test_bot"}})
        if method != "sendMessage":
            return tg_error(404, "Not Found: method not found")
        chat, text = params.get("chat_id", ""), params.get("text", "")
        if not chat:
            return tg_error(400, "Bad Request: chat_id is empty")
        if not text:
            return tg_error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return tg_error(400, "Bad Request: message is too long")
        if chat.startswith("@"):
            if chat not in self.channels:
                return tg_error(400, "Bad Request: chat not found")
            chat_obj = {"id": self.channels[chat], "type": "channel", "title": "Promo",
                        "username": chat[1:]}
        else:
            try:
                chat_id = int(chat)
            except ValueError:
                return tg_error(400, "Bad Request: chat not found")
            if chat_id in self.blocked:
                return tg_error(403, "Forbidden: bot was blocked by the user")
            if chat_id in self.unknown:
                return tg_error(400, "Bad Request: chat not found")
            if chat_id < 0:
                if chat_id not in self.channels.values():
                    return tg_error(400, "Bad Request: chat not found")
                chat_obj = {"id": chat_id, "type": "channel", "title": "Promo"}
            else:
                chat_obj = {"id": chat_id, "type": "private", "first_name": "Contact"}
        with self.lock:
            self._next_id += 1
            message_id = self._next_id
        self.record({"chat_id": chat_obj["id"], "chat": chat, "text": text,
                     "message_id": message_id, "parse_mode": params.get("parse_mode"),
                     "account": "telegram"})
        return Reply(200, {"ok": True, "result": {
            "message_id": message_id, "date": int(time.time()), "chat": chat_obj, "text": text}})
