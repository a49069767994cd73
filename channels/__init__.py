"""Channel adapters and their common protocol; `get_channel` picks the live adapter or the outbox."""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from channels.base import Channel, RetryPolicy
from channels.outbox import OutboxChannel
from channels.ratelimit import limiter_for
from promo.errors import ConfigurationError
from promo.settings import Settings

log = logging.getLogger(__name__)

_warned: set[str] = set()


# channel -> the provider module that sends it; each has `build(channel, settings)` (the
# adapter when its credentials are set up, else None) and `missing(channel, settings)` (what
# a partly set-up provider lacks). Imported when first asked for: the SDKs take a while.
PROVIDERS = {
    "email": "channels.sendgrid_email",
    "sms": "channels.twilio_sms",
    "voice": "channels.twilio_voice",
    "vk": "channels.vk",
    "vk_wall": "channels.vk",
    "telegram": "channels.telegram",
    "telegram_channel": "channels.telegram",
}


def _provider(name: str) -> ModuleType | None:
    module = PROVIDERS.get(name)
    return importlib.import_module(module) if module else None


def live_channel(name: str, settings: Settings) -> Channel | None:
    """The provider adapter for `name` when its credentials are set, else None, with the
    shared pace of its provider account, the concurrency and the retries attached."""
    provider = _provider(name)
    live = provider.build(name, settings) if provider else None
    if live is None:
        return None
    channel = live.channel
    # the pace is kept in the store, so every worker process sharing it shares the limit
    channel.limiter = limiter_for(live.account, settings.rate_limits[live.rate_key],
                                  store=settings.database_url)
    channel.concurrency = settings.send_concurrency
    channel.retry = RetryPolicy(total=settings.send_retry_seconds)
    return channel


def get_channel(name: str, settings: Settings, logger: logging.Logger | None = None) -> Channel:
    """The live adapter when configured, otherwise the outbox (said once per process).

    A provider set up only in part is a mistake, not a wish for the outbox: recording the
    messages as sent while they went nowhere would be worse than stopping.
    """
    channel = live_channel(name, settings)
    if channel is not None:
        return channel
    provider = _provider(name)
    missing = provider.missing(name, settings) if provider else None
    if missing:
        raise ConfigurationError(
            f"{name}: the provider is set up only in part; set {missing} "
            f"(or unset its other settings to write to the outbox)")
    if name not in _warned:
        _warned.add(name)
        (logger or log).info(
            "%s: no provider credentials set; writing to the outbox at %s/%s",
            name, settings.outbox_dir, name,
        )
    return OutboxChannel(name, settings.outbox_dir, settings.email_from)
