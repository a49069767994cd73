"""Channel adapters, their common protocol, the rules they enforce and the send pipeline."""

from __future__ import annotations

import logging

from channels.base import Channel
from channels.outbox import OutboxChannel
from promo.settings import Settings

log = logging.getLogger(__name__)

_warned: set[str] = set()


def live_channel(name: str, settings: Settings) -> Channel | None:
    """The provider adapter for `name` when its credentials are set, else None."""
    return None


def get_channel(name: str, settings: Settings, logger: logging.Logger | None = None) -> Channel:
    """The live adapter when configured, otherwise the outbox (said once per process)."""
    channel = live_channel(name, settings)
    if channel is not None:
        return channel
    if name not in _warned:
        _warned.add(name)
        (logger or log).info(
            "%s: no provider credentials set; writing to the outbox at %s/%s",
            name, settings.outbox_dir, name,
        )
    return OutboxChannel(name, settings.outbox_dir, settings.email_from)
