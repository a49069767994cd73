"""The base's part of sending: the shared rate limiter, retries and per-recipient results."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest

from channels import ratelimit
from channels.base import (
    Channel,
    ConfigurationError,
    OutgoingMessage,
    PermanentError,
    RetryableError,
    SendResult,
    retry_hint,
)
from channels.ratelimit import RateLimiter, limiter_for
from tests.fakes.harness import fast, message, outcome


class FrozenClock:
    """time.monotonic that moves only when told; sleep records instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.slept.append(seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    c = FrozenClock()
    monkeypatch.setattr(ratelimit, "time", c)
    return c


def test_limiter_spaces_calls_across_threads(clock: FrozenClock) -> None:
    limiter = RateLimiter(rate=5)
    with ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(lambda _: limiter.acquire(), range(20)))
    # every call got its own slot, 0.2 s apart, whichever thread asked first
    assert sorted(round(w, 6) for w in waits) == [round(i * 0.2, 6) for i in range(20)]


def test_limiter_allows_a_burst_after_an_idle_spell(clock: FrozenClock) -> None:
    limiter = RateLimiter(rate=10, burst=3)
    waits = [limiter.acquire() for _ in range(5)]
    assert [round(w, 6) for w in waits] == [0, 0, 0, 0.1, 0.2]


def test_limiter_hold_pauses_everyone(clock: FrozenClock) -> None:
    limiter = RateLimiter(rate=10)
    limiter.acquire()
    limiter.hold(3.0)
    assert limiter.acquire() == pytest.approx(3.0)
    assert limiter.acquire() == pytest.approx(3.1)


def test_limiter_for_shares_one_limiter_per_account() -> None:
    a = limiter_for("test:shared", 20)
    assert a.rate == pytest.approx(20 * ratelimit.HEADROOM)  # a little under the provider's limit
    assert limiter_for("test:shared", 20) is a
    assert limiter_for("test:other", 20) is not a
    assert limiter_for("test:shared", 10) is not a  # new settings, a new pace


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": "Thu, 01 Jan 1970 00:16:50 GMT"}, 10.0),  # a date: 1010 - 1000
    ({"X-RateLimit-Reset": "1012"}, 12.0),
    ({"Content-Type": "application/json"}, None),
    (None, None),
])
def test_retry_hint(headers, expected) -> None:
    assert retry_hint(headers, now=1000.0) == expected


class Scripted(Channel):
    """A provider that answers from a script: per call, an exception or per-message errors."""

    name: ClassVar[str] = "scripted"
    max_batch: ClassVar[int] = 10

    def __init__(self, script: list, dedup: bool = False) -> None:
        self.script = list(script)
        self.calls: list[list[int]] = []
        self.provider_dedup = dedup  # type: ignore[misc]

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        self.calls.append([m.id for m in messages])
        step = self.script.pop(0) if self.script else {}
        if isinstance(step, Exception):
            raise step
        return [SendResult(m.id, f"id-{m.id}", error=step.get(m.id)) for m in messages]


def batch(n: int) -> list[OutgoingMessage]:
    return [message(i, "scripted", f"addr-{i}") for i in range(1, n + 1)]


def test_only_the_recipients_whose_result_says_retry_are_sent_again() -> None:
    channel = Scripted([{2: RetryableError("busy"), 3: PermanentError("gone", unreachable=True)}])
    fast(channel)
    results = channel.deliver(batch(3))
    assert channel.calls == [[1, 2, 3], [2]]
    assert [outcome(r) for r in results] == ["sent", "sent", "unreachable"]


def test_a_request_that_may_have_arrived_is_retried_only_where_the_provider_dedups() -> None:
    timeout = RetryableError("read timeout", maybe_sent=True)
    plain = Scripted([timeout])
    fast(plain)
    assert [outcome(r) for r in plain.deliver(batch(2))] == ["uncertain", "uncertain"]
    assert len(plain.calls) == 1
    dedup = Scripted([timeout], dedup=True)
    fast(dedup)
    assert [outcome(r) for r in dedup.deliver(batch(2))] == ["sent", "sent"]
    assert len(dedup.calls) == 2


def test_a_retry_hint_longer_than_the_time_budget_gives_up_without_waiting() -> None:
    channel = Scripted([RetryableError("slow down", retry_after=600)])
    waits = fast(channel)
    [result] = channel.deliver(batch(1))
    assert outcome(result) == "retry_exhausted" and waits.seconds == []


def test_a_configuration_error_stops_the_rest_and_keeps_what_was_settled() -> None:
    channel = Scripted([{}, ConfigurationError("bad key")])
    channel.max_batch = 2  # type: ignore[misc]
    with pytest.raises(ConfigurationError) as raised:
        channel.deliver(batch(6))
    assert channel.calls == [[1, 2], [3, 4]]  # the third call never went
    assert [r.message_id for r in raised.value.results] == [1, 2]
    assert all(r.ok for r in raised.value.results)


def test_concurrent_calls_each_get_their_results() -> None:
    channel = Scripted([{}] * 10)
    channel.max_batch = 1  # type: ignore[misc]
    channel.concurrency = 4
    results = channel.deliver(batch(10))
    assert [r.message_id for r in results] == list(range(1, 11))
    assert all(r.provider_message_id == f"id-{r.message_id}" for r in results)


def test_a_configuration_error_on_a_retry_keeps_what_the_first_call_settled() -> None:
    """Message 1 went on the first call; the retry for message 2 meets a revoked key. 1 must
    be reported sent, or it would be put back to planned and sent again after the fix."""
    channel = Scripted([{2: RetryableError("busy")}, ConfigurationError("key revoked")])
    fast(channel)
    with pytest.raises(ConfigurationError) as info:
        channel.deliver(batch(2))
    assert [(r.message_id, outcome(r)) for r in info.value.results] == [(1, "sent")]
