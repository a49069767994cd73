"""Benchmark: plan one wave for 1,000,000 generated contacts with caps and quiet hours.

Runs the planner's decision function (`flows.decide.decide_wave`, the same one the wave
flow and the preview call) over generated contacts: mixed channels and consents, nine
time zones, a cap history for a fifth of them (messages from other campaigns in the
last month), and a reminder the planner keeps room for. Prints the time of each phase
and the peak memory (max RSS) of the process.

    .venv/bin/python bench/plan_million.py [--contacts 1000000] [--mode fallback|all]

Add `--db` to also time the database path for the same audience: bulk-load the contacts
into a throwaway SQLite store, load the wave's audience with `load_recipients` and the
cap history with `load_histories`, decide, and record the decisions in the ledger.
`--db --postgres` does the same on a throwaway PostgreSQL server started from the installed
binaries (as the tests' `postgres_url` fixture does); `--database-url URL` uses an empty
store of your own. Seeding takes minutes: `--keep DIR` seeds once into DIR (a file, or a
PostgreSQL server's folder) and starts every later run from a fresh copy of that store.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.decide import Recipient, WaveRules, decide_wave
from promo.settings import Settings

ZONES = ["Europe/Moscow", "Europe/Kaliningrad", "Asia/Yekaterinburg", "Asia/Novosibirsk",
         "Asia/Vladivostok", "Europe/Berlin", "America/New_York", "Asia/Almaty", None]
CHANNELS = ["email", "vk", "telegram", "sms"]
MSK = ZoneInfo("Europe/Moscow")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(n: int, send_at: datetime, seed: int = 1):
    rng = random.Random(seed)
    reasons = (None, None, None, None, "no consent", "opted out", "no address", "unreachable")
    # contacts with the same standing share one map, as `load_recipients` gives them
    shared: dict[tuple, dict] = {}
    recipients = []
    histories: dict[int, dict[str, list[datetime]]] = {}
    for i in range(1, n + 1):
        r = rng.random
        key = tuple(reasons[int(r() * 8)] for _ in CHANNELS)
        blocked = shared.get(key)
        if blocked is None:
            blocked = shared[key] = dict(zip(CHANNELS, key, strict=True))
        recipients.append(Recipient(i, ZONES[int(r() * 9)], blocked, r() < 0.05))
        if r() < 0.2:
            t = send_at - timedelta(hours=1 + int(r() * 700))
            ch = CHANNELS[int(r() * 4)]
            histories[i] = {ch: [t], "direct": [t]}
    return recipients, histories


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=1_000_000)
    ap.add_argument("--mode", choices=("fallback", "all"), default="fallback")
    ap.add_argument("--db", action="store_true", help="also time the database path")
    ap.add_argument("--postgres", action="store_true",
                    help="the database path on a throwaway PostgreSQL server")
    ap.add_argument("--database-url", help="the database path on this (empty) store")
    ap.add_argument("--keep", metavar="DIR",
                    help="seed the store once into DIR and start each run from a copy of it")
    ap.add_argument("--profile", action="store_true", help="cProfile the database path")
    ap.add_argument("--skip-memory", action="store_true",
                    help="skip the in-memory planning (only the database path)")
    args = ap.parse_args()

    settings = Settings()
    starts_at = datetime(2027, 3, 10, 19, 0, tzinfo=MSK)
    send_at = datetime(2027, 3, 7, 11, 0, tzinfo=MSK)
    rules = WaveRules(
        event_slug="bench", wave="last_call", channels=CHANNELS, mode=args.mode,
        send_at=send_at, starts_at=starts_at, event_timezone="Europe/Moscow",
        caps=settings.cap_rules(), windows=settings.send_windows(), promotional=True,
        reminder_at=datetime(2027, 3, 9, 11, 0, tzinfo=MSK),
        reminder_channels=("email", "sms", "vk", "telegram"),
    )
    if args.db and args.skip_memory:
        return run_db(args, rules, settings)
    print(f"planning one {args.mode} wave for {args.contacts:,} contacts "
          f"(channels {', '.join(CHANNELS)}, caps and quiet hours on)")
    t0 = time.perf_counter()
    recipients, histories = generate(args.contacts, send_at)
    t1 = time.perf_counter()
    print(f"  generate audience:  {t1 - t0:6.2f} s  (not part of planning)")
    gc.collect()
    gc.disable()  # the decisions are long-lived tuples: generational GC only re-scans them
    t2 = time.perf_counter()
    decisions = decide_wave(rules, recipients, histories)
    t3 = time.perf_counter()
    gc.enable()
    outcome = Counter((d.channel, d.status) for d in decisions)
    print(f"  decide:             {t3 - t2:6.2f} s  ({len(decisions):,} decisions, "
          f"{args.contacts / (t3 - t2):,.0f} contacts/s)")
    print(f"  peak memory (RSS):  {peak_mb():6.0f} MB")
    for (channel, status), n in sorted(outcome.items()):
        print(f"    {channel:<9} {status:<10} {n:>9,}")
    if args.db:
        del recipients, histories, decisions, outcome
        gc.collect()
        run_db(args, rules, settings)


def run_db(args: argparse.Namespace, rules: WaveRules, settings: Settings) -> None:
    keep = Path(args.keep) if args.keep else None
    if args.postgres:
        from tests.pgserver import throwaway_postgres

        with throwaway_postgres("promo_bench", keep=keep and keep / "pg") as url:
            bench_db(args.contacts, rules, url, args.profile, keep)
    else:
        url = args.database_url
        if url is None:
            folder = keep or Path(tempfile.mkdtemp(prefix="promo-bench-"))
            url = f"sqlite:///{folder / 'bench.db'}"
        bench_db(args.contacts, rules, url, args.profile, keep)


def seeded_store(n: int, rules: WaveRules, url: str, keep: Path | None) -> None:
    """Seed the store at `url`; with `keep`, seed a copy there once and start each run
    from a fresh copy of it (SQLite: the file; PostgreSQL: a database made from it as a
    template), so that the minutes of seeding are spent once."""
    import shutil

    if keep is None:
        return seed_apart(n, rules, url)
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        template = keep / f"seeded-{n}.db"
        if not template.exists():
            seed_apart(n, rules, f"sqlite:///{keep / 'seeding.db'}")
            (keep / "seeding.db").rename(template)
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
        shutil.copyfile(template, path)
        return None
    import psycopg

    base, _, database = url.rpartition("/")
    server = base.replace("postgresql+psycopg://", "postgresql://")
    template, marker = f"seeded_{n}", keep / f"pg-seeded-{n}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        if not marker.exists():
            conn.execute(f"DROP DATABASE IF EXISTS {template}")
            conn.execute(f"CREATE DATABASE {template}")
            seed_apart(n, rules, f"{base}/{template}")
            with psycopg.connect(f"{server}/{template}", autocommit=True) as c:
                c.execute("VACUUM ANALYZE")
            marker.touch()
        conn.execute(f"DROP DATABASE IF EXISTS {database}")
        conn.execute(f"CREATE DATABASE {database} TEMPLATE {template}")
    return None


def seed_apart(n: int, rules: WaveRules, url: str) -> None:
    """Seed in a child process: it holds a million synthetic contacts at once, and the peak
    memory printed at the end is the planning's own."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(target=seed, args=(n, rules, url))
    child.start()
    child.join()
    if child.exitcode:
        sys.exit(f"seeding failed ({child.exitcode})")


def seed(n: int, rules: WaveRules, url: str) -> None:
    """A million synthetic contacts, the event, and another campaign's messages."""
    from sqlalchemy import insert

    from audiences import synthetic
    from flows.store import save_event
    from promo.db import dispose_engines, session_scope
    from promo.db.models import Message
    from promo.domain.event import parse_event

    with session_scope(url) as s:
        contacts = list(synthetic.generate(n))
        synthetic.store(s, contacts, granted_at=rules.send_at - timedelta(days=400), chunk=20_000)
        del contacts
        spec = parse_event(
            "slug: bench\ntitle: Bench\nstarts_at: 2027-03-10T19:00:00+03:00\n"
            "timezone: Europe/Moscow\nvenue: V\nregistration_url: https://example.org/r\n"
            "topic: python\n")
        event = save_event(s, spec)
        rng = random.Random(3)
        other = [{"key": f"other/{i}", "event_id": event.id, "wave": "other", "contact_id": i,
                  "channel": "email", "status": "sent", "sent_at": rules.send_at - timedelta(days=2),
                  "decided_at": rules.send_at, "counts_for_caps": True, "attempts": 1,
                  "updated_at": rules.send_at}
                 for i in range(1, n + 1) if rng.random() < 0.2]
        for i in range(0, len(other), 20_000):
            s.execute(insert(Message), other[i:i + 20_000])
    dispose_engines()  # SQLite folds its write-ahead log into the file: the file is the store


def bench_db(n: int, rules: WaveRules, url: str, profile: bool = False,
             keep: Path | None = None) -> None:
    import os

    os.environ["PROMO_DATABASE_URL"] = url
    from audiences.segments import load_recipients
    from flows.decide import decide_parts
    from flows.ledger import load_histories, record_decisions
    from flows.store import find_event
    from flows.wave import gc_paused
    from promo.db import dispose_engines, hold_contacts, session_scope
    from promo.settings import reset_settings

    reset_settings()
    print(f"\ndatabase path ({url.split(':')[0]}):")
    t0 = time.perf_counter()
    seeded_store(n, rules, url, keep)
    dispose_engines()
    t1 = time.perf_counter()
    print(f"  seed store:         {t1 - t0:6.2f} s  (not part of planning"
          f"{'; a copy of the kept one' if keep else ''})")
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    decided = [0.0, 0]  # seconds deciding (in the planning thread), decisions

    def decisions(parts):
        # as `flows.wave` does: each part is recorded (by the writer's thread) while the
        # next is decided
        while True:
            t = time.perf_counter()
            part = next(parts, None)
            decided[0] += time.perf_counter() - t
            if part is None:
                return
            decided[1] += len(part)
            yield from part

    with session_scope() as s, gc_paused():  # as the wave's decide step
        event = find_event(s, "bench")
        cpu = time.process_time()
        t2 = time.perf_counter()
        hold_contacts(s)
        recipients = load_recipients(s, event, list(rules.channels), registrants_only=False)
        t3 = time.perf_counter()
        histories = load_histories(s, rules.send_at, timedelta(days=30))
        t4 = time.perf_counter()
        with_history = len(histories)
        record_decisions(s, event, rules.wave, decisions(decide_parts(rules, recipients, histories)),
                         counts_for_caps=True, contacts_held=True)
    t6 = time.perf_counter()
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    print(f"  load audience:      {t3 - t2:6.2f} s  ({len(recipients):,} contacts follow the topic)")
    print(f"  load cap history:   {t4 - t3:6.2f} s  ({with_history:,} contacts with history)")
    print(f"  decide:             {decided[0]:6.2f} s  ({decided[1]:,} decisions; while the "
          f"previous part is recorded)")
    print(f"  record in ledger:   {t6 - t4 - decided[0]:6.2f} s  (what recording adds: waiting "
          f"for the writer, commit included)")
    print(f"  decide + record:    {t6 - t4:6.2f} s")
    print(f"  total (store path): {t6 - t2:6.2f} s  (CPU of this process: "
          f"{time.process_time() - cpu:.2f} s; the machine's load average: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(f"  peak memory (RSS):  {peak_mb():6.0f} MB  (the planning process; seeding runs apart)")
    dispose_engines()


if __name__ == "__main__":
    main()
