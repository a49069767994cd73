"""Signed per-contact tokens: unsubscribe links, and links that tie a Telegram or VK chat to a contact."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from itsdangerous import BadSignature, URLSafeSerializer

from promo.secrets import reveal
from promo.settings import Settings


def _serializer(settings: Settings, salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(reveal(settings.secret_key) or "", salt=salt)


def unsubscribe_token(settings: Settings, contact_id: int, channel: str) -> str:
    return _serializer(settings, "unsubscribe").dumps([contact_id, channel])


def read_unsubscribe_token(settings: Settings, token: str) -> tuple[int, str] | None:
    """(contact id, channel), or None for a tampered or foreign token."""
    try:
        contact_id, channel = _serializer(settings, "unsubscribe").loads(token)
    except (BadSignature, ValueError, TypeError):
        return None
    return int(contact_id), str(channel)


def unsubscribe_url(settings: Settings, contact_id: int, channel: str) -> str:
    base = settings.public_url.rstrip("/")
    return f"{base}/unsubscribe/{unsubscribe_token(settings, contact_id, channel)}"


# Link tokens tie a chat to a contact: Telegram `/start <token>` (a t.me deep link, whose
# payload allows only A-Z a-z 0-9 _ - and 64 characters, hence no itsdangerous here) and
# the `key` of VK's "allow messages" widget. `<contact id>-<22 characters of HMAC-SHA256>`.
_LINK_TOKEN = re.compile(r"^(\d{1,19})-([A-Za-z0-9_-]{22})$")


def _link_mac(settings: Settings, contact_id: int, channel: str) -> str:
    key = (reveal(settings.secret_key) or "").encode()
    mac = hmac.new(key, f"link:{channel}:{contact_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:16]).decode().rstrip("=")


def link_token(settings: Settings, contact_id: int, channel: str) -> str:
    return f"{contact_id}-{_link_mac(settings, contact_id, channel)}"


def read_link_token(settings: Settings, token: str, channel: str) -> int | None:
    """The contact id, or None for a tampered, foreign or other channel's token."""
    m = _LINK_TOKEN.match(token.strip())
    if m is None:
        return None
    contact_id = int(m.group(1))
    if not hmac.compare_digest(m.group(2), _link_mac(settings, contact_id, channel)):
        return None
    return contact_id


def telegram_link_token(settings: Settings, contact_id: int) -> str:
    return link_token(settings, contact_id, "telegram")


def telegram_link(settings: Settings, contact_id: int) -> str | None:
    """`https://t.me/<bot>?start=<token>`: opening it starts the bot and links the chat."""
    if not settings.telegram_bot_username:
        return None
    bot = settings.telegram_bot_username.lstrip("@")
    return f"https://t.me/{bot}?start={telegram_link_token(settings, contact_id)}"
