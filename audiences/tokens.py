"""Signed per-contact tokens: unsubscribe links (and, later, Telegram /start links)."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer

from promo.settings import Settings


def _serializer(settings: Settings, salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(settings.secret_key.get_secret_value(), salt=salt)


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
