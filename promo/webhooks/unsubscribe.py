"""Unsubscribe links: `{public_url}/unsubscribe/<token>`, one per contact and channel.

GET shows a small page in the contact's language with one button; it changes nothing,
because mail scanners and link previews open links nobody clicked. POST withdraws the
consent: the page's button, and the RFC 8058 one-click POST a mail client sends when
the message carries `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. The token is
signed (`promo.tokens`, with `secret_key`) and never expires; a tampered or foreign
token changes nothing and the page says so.
"""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from audiences.contacts import set_digest
from audiences.segments import ADDRESS_FIELD
from promo.db import session_scope
from promo.db.models import Consent, Contact, utcnow
from promo.domain.names import DIGEST
from promo.settings import Settings
from promo.tokens import read_unsubscribe_token
from promo.webhooks.consent import opt_out, standing
from promo.webhooks.http import log, settings_of
from promo.webhooks.store import dedupe_key, record_once, set_normalized

PROVIDER = "unsubscribe"

CHANNEL_NAMES = {
    "ru": {"email": "по электронной почте", "sms": "в SMS", "voice": "звонками",
           "vk": "во ВКонтакте", "telegram": "в Telegram"},
    "en": {"email": "by email", "sms": "by SMS", "voice": "by phone calls",
           "vk": "on VK", "telegram": "on Telegram"},
}
TEXTS = {
    "ru": {
        "title": "Отписка",
        "confirm": "Больше не получать приглашения на мероприятия {channel}?",
        "button": "Отписаться",
        "done": "Готово: приглашения {channel} больше не придут.",
        "already": "Вы уже отписаны: приглашения {channel} не приходят.",
        "gone": "Ваших данных у нас больше нет: писать вам некому.",
    },
    "en": {
        "title": "Unsubscribe",
        "confirm": "Stop receiving event invitations {channel}?",
        "button": "Unsubscribe",
        "done": "Done: you will receive no more invitations {channel}.",
        "already": "You are already unsubscribed: no invitations come {channel}.",
        "gone": "We no longer hold your details: there is nobody to write to.",
    },
}
INVALID = ("Ссылка недействительна: ничего не изменено. / "
           "This link is not valid: nothing was changed.")


def _language(contact: Contact | None, settings: Settings) -> str:
    for lang in ((contact.language if contact else None), settings.default_language):
        if lang and lang.lower()[:2] in TEXTS:
            return lang.lower()[:2]
    return "en"


def _page(lang: str, text: str, *, button: str | None = None, status: int = 200,
          form: str = "") -> HTMLResponse:
    if button:
        # posts to the same URL: the token stays in the path
        form = (f'<form method="post"><button type="submit" name="confirm" '
                f'value="yes">{escape(button)}</button></form>')
    title = escape(TEXTS.get(lang, TEXTS["en"])["title"])
    html = (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="robots" content="noindex"><title>{title}</title></head>'
            f'<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">'
            f'<p>{escape(text)}</p>{form}</body></html>')
    return HTMLResponse(html, status_code=status)


def read_token(settings: Settings, token: str) -> tuple[int, str] | None:
    found = read_unsubscribe_token(settings, token)
    if found is None or (found[1] not in ADDRESS_FIELD and found[1] != DIGEST):
        return None
    return found


# the digest's own link (`DIGEST` in the token): one click ends the digest only; the page
# also offers everything (the digest and every event invitation by email)
DIGEST_TEXTS = {
    "ru": {"confirm": "Отписаться от ежемесячного дайджеста? Приглашения на встречи "
                      "продолжат приходить, если вы не выберете «от всего».",
           "button": "Только от дайджеста", "everything": "От всего",
           "done": "Готово: дайджест больше не придёт; приглашения на встречи приходят как прежде.",
           "done_all": "Готово: ни дайджест, ни приглашения по электронной почте больше не придут.",
           "already": "Вы уже отписаны от дайджеста."},
    "en": {"confirm": "Unsubscribe from the monthly digest? Event invitations keep coming "
                      "unless you choose \"everything\".",
           "button": "Only the digest", "everything": "Everything",
           "done": "Done: no more digests; event invitations come as before.",
           "done_all": "Done: neither the digest nor event invitations by email will come.",
           "already": "You are already unsubscribed from the digest."},
}


def digest_page(lang: str, state: str) -> HTMLResponse:
    texts = DIGEST_TEXTS[lang]
    if state != "confirm":
        return _page(lang, TEXTS[lang]["gone"] if state == "gone" else texts[state])
    form = "".join(
        f'<button type="submit" name="scope" value="{value}">{escape(label)}</button> '
        for value, label in (("digest", texts["button"]), ("everything", texts["everything"])))
    return _page(lang, texts["confirm"], form=f'<form method="post">{form}</form>')


def digest_show(settings: Settings, contact_id: int) -> tuple[str, str]:
    with session_scope(settings.database_url) as s:
        contact = s.get(Contact, contact_id)
        if contact is None:
            return _language(None, settings), "gone"
        return _language(contact, settings), "already" if contact.digest is False else "confirm"


def digest_withdraw(settings: Settings, contact_id: int, everything: bool,
                    one_click: bool) -> tuple[str, str]:
    """The digest subscription off (and, asked for, the email consent too): `done`,
    `done_all` or `gone`. Doing it again changes nothing."""
    now = utcnow()
    with session_scope(settings.database_url) as s:
        contact = s.get(Contact, contact_id)
        if contact is None:
            return _language(None, settings), "gone"
        lang = _language(contact, settings)
        source = "digest unsubscribe link" + (" (one-click)" if one_click else "")
        if contact.digest is not False:
            set_digest(contact, False, source, now)
        if everything:
            opt_out(s, contact, "email", source + ": everything", now)
        return lang, "done_all" if everything else "done"


def show(settings: Settings, contact_id: int, channel: str) -> tuple[str, str]:
    """(language, state) for the GET page: state is `confirm`, `already` or `gone`."""
    with session_scope(settings.database_url) as s:
        contact = s.get(Contact, contact_id)
        if contact is None:
            return _language(None, settings), "gone"
        state = "already" if standing(s, contact, channel) == "opted out" else "confirm"
        return _language(contact, settings), state


def withdraw(settings: Settings, contact_id: int, channel: str, one_click: bool) -> tuple[str, str]:
    """(language, state) after the POST: `done` or `gone`.

    The event is recorded once per consent: clicking again, or a mail client posting
    twice, changes nothing; after the person subscribes again (a newer consent) the
    same link works again.
    """
    now = utcnow()
    with session_scope(settings.database_url) as s:
        contact = s.get(Contact, contact_id)
        if contact is None:
            return _language(None, settings), "gone"
        lang = _language(contact, settings)
        row = s.get(Consent, (contact_id, channel))
        granted = row.granted_at.isoformat() if row and row.granted_at else "never"
        key = dedupe_key(PROVIDER, contact_id, channel, granted)
        raw: dict[str, Any] = {"contact_id": contact_id, "channel": channel,
                               "method": "one-click" if one_click else "page"}
        if not record_once(s, PROVIDER, key, raw):
            return lang, "done"
        source = "unsubscribe link" + (" (one-click)" if one_click else "")
        changed = opt_out(s, contact, channel, source, now)
        set_normalized(s, key, {"kind": "consent", "channel": channel, "action": "opt_out",
                                "contact_id": contact_id, "changed": changed})
        return lang, "done"


async def unsubscribe(request: Request) -> Response:
    settings = settings_of(request)
    found = read_token(settings, request.path_params["token"])
    if found is None:
        log.warning("unsubscribe: a tampered or foreign token")
        return _page("ru", INVALID, status=403)
    contact_id, channel = found
    if channel == DIGEST:
        if request.method == "GET":
            lang, state = await run_in_threadpool(digest_show, settings, contact_id)
        else:
            body = (await request.body()).decode("utf-8", "replace")
            lang, state = await run_in_threadpool(
                digest_withdraw, settings, contact_id, "scope=everything" in body,
                "List-Unsubscribe=One-Click" in body)
        return digest_page(lang, state)
    if request.method == "GET":
        lang, state = await run_in_threadpool(show, settings, contact_id, channel)
    else:
        body = (await request.body()).decode("utf-8", "replace")
        one_click = "List-Unsubscribe=One-Click" in body
        lang, state = await run_in_threadpool(withdraw, settings, contact_id, channel, one_click)
    texts = TEXTS[lang]
    text = texts[state].format(channel=CHANNEL_NAMES[lang][channel])
    return _page(lang, text, button=texts["button"] if state == "confirm" else None)
