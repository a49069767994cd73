"""The channel protocol: what every adapter does, and the errors it may raise.

After django-anymail: the base owns the pipeline (batching, retries, per-recipient
results); a provider module only builds its request and parses its reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


class ChannelError(Exception):
    """A send failed. `retryable` says whether trying again may help."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str = "", status: int | None = None,
                 code: str | int | None = None, retry_after: float | None = None,
                 response: Any = None):
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.response = response


class RetryableError(ChannelError):
    """Rate limit, 5xx, timeout: retried with backoff, honoring `retry_after`."""

    retryable = True


class PermanentError(ChannelError):
    """Invalid address, blocked bot, no permission: recorded, not retried.

    `unreachable` marks the contact's address on this channel unreachable;
    `opted_out` withdraws the contact's consent on it (SMS STOP, 21610).
    """

    def __init__(self, message: str, *, unreachable: bool = False, opted_out: bool = False,
                 **kw: Any):
        super().__init__(message, **kw)
        self.unreachable = unreachable
        self.opted_out = opted_out


class ConfigurationError(Exception):
    """Missing or wrong credentials or settings: fails fast, never retried or swallowed."""


@dataclass
class OutgoingMessage:
    """One rendered message for one recipient (or one public post)."""

    id: int  # the ledger row
    key: str  # the idempotency key, carried to providers that accept one
    channel: str
    address: str | None  # email, E.164 phone, VK user id, Telegram chat id; None for a post
    language: str
    text: str
    subject: str | None = None
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)  # name, type, data
    event_slug: str = ""
    wave: str = ""


@dataclass
class SendResult:
    """What happened to one message: sent (with the provider's id) or an error."""

    message_id: int
    provider_message_id: str | None = None
    error: ChannelError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Channel:
    """A channel adapter.

    Subclasses set `name` and implement `send_batch`; they raise ChannelError for a
    failure of the whole batch and return per-recipient errors in SendResult.
    """

    name: ClassVar[str]
    # the provider drops a repeated send with the same key (VK random_id): a message
    # interrupted mid-send may go again; elsewhere it becomes `uncertain`
    provider_dedup: ClassVar[bool] = False
    # how many messages one provider call may carry
    max_batch: ClassVar[int] = 1
    live: ClassVar[bool] = True

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire connections; called once before a series of batches."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what `open` acquired."""

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """One provider call (or a few) for up to `max_batch` messages. Provider modules
        implement this only: build the request, parse the reply."""
        raise NotImplementedError

    def deliver(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """What the send pipeline calls: `send_batch` with the base's retries and rate
        limits around it. Raises ChannelError when the whole batch failed for good."""
        return self.send_batch(messages)
