"""`promo webhooks ...` and `promo telegram ...`: serve the feedback loop, poll the bot."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

webhooks_app = typer.Typer(help="Webhooks: delivery status, opt-outs and registrations "
                                "coming back from the providers.", no_args_is_help=True)
telegram_app = typer.Typer(help="The Telegram bot: updates by polling, links for contacts.",
                           no_args_is_help=True)


def _print_urls() -> None:
    from promo.cli.output import console
    from promo.settings import get_settings
    from promo.webhooks import webhook_url
    from promo.webhooks.app import configured

    settings = get_settings()
    ready = configured(settings)
    rows = [
        ("Twilio StatusCallback (SMS and calls)", "twilio_status", "twilio"),
        ("Twilio incoming messages (STOP/START)", "twilio_inbound", "twilio"),
        ("SendGrid Event Webhook (signed)", "sendgrid", "sendgrid"),
        ("VK Callback API server", "vk", "vk"),
        ("Telegram setWebhook url", "telegram", "telegram"),
        ("Registrations (X-Promo-Signature)", "registrations", "registrations"),
        ("Unsubscribe links", "unsubscribe", "unsubscribe"),
        ("Health check", "health", "unsubscribe"),
    ]
    console.print(f"[bold]Webhook URLs[/] (public_url = {settings.public_url})")
    for label, name, provider in rows:
        state = "" if ready[provider] else "  [red](its secret is not set: refuses all)[/]"
        # printed whole on one line, so that it can be copied
        console.print(f"  {label:<38} {webhook_url(settings, name)}{state}",
                      soft_wrap=True, highlight=False)


@webhooks_app.command("urls")
def urls() -> None:
    """Show the URL to give each provider, and whether its secret is set."""
    _print_urls()


@webhooks_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the port to listen on")] = 8000,
) -> None:
    """Serve the webhooks (uvicorn) until interrupted."""
    import uvicorn

    from promo.db import get_engine
    from promo.settings import get_settings
    from promo.webhooks.app import SERVER_OPTIONS, create_app

    settings = get_settings()
    settings.require_own_secret("serving the webhooks")
    get_engine(settings.database_url)  # migrate now, not on the first provider's request
    _print_urls()
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", **SERVER_OPTIONS)


@telegram_app.command("poll")
def poll(
    once: Annotated[bool, typer.Option("--once", help="handle what is waiting, then stop")] = False,
) -> None:
    """Handle the bot's updates (/start, /stop) by long polling, where no public URL exists."""
    from promo.cli.output import console
    from promo.settings import get_settings
    from promo.webhooks.telegram import poll as poll_updates

    settings = get_settings()
    settings.require_own_secret("answering the Telegram bot")
    if not once:
        console.print("polling Telegram for /start and /stop (Ctrl-C stops) ...")
    handled = asyncio.run(poll_updates(settings, once=once))
    console.print(f"handled {handled} update(s)")


@telegram_app.command("link")
def link(contact_id: Annotated[int, typer.Argument(help="the contact's id")]) -> None:
    """The link that ties a contact's Telegram chat to them (share it, e.g. in an email)."""
    from promo.cli.output import console
    from promo.settings import get_settings
    from promo.tokens import telegram_link, telegram_link_token

    settings = get_settings()
    settings.require_own_secret("a Telegram link")
    url = telegram_link(settings, contact_id)
    if url is None:
        token = telegram_link_token(settings, contact_id)
        console.print(f"/start {token}\n(set telegram_bot_username for a t.me link)")
    else:
        console.print(url)
