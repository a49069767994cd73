"""Benchmark: `promo run` of one large wave on the embedded defaults (outbox, SQLite).

    .venv/bin/python bench/run_wave.py [--contacts 100000]

Seeds a fresh SQLite store in a temporary folder with the contacts (an email address, a
phone and a Telegram chat each, consent on all three, following the event's topic), writes
an event whose announce wave is due, then runs the real command line as a user would,
`promo run EVENT.yaml --wave announce --now ...`, with the default settings (no provider
credentials: every channel writes to the outbox; a temporary Prefect server). Prints the
command's wall time and peak memory (RSS of the `promo` process, from /usr/bin/time), and
checks that every message was sent once: each `sent` row is in the outbox once, nothing is
left planned or sending.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="promo-run-bench-"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROMO_", "PREFECT_API"))}
    env.update({"PROMO_DATABASE_URL": f"sqlite:///{folder / 'promo.db'}",
                "PROMO_OUTBOX_DIR": str(folder / "outbox"),
                "PREFECT_HOME": str(folder / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING"})
    os.environ.update({k: env[k] for k in ("PROMO_DATABASE_URL", "PROMO_OUTBOX_DIR")})
    from sqlalchemy import insert, select

    from promo.db import session_scope
    from promo.db.models import Consent, Contact, ContactTopic, Message
    from tests.helpers import write_event

    n = args.contacts
    path = write_event(folder, START, extra=CAMPAIGN)
    t = time.monotonic()
    with session_scope() as s:
        for lo in range(1, n + 1, 20_000):
            ids = range(lo, min(n, lo + 19_999) + 1)
            s.execute(insert(Contact), [
                {"id": i, "language": "ru", "timezone": "Europe/Moscow", "name": f"Гость {i}",
                 "email": f"c{i}@example.org", "phone": f"+7916{i:07d}",
                 "telegram_chat_id": 800000 + i} for i in ids])
            s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"} for i in ids])
            s.execute(insert(Consent), [
                {"contact_id": i, "channel": ch, "granted_at": START - timedelta(days=90),
                 "granted_source": "bench"} for i in ids for ch in ("email", "telegram", "sms")])
    print(f"seeded {n:,} contacts in {time.monotonic() - t:.1f} s", flush=True)
    t = time.monotonic()
    run = subprocess.run(
        ["/usr/bin/time", "-v", str(ROOT / ".venv/bin/promo"), "run", str(path), "--wave",
         "announce", "--now", ANNOUNCE.isoformat()],
        cwd=folder, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
    with session_scope() as s:
        statuses = Counter(s.scalars(select(Message.status)))
        keys = {k for k, st in s.execute(select(Message.key, Message.status)) if st == "sent"}
    seen: Counter = Counter()
    for f in (folder / "outbox").rglob("*"):
        if f.suffix == ".jsonl":
            for line in f.read_text(encoding="utf-8").splitlines():
                seen[json.loads(line).get("key")] += 1
        elif f.suffix == ".eml":
            m = re.search(r"X-Promo-Key: (\S+)", f.read_text(encoding="utf-8",
                                                                      errors="replace"))
            seen[m.group(1) if m else f.name] += 1
    twice = sum(1 for c in seen.values() if c > 1)
    print(json.dumps({
        "contacts": n, "exit": run.returncode, "wall_s": round(wall, 1),
        "peak_rss_mb": round(int(peak.group(1)) / 1024) if peak else None,
        "ledger": dict(statuses), "outbox_files_or_lines": sum(seen.values()),
        "sent_rows": len(keys), "sent_twice": twice,
        "left_planned_or_sending": statuses.get("planned", 0) + statuses.get("sending", 0),
    }, indent=2))
    if run.returncode:
        print(run.stdout[-3000:], run.stderr[-3000:])


if __name__ == "__main__":
    main()
