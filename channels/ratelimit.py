"""Pacing the calls to one provider account, shared by every thread of a process.

A wave's batch tasks run as threads of one worker process (Prefect's thread pool), and
each batch task sends with a few threads of its own: they all take their turn from the
one `RateLimiter` of the provider account, found by name with `limiter_for`.

Across processes nothing is shared: two workers sending through the same account each
pace at the full rate. Give each worker its share of the account's limit
(`rate_limits.<account>` divided by the number of workers); a provider's own 429 with a
retry hint is honored in any case, and holds back every thread of that process.
"""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """At most `rate` calls per second, evenly spaced, with bursts of up to `burst` calls
    after an idle spell (GCRA: each call is given the next free slot on a schedule)."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError("rate must be above 0")
        self.rate = rate
        self.burst = max(1, burst)
        self._lock = threading.Lock()
        self._next = 0.0  # the earliest time (monotonic) the next call may start

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    def acquire(self) -> float:
        """Wait for this call's slot; returns the seconds waited."""
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now - (self.burst - 1) * self.interval)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            time.sleep(wait)
            return wait
        return 0.0

    def hold(self, seconds: float) -> None:
        """The provider asked for a pause (a 429 with a retry hint): nobody calls before it ends."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


_limiters: dict[str, RateLimiter] = {}
_registry_lock = threading.Lock()

# We pace a little under the provider's limit. Our calls leave on schedule but reach the
# provider a few milliseconds late, some more than others; paced at exactly the limit, the
# provider's bucket never refills after a late bunch arrives together, and the next bunch
# is refused.
HEADROOM = 0.97
# ... and never less than this much time between two calls beyond the limit's own spacing,
# where the provider's bucket holds a single call (a limit under 2/s: Twilio's 1 call per
# second). There 3% is 31 ms, less than the jitter of the calls' arrival, and 5-6% of them
# were refused. The slack fades with the square of the interval: at 30/s it is 0.1 ms,
# below the 3%, and the bucket of a second's worth of calls absorbs the jitter anyway.
JITTER = 0.08


def paced_rate(limit: float) -> float:
    """The rate we pace an account at, for its limit in calls per second."""
    interval = 1.0 / limit
    slack = max(interval * (1 / HEADROOM - 1), JITTER * min(1.0, interval) ** 2)
    return 1.0 / (interval + slack)


def limiter_for(account: str, limit: float, burst: int = 1) -> RateLimiter:
    """The process-wide limiter of a provider account (e.g. `twilio_sms:+15005550006`),
    pacing a little under its `limit` (calls per second: `paced_rate`).

    The same account gets the same limiter, so concurrent batch tasks share its rate; a
    changed limit (new settings) replaces it.
    """
    rate = paced_rate(limit)
    with _registry_lock:
        limiter = _limiters.get(account)
        if limiter is None or limiter.rate != rate or limiter.burst != max(1, burst):
            limiter = _limiters[account] = RateLimiter(rate, burst)
        return limiter
