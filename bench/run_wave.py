"""Benchmark: `promo run` of one large wave end to end on the embedded defaults (the outbox).

    .venv/bin/python bench/run_wave.py [--contacts 100000]             # SQLite
    .venv/bin/python bench/run_wave.py --contacts 1000000 --postgres   # a throwaway PostgreSQL

Seeds a fresh store (SQLite in a temporary folder, or `--postgres`: a throwaway server from
the installed binaries, as the tests start one; `--database-url`: an empty store of your
own) with the contacts (an email address, a phone and a Telegram chat each, consent on all
three, following the event's topic), writes an event whose announce wave is due, then runs
the real command line as a user would, `promo run EVENT.yaml --wave announce --now ...`,
with the default settings (no provider credentials: every message goes to the outbox; a
temporary Prefect server). The wave is decided, rendered, written to the outbox and
recorded, every message through the ledger.

Prints the command's wall time, its steps (read back from the ledger's own stamps: the
decisions' `decided_at`, the first claim, the last row recorded), messages per second and
the peak memory (RSS of the `promo` process, from /usr/bin/time; the Prefect server and
PostgreSQL run in processes of their own), with the machine's load average before and
after. Then checks that every message was sent once: each `sent` row is in the outbox once
(an `.eml` file, or a wave's `.mbox`), nothing is left planned or sending.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MSK = ZoneInfo("Europe/Moscow")
START = datetime(2027, 3, 18, 19, 0, tzinfo=MSK)
ANNOUNCE = START - timedelta(days=14) + timedelta(hours=-8)
CAMPAIGN = """\
campaign:
  announce: {channels: [email, telegram, sms], mode: fallback}
  last_call: null
  reminder: null
"""
CHANNELS = ("email", "telegram", "sms")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true",
                        help="the store on a throwaway PostgreSQL server")
    parser.add_argument("--database-url", help="the store at this URL (an empty database)")
    parser.add_argument("--profile", metavar="FILE",
                        help="sample the `promo` process with py-spy into FILE (collapsed "
                        "stacks; py-spy is not a dependency: .venv/bin/pip install py-spy)")
    parser.add_argument("--keep", action="store_true", help="keep the folder (store, outbox)")
    args = parser.parse_args()
    if args.postgres:
        from tests.pgserver import throwaway_postgres

        server = throwaway_postgres("promo_bench")
    else:
        server = nullcontext(args.database_url)
    with server as url:
        run(args, url)


def run(args: argparse.Namespace, url: str | None) -> None:
    folder = Path(tempfile.mkdtemp(prefix="promo-run-bench-"))
    url = url or f"sqlite:///{folder / 'promo.db'}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROMO_", "PREFECT_API"))}
    env.update({"PROMO_DATABASE_URL": url,
                "PROMO_OUTBOX_DIR": str(folder / "outbox"),
                "PREFECT_HOME": str(folder / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING"})
    os.environ.update({k: env[k] for k in ("PROMO_DATABASE_URL", "PROMO_OUTBOX_DIR")})
    from sqlalchemy import func, select

    from promo.db import dispose_engines, session_scope
    from promo.db.models import Message
    from tests.helpers import write_event

    n = args.contacts
    path = write_event(folder, START, extra=CAMPAIGN)
    store = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"{n:,} contacts on {store}, in {folder}", flush=True)
    t = time.monotonic()
    seed(n, url)
    dispose_engines()  # the command opens its own connections
    print(f"seeded in {time.monotonic() - t:.1f} s; load average {load()}", flush=True)

    command = [str(ROOT / ".venv/bin/promo"), "run", str(path), "--wave", "announce", "--now",
               ANNOUNCE.isoformat()]
    if args.profile:
        command = [str(ROOT / ".venv/bin/py-spy"), "record", "--format", "raw", "--threads",
                   "--rate", "20", "-o", str(Path(args.profile).resolve()), "--", *command]
    load_before = load()
    started = datetime.now(MSK)
    t = time.monotonic()
    done = subprocess.run(["/usr/bin/time", "-v", *command], cwd=folder, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.monotonic() - t
    load_after = load()
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)

    with session_scope() as s:
        statuses = dict(s.execute(select(Message.status, func.count())
                                  .group_by(Message.status)).all())
        decided = s.scalar(select(func.min(Message.decided_at)))
        first_claim = s.scalar(select(func.min(Message.claimed_at)))
        last_record = s.scalar(select(func.max(Message.updated_at)))
        sent_keys = set(s.scalars(select(Message.key).where(Message.status == "sent")))
    seen = outbox_keys(folder / "outbox")
    sent = statuses.get("sent", 0)
    steps = {  # from the ledger's stamps; each takes what lies between two of them
        "start, load the audience, decide": (decided - started).total_seconds(),
        "record the decisions, start sending": (first_claim - decided).total_seconds(),
        "send (claim, render, outbox, record)": (last_record - first_claim).total_seconds(),
        "finish (summary, artifacts, Prefect stops)":
            wall - (last_record - started).total_seconds(),
    } if decided and first_claim and last_record else {}
    for step, seconds in steps.items():
        print(f"  {step:<45} {seconds:8.1f} s")
    send_s = steps.get("send (claim, render, outbox, record)")
    print(json.dumps({
        "contacts": n, "store": store, "exit": done.returncode, "wall_s": round(wall, 1),
        "messages_per_s": round(sent / wall, 1),
        "sending_messages_per_s": round(sent / send_s, 1) if send_s else None,
        "peak_rss_mb": round(int(peak.group(1)) / 1024) if peak else None,
        "load_average_before": load_before, "load_average_after": load_after,
        "ledger": statuses, "outbox_messages": sum(seen.values()),
        "outbox_files": sum(1 for _ in (folder / "outbox").rglob("*.*")),
        "outbox_mb": round(sum(f.stat().st_size for f in (folder / "outbox").rglob("*.*"))
                           / 2**20),
        "sent_rows": len(sent_keys), "sent_not_in_outbox": len(sent_keys - set(seen)),
        "in_outbox_twice": sum(1 for c in seen.values() if c > 1),
        "left_planned_or_sending": statuses.get("planned", 0) + statuses.get("sending", 0),
    }, indent=2))
    if done.returncode:
        print(done.stdout[-3000:], done.stderr[-3000:])
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def seed(n: int, url: str) -> None:
    """The event's audience: n contacts with a topic and three consents each (PostgreSQL:
    COPY, else executemany), written in chunks."""
    from sqlalchemy import insert

    from promo.db import get_engine, is_postgres, session_scope
    from promo.db.models import Consent, Contact, ContactTopic, utcnow

    granted = START - timedelta(days=90)
    postgres = is_postgres(get_engine(url))
    # COPY writes the columns as given: the store's times are UTC without a zone
    stamp = utcnow().replace(tzinfo=None)
    if postgres:
        granted = granted.astimezone(UTC).replace(tzinfo=None)

    def contacts(ids: range) -> list[tuple]:
        return [(i, "ru", "Europe/Moscow", f"Гость {i}", f"c{i}@example.org", f"+7916{i:07d}",
                 800000 + i, *((stamp, stamp) if postgres else ())) for i in ids]

    columns = ("id", "language", "timezone", "name", "email", "phone", "telegram_chat_id",
               *(("created_at", "updated_at") if postgres else ()))
    for lo in range(1, n + 1, 50_000):
        ids = range(lo, min(n, lo + 49_999) + 1)
        if postgres:
            with get_engine(url).begin() as conn:
                cursor = conn.connection.cursor()
                copy(cursor, "contacts", columns, contacts(ids))
                copy(cursor, "contact_topics", ("contact_id", "topic"),
                     [(i, "python") for i in ids])
                copy(cursor, "consents", ("contact_id", "channel", "granted_at",
                                          "granted_source"),
                     [(i, ch, granted, "bench") for i in ids for ch in CHANNELS])
            continue
        with session_scope(url) as s:
            s.execute(insert(Contact), [dict(zip(columns, row, strict=True))
                                        for row in contacts(ids)])
            s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"} for i in ids])
            s.execute(insert(Consent), [
                {"contact_id": i, "channel": ch, "granted_at": granted, "granted_source": "bench"}
                for i in ids for ch in CHANNELS])
    if postgres:
        with get_engine(url).begin() as conn:
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('contacts', 'id'), "
                                 f"{n})")
            conn.exec_driver_sql("ANALYZE")


def copy(cursor, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as c:
        for row in rows:
            c.write_row(row)


def outbox_keys(outbox: Path) -> Counter:
    """Ledger key -> how many times the outbox holds it (JSON lines, .eml files, .mbox)."""
    seen: Counter = Counter()
    for f in outbox.rglob("*.*"):
        if f.suffix == ".jsonl":
            with f.open(encoding="utf-8") as lines:
                for line in lines:
                    seen[json.loads(line).get("key")] += 1
        elif f.suffix == ".eml":
            m = re.search(r"X-Promo-Key: (\S+)", f.read_text(encoding="utf-8",
                                                               errors="replace"))
            seen[m.group(1) if m else f.name] += 1
        elif f.suffix == ".mbox":  # gigabytes at a million: grep reads them fastest
            grep = subprocess.Popen(["grep", "-a", "^X-Promo-Key: ", str(f)],
                                    stdout=subprocess.PIPE)
            for line in io.TextIOWrapper(grep.stdout, encoding="utf-8"):
                seen[line.split(": ", 1)[1].strip()] += 1
            grep.wait()
    return seen


if __name__ == "__main__":
    main()
