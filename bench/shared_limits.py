"""Benchmark: what sharing a provider account's pace through the store costs.

Each worker process reserves its slots from the account's schedule in the store, a chunk
of about a quarter second of the pace per transaction (`channels.ratelimit`,
`promo.db.schedule`). This prints, on SQLite and on PostgreSQL:

1. one reservation alone: the time of one transaction (`promo.db.schedule.reserve`), many
   in a row from one process;
2. workers sharing an account: `--workers` processes, each with `--threads` threads that
   take a slot and then spend `--latency` seconds (the provider's answer), for `--seconds`;
   the rate they achieved together against the limit (first to last slot, and in the
   middle of the run, a second in from either end), the most calls in any one second, store transactions per message and the time of each;
3. the same with a busy writer (SQLite: a process holding the store's write lock
   `--writer-ms` at a time, as the record of a big wave's decisions does), to see
   whether reserving ahead keeps the pace.

    .venv/bin/python bench/shared_limits.py [--limit 100] [--workers 2] [--seconds 6]
        [--store sqlite|postgresql|both] [--writer-ms 50]

PostgreSQL is a throwaway server from the installed binaries (tests/pgserver.py).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from channels.ratelimit import SharedRateLimiter, paced_rate
from promo.db import get_engine, schedule


def one_at_a_time(url: str, n: int) -> list[float]:
    """Seconds per reservation, n in a row."""
    get_engine(url)
    took = []
    for _ in range(n):
        started = time.perf_counter()
        schedule.reserve(url, "bench:alone", 0.001)
        took.append(time.perf_counter() - started)
    return took


def worker(url: str, account: str, limit: float, threads: int, latency: float, start: float,
           seconds: float, out: mp.Queue) -> None:
    limiter = SharedRateLimiter(account, paced_rate(limit), 1, url)
    get_engine(url)
    times: list[float] = []
    lock = threading.Lock()
    time.sleep(max(0.0, start - time.time()))
    end = start + seconds

    def send() -> None:
        while time.time() < end:
            limiter.acquire()
            with lock:
                times.append(time.time())
            time.sleep(latency)

    with limiter.in_use():
        pool = [threading.Thread(target=send) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    out.put({"times": times, "reservations": limiter.reservations,
             "reserve_seconds": limiter.reserve_seconds, "passed": limiter.passed})


def busy_writer(url: str, hold_ms: float, stop_at: float) -> None:
    """Hold the store's write lock `hold_ms` at a time, with 5 ms between (SQLite: every
    write transaction is BEGIN IMMEDIATE)."""
    from sqlalchemy import text

    engine = get_engine(url)
    while time.time() < stop_at:
        with engine.begin() as conn:
            conn.execute(text("UPDATE rate_schedule SET next_at = next_at "
                              "WHERE account = 'bench:writer'"))
            time.sleep(hold_ms / 1000)
        time.sleep(0.005)


def most_in_a_second(times: list[float]) -> int:
    return max(bisect_right(times, t + 1.0) - i for i, t in enumerate(times))


def shared(url: str, args: argparse.Namespace, account: str, writer_ms: float = 0.0) -> dict:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start = time.time() + 3  # once every process has imported everything
    procs = [ctx.Process(target=worker, args=(url, account, args.limit, args.threads,
                                              args.latency, start, args.seconds, out))
             for _ in range(args.workers)]
    if writer_ms:
        procs.append(ctx.Process(target=busy_writer,
                                 args=(url, writer_ms, start + args.seconds)))
    for p in procs:
        p.start()
    said = [out.get(timeout=120 + args.seconds) for _ in range(args.workers)]
    for p in procs:
        p.join()
    times = sorted(t for w in said for t in w["times"])
    reservations = sum(w["reservations"] for w in said)
    # the middle of the run, every worker sending: the pace without the ends (a worker
    # that stops first leaves the slots it holds unused, unless they are the tail)
    middle = [t for t in times if start + 1 <= t < start + args.seconds - 1]
    return {
        "messages": len(times),
        "achieved": (len(times) - 1) / (times[-1] - times[0]),
        "middle": len(middle) / (args.seconds - 2),
        "most_in_a_second": most_in_a_second(times),
        "per_worker": [len(w["times"]) for w in said],
        "transactions_per_message": reservations / len(times),
        "ms_per_reservation": 1000 * sum(w["reserve_seconds"] for w in said) / reservations,
        "passed": sum(w["passed"] for w in said),
    }


def report(name: str, url: str, args: argparse.Namespace) -> None:
    took = one_at_a_time(url, args.reservations)
    ms = sorted(1000 * t for t in took)
    print(f"\n{name}: one reservation alone ({args.reservations} in a row): "
          f"mean {statistics.mean(ms):.2f} ms, median {ms[len(ms) // 2]:.2f} ms, "
          f"95th {ms[int(len(ms) * 0.95)]:.2f} ms")
    runs = [("shared", 0.0)] + ([("busy writer", args.writer_ms)] if args.writer_ms else [])
    for label, writer_ms in runs:
        r = shared(url, args, f"bench:{label}:{time.time()}", writer_ms)
        extra = f" (a writer holding the lock {writer_ms:g} ms at a time)" if writer_ms else ""
        print(f"{name}: {args.workers} workers x {args.threads} threads, limit "
              f"{args.limit:g}/s{extra}: {r['messages']} messages {r['per_worker']}, "
              f"achieved {r['achieved']:.1f}/s = {100 * r['achieved'] / args.limit:.1f}% "
              f"of the limit first to last, {100 * r['middle'] / args.limit:.1f}% in the "
              f"middle; at most {r['most_in_a_second']} in any second; "
              f"{r['transactions_per_message']:.3f} store transactions per message, "
              f"{r['ms_per_reservation']:.2f} ms per reservation; {r['passed']} slots "
              f"passed unused")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=float, default=100.0, help="the account's calls per second")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8, help="sending threads per worker")
    ap.add_argument("--latency", type=float, default=0.08, help="seconds per provider call")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--reservations", type=int, default=500)
    ap.add_argument("--writer-ms", type=float, default=50.0,
                    help="a busy writer's transactions (0: no busy-writer run)")
    ap.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    args = ap.parse_args()
    with ExitStack() as stack:
        if args.store in ("sqlite", "both"):
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="promo-bench-"))
            report("SQLite", f"sqlite:///{folder}/promo.db", args)
        if args.store in ("postgresql", "both"):
            from tests.pgserver import throwaway_postgres

            report("PostgreSQL", stack.enter_context(throwaway_postgres("promo_bench")), args)


if __name__ == "__main__":
    main()
