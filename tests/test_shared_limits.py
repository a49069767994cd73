"""A provider account's rate limit holds across worker processes: its pace is one schedule in
the store (`channels.ratelimit.SharedRateLimiter`, `promo.db.schedule`).

Two processes send SMS through the same Twilio sender at once, each with more threads than
the limit needs, against the fake Twilio that answers Twilio's own 429 when the account's
bucket is empty: on one SQLite store and on PostgreSQL, no call is refused and the fake
sees the account at 95% or more of its limit. The same two processes pacing each on its
own (the old per-process limiter) are refused: the test can tell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import text

from channels import ratelimit
from channels.ratelimit import SharedRateLimiter, limiter_for
from promo.db import get_engine, schedule
from promo.settings import get_settings
from tests.fakes import FakeTwilio

SID = "AC" + "7" * 32
SENDER = "+15005550006"
ACCOUNT = f"twilio_sms:{SENDER}"
LIMIT = 30.0  # calls per second: a Messaging Service's worth, a few seconds of sending
PER_PROCESS = 75

CHILD = """
import json, sys, time
from channels import live_channel, ratelimit
from promo.settings import get_settings
from tests.fakes.harness import message
first, count, shared = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
settings = get_settings()
channel = live_channel("sms", settings)
if shared == "no":  # the old way: this process paces alone, at the account's full limit
    channel.limiter = ratelimit.limiter_for("alone", settings.rate_limits["twilio_sms"])
messages = [message(i, "sms", f"+7999{i:07d}") for i in range(first, first + count)]
print("ready", flush=True)
sys.stdin.readline()  # the parent says go once both are ready
began = time.time()
results = channel.deliver(messages)
print(json.dumps({"sent": sum(r.ok for r in results), "began": began, "ended": time.time(),
                  "reservations": getattr(channel.limiter, "reservations", 0),
                  "passed": getattr(channel.limiter, "passed", 0)}))
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        request.getfixturevalue("store")
    else:
        request.getfixturevalue("pg_store")
    return get_settings().database_url


def two_workers(fake: FakeTwilio, url: str, cwd: Path, shared: bool = True) -> list[dict]:
    """Two processes, each sending PER_PROCESS SMS through the same sender from the same
    moment, with the default 8 calls in flight each; what each says it did."""
    get_engine(url)  # migrated once, before the workers open it
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "PROMO_DATABASE_URL": url, "PROMO_TWILIO_ACCOUNT_SID": SID,
           "PROMO_TWILIO_AUTH_TOKEN": "token", "PROMO_TWILIO_FROM": SENDER,
           "PROMO_TWILIO_BASE_URL": fake.url,
           "PROMO_RATE_LIMITS": json.dumps({"twilio_sms": LIMIT})}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(first), str(PER_PROCESS),
                               "yes" if shared else "no"],
                              env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for first in (1, 1 + PER_PROCESS)]
    # both start sending at once, whenever the slower one has imported everything
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.communicate(timeout=60)[1]
    said = []
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        said.append(json.loads(out.strip().splitlines()[-1]))
    return said


def test_two_workers_share_an_accounts_limit(any_store: str, tmp_path: Path) -> None:
    with FakeTwilio(SID, "token", rate_limits={ACCOUNT: LIMIT}, latency=0.02) as fake:
        said = two_workers(fake, any_store, tmp_path)
        stats = fake.stats()
    assert [w["sent"] for w in said] == [PER_PROCESS, PER_PROCESS]
    assert stats["rate_limited"] == 0
    calls = stats["accounts"][ACCOUNT]
    assert calls["calls"] == 2 * PER_PROCESS
    achieved = calls["calls"] / calls["span"]
    assert achieved >= 0.95 * LIMIT, f"{achieved:.1f}/s of {LIMIT:g}/s"
    # both sent side by side (each alone at the full pace would also keep the limit)
    overlap = min(w["ended"] for w in said) - max(w["began"] for w in said)
    assert overlap > 0.8 * calls["span"], said
    # a store transaction per chunk of about a quarter second's slots, not per message
    assert all(w["reservations"] <= PER_PROCESS / 4 for w in said), said


def test_two_workers_pacing_alone_are_refused(store: Path, tmp_path: Path) -> None:
    """What the shared schedule prevents: each process at the account's full pace."""
    with FakeTwilio(SID, "token", rate_limits={ACCOUNT: LIMIT}, latency=0.02) as fake:
        said = two_workers(fake, get_settings().database_url, tmp_path, shared=False)
        stats = fake.stats()
    assert [w["sent"] for w in said] == [PER_PROCESS, PER_PROCESS]  # after the retries
    assert stats["rate_limited"] > 0


def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """Every stretch of the schedule reserved, as (start, end)."""
    taken: list[tuple[float, float]] = []
    real = schedule.reserve

    def reserve(url: str, account: str, span: float, allowance: float = 0.0) -> float:
        end = real(url, account, span, allowance)
        taken.append((end - span, end))
        return end

    monkeypatch.setattr(schedule, "reserve", reserve)
    return taken


def test_limiters_of_two_workers_take_disjoint_slots(
        store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two limiters of the same account (two workers, here in one process) each reserve
    chunks of the schedule: no two stretches overlap, and together they keep the pace."""
    url = get_settings().database_url
    taken = recorded(monkeypatch)
    a, b = (SharedRateLimiter("test:disjoint", 50.0, 1, url) for _ in range(2))
    assert a.chunk == round(50 * ratelimit.CHUNK_SECONDS)
    times: list[float] = []
    lock = threading.Lock()

    def send(limiter: SharedRateLimiter) -> None:
        for _ in range(40):
            limiter.acquire()
            with lock:
                times.append(time.time())

    threads = [threading.Thread(target=send, args=(lim,)) for lim in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken.sort()
    assert all(end <= later_start + 1e-6 for (_, end), (later_start, _) in pairwise(taken))
    assert len(taken) == a.reservations + b.reservations
    times.sort()
    assert 160 / (times[-1] - times[0]) <= 50.0 * 1.02  # the pace of one account, not two
    assert a.reservations + b.reservations <= 160 / a.chunk + 4


def test_a_providers_pause_holds_every_worker(store: Path) -> None:
    url = get_settings().database_url
    a = SharedRateLimiter("test:hold", 20.0, 1, url)
    b = SharedRateLimiter("test:hold", 20.0, 1, url)
    a.acquire()
    before = time.time()
    a.hold(1.0)  # a 429 with "retry after 1 s" in one worker ...
    # ... and the other, which holds no slots of its own yet, waits for its end too
    b.acquire()
    assert time.time() >= before + 1.0


def test_slots_an_idle_worker_did_not_use_go_back(store: Path) -> None:
    url = get_settings().database_url
    a = SharedRateLimiter("test:give-back", 4.0, 1, url)  # chunks of one slot, 0.26 s apart
    b = SharedRateLimiter("test:give-back", 4.0, 1, url)
    with a.in_use():
        a.acquire()  # its slot, and the next reserved ahead
    assert b.acquire() > a.interval  # meanwhile the other worker waits behind a's slots
    with a.in_use():
        a.acquire()
    # a sends nothing more: the slot it reserved ahead goes back ...
    deadline = time.monotonic() + 10
    while a.given_back == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.given_back == 1
    time.sleep(a.interval)
    with get_engine(url).connect() as conn:
        tail = conn.execute(text("SELECT next_at FROM rate_schedule "
                                 "WHERE account = 'test:give-back'")).scalar_one()
    assert tail < time.time()
    # ... and the other has its next slot at once
    assert b.acquire() == 0.0


def test_a_store_that_cannot_be_reached_is_a_retryable_failure(tmp_path: Path) -> None:
    from channels.base import Channel, RetryableError
    from tests.fakes.harness import fast, message, outcome

    class Quiet(Channel):
        name = "quiet"

        def send_batch(self, messages):  # pragma: no cover - never reached
            raise AssertionError("sent without a slot")

    channel = Quiet()
    fast(channel)
    channel.limiter = limiter_for("test:unreachable", 10,
                                  store=f"sqlite:///{tmp_path}/no/such/folder/promo.db")
    [result] = channel.deliver([message(1, "quiet", "addr")])
    assert outcome(result) == "retry_exhausted"
    assert isinstance(result.error, RetryableError) and "rate schedule" in str(result.error)


def test_a_worker_reserves_no_more_slots_than_its_senders_announced(store: Path) -> None:
    url = get_settings().database_url
    a = SharedRateLimiter("test:demand", 40.0, 1, url)  # chunks of 10 slots
    b = SharedRateLimiter("test:demand", 40.0, 1, url)
    assert a.chunk >= 5
    with a.in_use(calls=3):  # a group of three calls
        for _ in range(3):
            a.acquire()
    # a held no slot beyond its three: the other worker's first comes right after them,
    # not after a whole chunk that a would have let pass unused
    started = time.time()
    b.acquire()
    assert time.time() - started < 2 * a.interval
    with get_engine(url).connect() as conn:
        tail = conn.execute(text("SELECT next_at FROM rate_schedule "
                                 "WHERE account = 'test:demand'")).scalar_one()
    assert tail - started < b.chunk * b.interval + 2 * a.interval
