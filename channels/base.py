"""The channel protocol: what every adapter does, and the errors it may raise.

After django-anymail: the base owns the pipeline (batching, rate limiting, retries,
per-recipient results); a provider module only builds its request and parses its reply.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)

from channels.ratelimit import RateLimiter

# part of the protocol: the adapters raise it from here
from promo.errors import ConfigurationError

log = logging.getLogger(__name__)


class ChannelError(Exception):
    """A send failed. `retryable` says whether trying again may help."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str = "", status: int | None = None,
                 code: str | int | None = None, retry_after: float | None = None,
                 response: Any = None, maybe_sent: bool = False):
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.response = response
        # the request may have reached the provider (a read timeout, a reset after sending):
        # retried only where the provider drops repeats (`provider_dedup`), else `uncertain`
        self.maybe_sent = maybe_sent


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


def transport_error(exc: BaseException, provider: str) -> RetryableError:
    """A failure below HTTP (timeout, refused, reset), as a retryable error that says
    whether the request may have reached the provider: only a failure to connect proves
    it did not."""
    return RetryableError(f"{provider}: {type(exc).__name__}: {exc}", provider=provider,
                          maybe_sent=not _never_left(exc))


def _never_left(exc: BaseException) -> bool:
    import urllib.error

    import httpx
    import requests
    import urllib3.exceptions

    if isinstance(exc, (urllib.error.URLError, ConnectionRefusedError, requests.ConnectTimeout,
                        httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return True  # urllib wraps only errors raised while connecting and sending in URLError
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", None)
        return isinstance(reason, (urllib3.exceptions.NewConnectionError,
                                   urllib3.exceptions.ConnectTimeoutError))
    cause = exc.__cause__
    return cause is not None and cause is not exc and _never_left(cause)


@dataclass(frozen=True)
class RetryPolicy:
    """How long one provider call is retried: exponential backoff with jitter from
    `initial` seconds up to `longest` per wait, or the provider's own retry hint, for at
    most `attempts` tries and `total` seconds in all."""

    attempts: int = 6
    initial: float = 0.5
    longest: float = 30.0
    total: float = 120.0


def retry_hint(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from an HTTP reply: `Retry-After` (seconds or a date) or
    `X-RateLimit-Reset` (a Unix time, SendGrid)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    now = time.time() if now is None else now
    value = lower.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                pass
    reset = lower.get("x-ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            pass
    return None


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
    # the recipient's own values the text was rendered with (name, unsubscribe link): a
    # provider that substitutes per recipient (SendGrid) sends one content for many
    personal: dict[str, str] = field(default_factory=dict)


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
    # the provider drops a repeated call with the same id (VK random_id): a call that may
    # have arrived is retried within this delivery; elsewhere it becomes `uncertain` (after
    # a crash every channel's interrupted messages are uncertain: flows.ledger)
    provider_dedup: ClassVar[bool] = False
    # how many messages one provider call may carry
    max_batch: ClassVar[int] = 1
    live: ClassVar[bool] = True
    # set by the adapters' constructors: the provider account's shared pace, how many
    # provider calls one `deliver` keeps in flight, and how a failed call is retried
    limiter: RateLimiter | None = None
    concurrency: int = 1
    retry: RetryPolicy = RetryPolicy()
    sleep: Callable[[float], None] = staticmethod(time.sleep)  # between retries (tests: record)

    def close(self) -> None:
        """Release the connections the adapter made (called after each batch)."""

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """One provider call (or a few) for up to `max_batch` messages. Provider modules
        implement this only: build the request, parse the reply."""
        raise NotImplementedError

    def batches(self, messages: list[OutgoingMessage]) -> list[list[OutgoingMessage]]:
        """How the messages go out, one list per provider call: `max_batch` at a time,
        unless the provider can carry only some messages together (VK: the same text)."""
        return [messages[i:i + self.max_batch] for i in range(0, len(messages), self.max_batch)]

    def deliver(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """What the send pipeline calls: the messages in provider calls of `max_batch`,
        `concurrency` of them in flight, each paced by the account's limiter and retried.

        Returns one SendResult per message. A ConfigurationError stops the rest and is
        raised with the results settled so far.
        """
        chunks = self.batches(messages)
        stop = threading.Event()
        failures: list[ConfigurationError] = []

        def run(chunk: list[OutgoingMessage]) -> list[SendResult]:
            if stop.is_set():
                return []
            try:
                return self._deliver_chunk(chunk)
            except ConfigurationError as exc:
                stop.set()
                failures.append(exc)
                return list(exc.results)

        with self.limiter.in_use(len(chunks)) if self.limiter is not None else nullcontext():
            if self.concurrency > 1 and len(chunks) > 1:
                with ThreadPoolExecutor(min(self.concurrency, len(chunks)),
                                        thread_name_prefix=f"send-{self.name}") as pool:
                    settled = list(pool.map(run, chunks))
            else:
                settled = [run(c) for c in chunks]
        results = [r for rs in settled for r in rs]
        if failures:
            failures[0].results = results
            raise failures[0]
        return results

    def _may_retry(self, error: ChannelError) -> bool:
        return error.retryable and (not error.maybe_sent or self.provider_dedup)

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        hint = getattr(error, "retry_after", None)
        if hint is not None:
            return float(hint)
        policy = self.retry
        backoff = policy.initial * 2 ** (state.attempt_number - 1)
        return min(policy.longest, backoff + random.uniform(0, policy.initial))

    def _deliver_chunk(self, chunk: list[OutgoingMessage]) -> list[SendResult]:
        """One provider call for `chunk`, retried for what may be retried: the whole call
        after a retryable error, or just the recipients whose own result says so."""
        done: dict[int, SendResult] = {}
        pending = list(chunk)
        last: dict[int, ChannelError] = {}

        def attempt() -> None:
            nonlocal pending
            if self.limiter is not None:
                try:
                    self.limiter.acquire()
                except Exception as exc:
                    # the shared schedule could not be reached (the store): nothing left
                    raise RetryableError(f"{self.name}: no slot from the rate schedule: "
                                         f"{type(exc).__name__}: {exc}",
                                         provider=self.name) from exc
            try:
                results = self.send_batch(pending)
            except ChannelError as exc:
                if self._may_retry(exc):
                    last.update((m.id, exc) for m in pending)
                    self._noted(exc)
                    raise
                results = [SendResult(m.id, error=exc) for m in pending]
            by_id = {r.message_id: r for r in results}
            again: list[OutgoingMessage] = []
            for m in pending:
                r = by_id.get(m.id) or SendResult(m.id, error=PermanentError(
                    "the provider's reply did not mention this message", provider=self.name))
                if r.error is not None and self._may_retry(r.error):
                    last[m.id] = r.error
                    again.append(m)
                else:
                    done[m.id] = r
            pending = again
            if again:
                error = max((last[m.id] for m in again), key=lambda e: e.retry_after or 0.0)
                self._noted(error)
                raise error

        policy = self.retry
        try:
            for attempt_state in Retrying(
                stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.total),
                wait=self._wait,
                retry=retry_if_exception_type(ChannelError),
                reraise=True,
                sleep=self.sleep,
            ):
                with attempt_state:
                    attempt()
        except ChannelError as exc:
            for m in pending:
                done[m.id] = SendResult(m.id, error=last.get(m.id, exc))
        except ConfigurationError as exc:
            # what this chunk already settled (sent, or failed for good) must be recorded as
            # such: put back to `planned`, a sent message would go again after the fix
            exc.results = [done[m.id] for m in chunk if m.id in done]
            raise
        return [done[m.id] for m in chunk if m.id in done]

    def _noted(self, error: ChannelError) -> None:
        """A retryable failure: a provider's pause holds every sender of the account (every
        worker's, with the shared schedule)."""
        if error.retry_after and self.limiter is not None:
            self.limiter.hold(error.retry_after)
        log.info("%s: %s; retrying%s", self.name, error,
                 f" in {error.retry_after:g}s" if error.retry_after else "")


T = TypeVar("T")


class PerThread:
    """One SDK client per sending thread, for SDKs whose client must not be shared
    (vk_api holds a lock for a whole request); all closed together."""

    def __init__(self, make: Callable[[], T], close: Callable[[T], Any] | None = None) -> None:
        self._make = make
        self._close = close
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make()
            with self._lock:
                self._all.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._all = self._all, []
        self._local = threading.local()
        if self._close is not None:
            for client in clients:
                self._close(client)


@dataclass
class Live:
    """A provider adapter built from its credentials, and whose rate limit it shares."""

    channel: Channel
    account: str  # the provider account (its calls share one pace, across workers too)
    rate_key: str  # the account's entry in the `rate_limits` setting



def credentials(block: Any, provider: str, settings: Any) -> Any:
    """A provider's credentials: the Prefect Block named in the `credential_blocks` setting
    (edited on the UI's Blocks page), else built from the flat settings (promo.toml,
    PROMO_* variables); None when the provider is not set up at all."""
    name = settings.credential_blocks.get(provider)
    if not name:
        return block.from_settings(settings)
    try:
        return block.load(name)
    except ValueError as exc:  # no such block document
        raise ConfigurationError(f"{provider}: Prefect block {name!r}: {exc}",
                                 provider=provider) from None
