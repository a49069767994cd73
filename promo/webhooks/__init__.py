"""The feedback loop: delivery status, opt-outs and registrations coming back from providers.

`create_app(settings)` (in `app.py`) is the ASGI app `promo webhooks serve` runs. Each
provider has one module: it verifies the request's signature in one function and maps
what the provider says to the ledger, the consents or the registrations, recording
every event once (raw and normalized) so that a repeated delivery changes nothing.
"""

from __future__ import annotations

from promo.settings import Settings

# the path each provider is given, after `public_url`
PATHS = {
    "twilio_status": "/twilio/status",
    "twilio_inbound": "/twilio/inbound",
    "sendgrid": "/sendgrid/events",
    "vk": "/vk/callback",
    "telegram": "/telegram/webhook",
    "registrations": "/registrations",
    "unsubscribe": "/unsubscribe/{token}",
    "health": "/health",
}


def webhook_url(settings: Settings, name: str) -> str:
    """The public URL of one webhook, e.g. `webhook_url(s, "twilio_status")` for a
    Twilio StatusCallback."""
    return settings.public_url.rstrip("/") + PATHS[name]
