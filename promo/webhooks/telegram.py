"""Telegram bot updates: `/start <token>` links a chat to a contact, `/stop` opts out.

By webhook: `setWebhook` with url `{public_url}/telegram/webhook` and `secret_token`
equal to `telegram_webhook_secret`; Telegram then sends that secret in the
`X-Telegram-Bot-Api-Secret-Token` header of every update. Where no public URL exists,
`promo telegram poll` fetches the same updates by long polling and handles them the
same way (`handle_update`).

The token comes from a link the organizer shares (`promo.tokens.telegram_link`,
`https://t.me/<bot>?start=<token>`, e.g. in an email): opening it starts the bot, which
learns the person's chat id and records their consent. Blocking the bot withdraws it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from audiences.contacts import find_contact
from promo.db import session_scope
from promo.db.models import Contact, utcnow
from promo.errors import UserError
from promo.secrets import reveal
from promo.settings import Settings
from promo.tokens import read_link_token
from promo.webhooks.consent import opt_in, opt_out
from promo.webhooks.http import as_dict, forbidden, json_body, settings_of
from promo.webhooks.store import body_digest, dedupe_key, record_once, set_normalized

PROVIDER = "telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ["message", "my_chat_member"]

log = logging.getLogger("promo.webhooks")

REPLIES = {
    "ru": {
        "linked": "Готово: приглашения на мероприятия будут приходить сюда. "
                  "Отписаться: /stop",
        "stopped": "Вы отписаны: приглашений здесь больше не будет. Подписаться снова: /start",
        "unknown": "Чтобы бот узнал вас, откройте ссылку на него из письма с приглашением.",
        "bad_token": "Эта ссылка недействительна. Откройте ссылку из последнего письма.",
    },
    "en": {
        "linked": "Done: event invitations will come here. To stop them: /stop",
        "stopped": "You are unsubscribed: no more invitations here. To subscribe again: /start",
        "unknown": "So that the bot knows you, open the link to it from an invitation email.",
        "bad_token": "This link is not valid. Open the link from the latest email.",
    },
}


def secret_ok(settings: Settings, headers: Any) -> bool:
    secret = settings.telegram_webhook_secret
    given = headers.get(SECRET_HEADER)
    if secret is None or not given:
        return False
    return hmac.compare_digest(given.encode(), (reveal(secret) or "").encode())


def _language(contact: Contact | None, sender: dict[str, Any], settings: Settings) -> str:
    for lang in (contact.language if contact else None, sender.get("language_code"),
                 settings.default_language):
        if lang and lang.lower()[:2] in REPLIES:
            return lang.lower()[:2]
    return "en"


def _command(message: dict[str, Any]) -> tuple[str, str] | None:
    """(`/start`, argument) for a bot command in a private chat, else None."""
    text = message.get("text")
    if not isinstance(text, str) or not text.startswith("/"):
        return None
    if as_dict(message.get("chat")).get("type") != "private":
        return None
    word, _, arg = text.strip().partition(" ")
    return word.split("@")[0].lower(), arg.strip()


def _link_chat(session: Any, contact: Contact, chat_id: int) -> None:
    """Give the chat to this contact; a chat is one person's, so whoever held it before
    (an earlier link opened in the same chat) lets go of it."""
    if contact.telegram_chat_id == chat_id:
        return
    holder = find_contact(session, "telegram_chat_id", chat_id)
    if holder is not None:
        holder.telegram_chat_id = None
        session.flush()
    contact.telegram_chat_id = chat_id
    session.flush()


def handle_update(settings: Settings, update: dict[str, Any]) -> dict[str, Any]:
    """Apply one update; `reply` is what the bot should answer (None: nothing)."""
    # a field of another shape than Telegram's is as good as absent
    message = as_dict(update.get("message"))
    member = as_dict(update.get("my_chat_member"))
    command = _command(message) if message else None
    blocked = as_dict(member.get("new_chat_member")).get("status") == "kicked"
    if command is None and not blocked:
        return {"outcome": "ignored", "reply": None}
    if command is not None and command[0] not in ("/start", "/stop"):
        return {"outcome": "ignored", "reply": None}
    chat_id = as_dict((message or member).get("chat")).get("id")
    sender = as_dict((message or member).get("from"))
    if not isinstance(chat_id, int) or isinstance(chat_id, bool):
        return {"outcome": "ignored", "reply": None}
    key = dedupe_key(PROVIDER, update.get("update_id", body_digest(update)))
    now = utcnow()
    with session_scope(settings.database_url) as s:
        if not record_once(s, PROVIDER, key, update):
            return {"outcome": "duplicate", "reply": None}  # the first delivery answered
        contact = find_contact(s, "telegram_chat_id", chat_id)
        changed = False
        if blocked:
            action, answer = "opt_out", None
            if contact is not None:
                changed = opt_out(s, contact, "telegram", "Telegram: blocked the bot", now)
        elif command[0] == "/stop":
            action, answer = "opt_out", "stopped"
            if contact is not None:
                changed = opt_out(s, contact, "telegram", "Telegram: /stop", now)
        else:
            action = "opt_in"
            token = command[1]
            if token:
                contact_id = read_link_token(settings, token, "telegram")
                linked = s.get(Contact, contact_id) if contact_id is not None else None
                if linked is not None:
                    _link_chat(s, linked, chat_id)
                    contact = linked
                else:
                    action, contact = None, None  # a forged or stale link changes nothing
            if contact is not None:
                changed = opt_in(s, contact, "telegram", "Telegram: /start", now)
                answer = "linked"
            else:
                answer = "bad_token" if token else "unknown"
        lang = _language(contact, sender, settings)
        normalized = {"kind": "consent", "channel": "telegram", "action": action,
                      "contact_id": contact.id if contact else None, "changed": changed}
        set_normalized(s, key, normalized)
    reply = {"chat_id": chat_id, "text": REPLIES[lang][answer]} if answer else None
    return {"outcome": "applied" if contact is not None else "unmatched", **normalized,
            "reply": reply}


async def webhook(request: Request) -> Response:
    settings = settings_of(request)
    if not secret_ok(settings, request.headers):
        return forbidden(PROVIDER, "an update with a missing or wrong secret token header")
    update = json_body(await request.body())
    if not isinstance(update, dict):
        return PlainTextResponse("not an update", status_code=400)
    result = await run_in_threadpool(handle_update, settings, update)
    if result.get("reply"):
        # Telegram runs a method given in the webhook's answer: no outgoing call needed
        return JSONResponse({"method": "sendMessage", **result["reply"]})
    return PlainTextResponse("ok")


async def poll(settings: Settings, *, once: bool = False, timeout: int = 30) -> int:
    """Handle updates by long polling until interrupted (`once`: what is waiting, then
    stop); returns how many updates were handled."""
    from telegram import Bot
    from telegram.error import Conflict, InvalidToken, TelegramError

    from channels.telegram import telegram_credentials

    creds = telegram_credentials(settings)
    if creds is None or creds.bot_token is None:
        raise UserError("telegram_bot_token is not set (PROMO_TELEGRAM_BOT_TOKEN): "
                        "the bot cannot fetch its updates")
    bot = Bot(reveal(creds.bot_token), base_url=creds.base_url)
    handled = 0
    offset: int | None = None
    try:
        async with bot:
            while True:
                updates = await bot.get_updates(offset=offset, timeout=0 if once else timeout,
                                                allowed_updates=ALLOWED_UPDATES)
                for update in updates:
                    result = await asyncio.to_thread(handle_update, settings, update.to_dict())
                    handled += 1
                    offset = update.update_id + 1
                    if result.get("reply"):
                        try:
                            await bot.send_message(**result["reply"])
                        except TelegramError as exc:  # e.g. blocked right after /stop
                            log.warning("telegram: could not answer an update: %s", exc)
                if once:
                    if offset is not None:  # tell Telegram these are done
                        await bot.get_updates(offset=offset, timeout=0,
                                              allowed_updates=ALLOWED_UPDATES)
                    return handled
    except Conflict:
        raise UserError("the bot has a webhook set, so Telegram will not hand out updates by "
                        "polling: remove it (deleteWebhook) or use the webhook") from None
    except InvalidToken:
        raise UserError("telegram_bot_token was refused by Telegram") from None
