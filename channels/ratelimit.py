"""Pacing the calls to one provider account, shared by every worker process and thread.

Each account's pace is one GCRA schedule in the store (`promo.db.schedule`, table
`rate_schedule`): the next free slot, as wall-clock epoch seconds. A worker process
reserves a chunk of consecutive slots in one short transaction (about a quarter second
of the account's pace, or fewer: no more than its senders announced, `in_use(calls)`),
hands them to its sending threads one by one, evenly spaced, and
reserves the next chunk a little before this one runs out. Two workers, or two waves,
sending through the same account therefore share its limit without dividing it by hand,
and a worker that sends nothing takes nothing: when its senders stop it gives back the
slots it did not use, if nobody reserved after them. A provider's 429 with a retry hint
is written into the schedule too, and holds back every worker of the account (a worker
that reserved slots before the pause still uses those, about a chunk at most, and is held
by its own 429 if the provider refuses them).

Wall-clock time: workers on different machines need synced clocks (NTP). The cost is one
store transaction per chunk (`bench/shared_limits.py`, docs/performance.md).

Within a process, a wave's batch tasks (Prefect's thread pool) and their sending threads
all take their turn from the one limiter of the account, found by name with `limiter_for`.
Without a store (`limiter_for(..., store=None)`) the limiter paces that process alone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from promo.db import has_engine, schedule

log = logging.getLogger(__name__)


class RateLimiter:
    """At most `rate` calls per second, evenly spaced, with bursts of up to `burst` calls
    after an idle spell (GCRA: each call is given the next free slot on a schedule), for
    the threads of one process."""

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

    @contextmanager
    def in_use(self, calls: int = 0) -> Iterator[None]:
        """Around a sender's `calls` (`Channel.deliver`): a shared limiter reserves no more
        slots than its senders announced, and gives back what it did not use once every
        sender of the process stopped."""
        yield


# A chunk: about this much of the account's pace per store transaction.
CHUNK_SECONDS = 0.25
# The next chunk is reserved when what is left of ours lasts less than this many of the
# store's recent reservation times (a few milliseconds on PostgreSQL, tens on a busy
# SQLite), and at least LEAST_LEAD seconds, at most a chunk.
LEAD = 3.0
LEAST_LEAD = 0.03
# A reserved slot that passed unused is dropped, unless it is at most this late (and less
# than half a slot): the first slot of a chunk taken on an idle schedule is a round trip old.
GRACE = 0.02
# The slots a process keeps after its senders stopped are given back this much later: a
# wave's next group starts sooner (its claim and record in between), and keeps them.
GIVE_BACK_AFTER = 0.2


@dataclass
class _Run:
    """Our consecutive slots: the next one, how many are left, and where they end (the
    schedule's tail when we reserved them)."""

    next: float
    left: int
    end: float


class SharedRateLimiter(RateLimiter):
    """The account's pace shared through the store: slots reserved a chunk at a time from
    the account's schedule (`promo.db.schedule`), handed to this process's threads."""

    def __init__(self, account: str, rate: float, burst: int, store: str) -> None:
        super().__init__(rate, burst)
        self.account = account
        self.store = store
        self.chunk = max(1, round(rate * CHUNK_SECONDS))
        self._cond = threading.Condition(self._lock)
        self._runs: deque[_Run] = deque()
        self._reserving = False
        self._users = 0
        # calls the senders announced (`in_use`) that have no slot yet; None: nobody said
        self._demand: int | None = None
        self._idle_since = 0.0
        self._timer: threading.Thread | None = None
        self._held_until = 0.0
        # what it cost: store transactions and their time (bench/shared_limits.py)
        self.reservations = 0
        self.reserve_seconds = 0.0
        self.given_back = 0
        self.passed = 0  # reserved slots nobody was ready for
        self._round_trip = LEAST_LEAD / LEAD  # a reservation's time, lately (moving average)

    # ---- the slots -------------------------------------------------------------------
    def _take(self, now: float) -> float | None:
        """Our next slot that has not passed (within the burst allowance), or None."""
        late = now - (self.burst - 1) * self.interval - min(GRACE, self.interval / 2)
        while self._runs:
            run = self._runs[0]
            if run.next < late:  # nobody was ready for these: they passed unused
                skipped = min(run.left, int((late - run.next) / self.interval) + 1)
                run.next += skipped * self.interval
                run.left -= skipped
                self.passed += skipped
            if run.left > 0:
                slot = run.next
                run.next += self.interval
                run.left -= 1
                if run.left == 0:
                    self._runs.popleft()
                if self._demand:
                    self._demand -= 1
                return slot
            self._runs.popleft()
        return None

    def _ahead(self, now: float) -> float:
        """How long the slots we hold last from now."""
        if not self._runs:
            return 0.0
        last = self._runs[-1]
        return last.next + last.left * self.interval - now

    def _wanted(self) -> int:
        """How many slots to reserve now: a chunk, or fewer when the senders announced
        fewer calls than that beyond what we hold. Slots reserved for nobody pass unused
        (the schedule has moved on for every other worker): a worker sending a group of 8
        calls, then claiming and recording the next, lost most of a second chunk each time,
        and two workers kept an account at 78% of its limit."""
        if self._demand is None:
            return self.chunk
        return min(self.chunk, self._demand - sum(r.left for r in self._runs))

    def _lead(self) -> float:
        return min(self.chunk * self.interval, max(LEAST_LEAD, LEAD * self._round_trip))

    def _reserve(self, count: int) -> None:
        """`count` slots from the store, appended to our runs (joined to the last one when
        nobody reserved in between). The caller set `_reserving`."""
        span = count * self.interval
        started = time.perf_counter()
        end: float | None = None
        try:
            end = schedule.reserve(self.store, self.account, span,
                                   (self.burst - 1) * self.interval)
        finally:
            with self._cond:
                self._reserving = False
                self.reservations += 1
                took = time.perf_counter() - started
                self.reserve_seconds += took
                self._round_trip = 0.8 * self._round_trip + 0.2 * took
                if end is not None:
                    start = end - span
                    last = self._runs[-1] if self._runs else None
                    if last is not None and abs(last.end - start) < 1e-6:
                        last.left += count
                        last.end = end
                    else:
                        self._runs.append(_Run(start, count, end))
                self._cond.notify_all()

    def acquire(self) -> float:
        """Wait for this call's slot; returns the seconds waited. Raises what the store
        raised when no slot could be reserved."""
        while True:
            with self._cond:
                now = time.time()
                slot = self._take(now)
                if slot is None and self._reserving:
                    self._cond.wait(1.0)
                    continue
                # out of slots, or soon (a few store round trips left): this thread reserves
                # the next chunk while the others go on with what is left. Not sooner: what
                # a worker holds when it stops is lost to the others unless it is the
                # schedule's tail.
                count = max(1, self._wanted()) if slot is None else self._wanted()
                reserve = not self._reserving and count > 0 and (
                    slot is None or self._ahead(now) < self._lead())
                if reserve:
                    self._reserving = True
            if reserve:
                try:
                    self._reserve(count)
                except Exception:
                    if slot is None:
                        raise
                    log.warning("%s: reserving the next slots failed; trying again",
                                self.account, exc_info=True)
            if slot is not None:
                wait = slot - time.time()
                if wait > 0:
                    time.sleep(wait)
                    return wait
                return 0.0

    def hold(self, seconds: float) -> None:
        """The provider asked for a pause: no slot before it ends, here and, through the
        schedule, in every other worker (once the slots they hold are used)."""
        until = time.time() + seconds
        with self._cond:
            for run in self._runs:
                if run.next < until:
                    skipped = min(run.left, int((until - run.next) / self.interval) + 1)
                    run.next += skipped * self.interval
                    run.left -= skipped
            while self._runs and self._runs[0].left == 0:
                self._runs.popleft()
            if until <= self._held_until:
                return  # another thread of ours wrote this pause already
            self._held_until = until
        try:
            schedule.hold(self.store, self.account, until)
        except Exception:  # the pause holds here in any case: said, not raised
            log.warning("%s: could not write the provider's pause into the rate schedule",
                        self.account, exc_info=True)

    # ---- giving back -----------------------------------------------------------------
    @contextmanager
    def in_use(self, calls: int = 0) -> Iterator[None]:
        with self._cond:
            self._users += 1
            if calls:
                self._demand = (self._demand or 0) + calls
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    self._demand = None
                    self._idle_since = time.monotonic()
                    if self._timer is None:
                        self._arm(GIVE_BACK_AFTER)

    def _arm(self, delay: float) -> None:
        # a thread that sleeps, not a threading.Timer: a timed wait on a lock never ends
        # under a shifted clock (faketime, the suite's year-ahead pass)
        self._timer = threading.Thread(target=self._give_back_later, args=(delay,),
                                       name=f"give-back-{self.account}", daemon=True)
        self._timer.start()

    def _give_back_later(self, delay: float) -> None:
        time.sleep(delay)
        self._give_back_if_idle()

    def _give_back_if_idle(self) -> None:
        with self._cond:
            self._timer = None
            if self._users or self._reserving or not self._runs:
                return
            if not has_engine(self.store):
                return  # the process closed the store (shutting down): nothing to give back to
            idle = time.monotonic() - self._idle_since
            if idle < GIVE_BACK_AFTER:
                self._arm(GIVE_BACK_AFTER - idle)
                return
            # only the last run can be the schedule's tail: its slots from the first that
            # has not passed go back. Taken out of reach first (a sender may start again
            # meanwhile), put back if someone reserved after them.
            last = self._runs[-1]
            unused = max(last.next, time.time())
            if unused >= last.end:
                return
            self._runs.pop()
            self._reserving = True
        try:
            returned = schedule.give_back(self.store, self.account, last.end, unused)
        except Exception:
            log.warning("%s: could not give back unused slots", self.account, exc_info=True)
            returned = False
        with self._cond:
            self._reserving = False
            if returned:
                self.given_back += 1
            else:
                self._runs.append(last)
            self._cond.notify_all()


_limiters: dict[str, RateLimiter] = {}
_registry_lock = threading.Lock()
# a forked child (multiprocessing) starts with limiters of its own
os.register_at_fork(after_in_child=_limiters.clear)

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


def limiter_for(account: str, limit: float, burst: int = 1,
                store: str | None = None) -> RateLimiter:
    """The process-wide limiter of a provider account (e.g. `twilio_sms:+15005550006`),
    pacing a little under its `limit` (calls per second: `paced_rate`).

    With `store` (a database URL: `Settings.database_url`) the pace is shared with every
    other process using that store (`SharedRateLimiter`); without, with this process's
    threads only. The same account gets the same limiter, so concurrent batch tasks share
    its rate; a changed limit or store (new settings) replaces it.
    """
    rate = paced_rate(limit)
    burst = max(1, burst)
    with _registry_lock:
        limiter = _limiters.get(account)
        if (limiter is None or limiter.rate != rate or limiter.burst != burst
                or getattr(limiter, "store", None) != store):
            limiter = _limiters[account] = (
                RateLimiter(rate, burst) if store is None
                else SharedRateLimiter(account, rate, burst, store))
        return limiter
