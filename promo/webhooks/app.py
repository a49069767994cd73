"""The webhooks' ASGI app: one route per provider, and a health check."""

from __future__ import annotations

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from promo.db import get_engine
from promo.settings import Settings, get_settings
from promo.webhooks import PATHS, registrations, sendgrid, telegram, twilio, unsubscribe, vk
from promo.webhooks.http import MAX_HEAD, Limits, settings_of
from promo.webhooks.links import SHORT_LINK_PATH, short_link_redirect

# how `promo webhooks serve` runs uvicorn: h11 (its limits are the ones set here), reading a
# request head of up to MAX_HEAD so that an over-long URL gets an answer (414), not a reset
SERVER_OPTIONS = {"http": "h11", "h11_max_incomplete_event_size": MAX_HEAD}


def configured(settings: Settings) -> dict[str, bool]:
    """Which endpoints can accept anything: each refuses every request until its secret is set."""
    return {
        "twilio": (settings.twilio_auth_token is not None
                   or "twilio" in settings.credential_blocks),
        "sendgrid": bool(settings.sendgrid_webhook_public_key),
        "vk": settings.vk_callback_secret is not None and bool(settings.vk_confirmation_code),
        "telegram": settings.telegram_webhook_secret is not None,
        "registrations": settings.registration_webhook_secret is not None,
        "unsubscribe": True,
    }


def _database_ok(settings: Settings) -> bool:
    try:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means: not healthy
        return False


async def health(request: Request) -> JSONResponse:
    settings = settings_of(request)
    ok = await run_in_threadpool(_database_ok, settings)
    return JSONResponse(
        {"status": "ok" if ok else "database unavailable", "configured": configured(settings)},
        status_code=200 if ok else 503,
    )


def create_app(settings: Settings | None = None) -> Starlette:
    """The app `promo webhooks serve` runs; `settings` default to the process's."""
    routes = [
        Route(PATHS["health"], health, methods=["GET"]),
        Route(PATHS["twilio_status"], twilio.status_callback, methods=["POST"]),
        Route(PATHS["twilio_inbound"], twilio.inbound_sms, methods=["POST"]),
        Route(PATHS["sendgrid"], sendgrid.events, methods=["POST"]),
        Route(PATHS["unsubscribe"], unsubscribe.unsubscribe, methods=["GET", "POST"]),
        Route(PATHS["vk"], vk.callback, methods=["POST"]),
        Route(PATHS["telegram"], telegram.webhook, methods=["POST"]),
        Route(PATHS["registrations"], registrations.webhook, methods=["POST"]),
        Route(SHORT_LINK_PATH, short_link_redirect, methods=["GET"]),  # the SMS links
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Limits)])
    app.state.settings = settings or get_settings()
    return app
