"""The rate schedule in the store: per provider account, the next free slot of its pace
(GCRA's "theoretical arrival time"), as wall-clock epoch seconds. Every worker process
reserves its slots here, a chunk at a time, so that an account's limit holds across all of
them (`channels.ratelimit.SharedRateLimiter`).

Each function is one short transaction: one statement on PostgreSQL (an upsert returning
the new tail), the same statement inside SQLite's `BEGIN IMMEDIATE` write transaction.
"""

from __future__ import annotations

import time

from sqlalchemy import text

from promo.db import get_engine

# next_at = max(next_at, floor) + span, the row made on an account's first use; returns the
# new tail. SQLite's two-argument MAX is PostgreSQL's GREATEST.
_ADVANCE = """
INSERT INTO rate_schedule (account, next_at) VALUES (:account, :floor + :span)
ON CONFLICT (account) DO UPDATE SET next_at = {greatest}(rate_schedule.next_at, :floor) + :span
RETURNING next_at
"""
ADVANCE = {"postgresql": text(_ADVANCE.format(greatest="GREATEST")),
           "sqlite": text(_ADVANCE.format(greatest="MAX"))}
GIVE_BACK = text("UPDATE rate_schedule SET next_at = :unused "
                 "WHERE account = :account AND next_at = :tail")


def reserve(url: str, account: str, span: float, allowance: float = 0.0) -> float:
    """Take `span` seconds of the account's schedule, starting at its next free slot or at
    now less the burst `allowance`, whichever is later. Returns where the taken stretch
    ends (the schedule's new tail); it starts `span` earlier.

    Now is read once the connection is open: the first use opens (and may migrate) the
    store, and a stretch starting before that would have passed when it came back.
    """
    engine = get_engine(url)
    with engine.begin() as conn:
        floor = time.time() - allowance
        return float(conn.execute(ADVANCE[engine.dialect.name],
                                  {"account": account, "floor": floor, "span": span}
                                  ).scalar_one())


def hold(url: str, account: str, until: float) -> None:
    """No slot of the account before `until` (the provider asked for a pause)."""
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(ADVANCE[engine.dialect.name], {"account": account, "floor": until,
                                                    "span": 0.0})


def give_back(url: str, account: str, tail: float, unused: float) -> bool:
    """Move the schedule back to `unused` if it still ends at `tail` (nobody reserved after
    us): the slots from `unused` on go to whoever asks next. Whether it did."""
    with get_engine(url).begin() as conn:
        return conn.execute(GIVE_BACK, {"account": account, "tail": tail,
                                        "unused": unused}).rowcount == 1
