"""What the adapters' table-driven tests share: messages, fast retries, outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from channels.base import (
    Channel,
    ConfigurationError,
    OutgoingMessage,
    PermanentError,
    RetryPolicy,
    SendResult,
)

# a client timeout the `slow` fault's delay outlasts
CLIENT_TIMEOUT = 0.4
SLOW = 1.2


def message(i: int, channel: str, address: str | None, text: str = "Привет! Встреча 10 декабря",
            **kw: Any) -> OutgoingMessage:
    kw.setdefault("language", "ru")
    return OutgoingMessage(id=i, key=f"python-meetup-74/announce/{i}/{channel}", channel=channel,
                           address=address, text=text, event_slug="python-meetup-74",
                           wave="announce", **kw)


@dataclass
class Waits:
    """Stands in for the base's sleep between retries: records, does not wait."""

    seconds: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def fast(channel: Channel) -> Waits:
    """Retries without real waits (recorded instead), a few attempts."""
    waits = Waits()
    channel.sleep = waits  # type: ignore[method-assign]
    channel.retry = RetryPolicy(attempts=4, initial=0.05, longest=1.0, total=60.0)
    return waits


def outcome(result: SendResult) -> str:
    """sent | uncertain | unreachable | opted_out | failed | retry_exhausted"""
    if result.ok:
        return "sent"
    error = result.error
    if error.maybe_sent:
        return "uncertain"
    if isinstance(error, PermanentError):
        if error.opted_out:
            return "opted_out"
        return "unreachable" if error.unreachable else "failed"
    return "retry_exhausted"


def deliver_one(channel: Channel, m: OutgoingMessage) -> str:
    """The outcome of delivering one message, or `configuration` when it raised so."""
    try:
        [result] = channel.deliver([m])
    except ConfigurationError:
        return "configuration"
    return outcome(result)
