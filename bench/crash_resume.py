"""Benchmark: crash-and-resume rounds on a live wave.

    .venv/bin/python bench/crash_resume.py [--contacts 1000] [--crashes 15] [--latency 0.05]

A wave in `all` mode on email, SMS, VK and Telegram (4 messages per contact) goes to the
provider fakes (`tests/fakes`, served from this process) through the real `wave_flow`, each
run its own process (`tests/crash_worker.py`) on one SQLite store and one temporary Prefect
API. Each round starts the wave again (the resume of the round before) and SIGKILLs it at a
random moment while it sends; after the last crash one more run finishes the wave.

Prints per crash: messages in flight at the kill (`sending` rows), how many of them ended
`uncertain`, and the time from the kill until the next run had taken the dead run's messages
over (none of them `sending` any more). At the end: crashes, duplicates (a message the fakes
received twice), lost (recorded sent, never received; or left planned/sending), uncertain
per crash, and the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
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
SID, TOKEN = "AC" + "9" * 32, "bench-token"
BOT = "424243:crash-bench"
CAMPAIGN = """\
campaign:
  announce: {channels: [email, sms, vk, telegram], mode: all}
  last_call: null
  reminder: null
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--crashes", type=int, default=15)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="promo-crash-bench-"))
    os.environ.update({
        "PREFECT_HOME": str(folder / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_SERVER_LEVEL": "CRITICAL", "PREFECT_LOGGING_LEVEL": "ERROR",
        "PROMO_DATABASE_URL": f"sqlite:///{folder / 'promo.db'}",
        "PROMO_OUTBOX_DIR": str(folder / "outbox"),
    })
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness
    from sqlalchemy import insert, select

    from flows.store import save_event
    from promo.db import session_scope
    from promo.db.models import Consent, Contact, ContactTopic, Message
    from promo.domain.event import load_event
    from tests.fakes import FakeSendGrid, FakeTelegram, FakeTwilio, FakeVK
    from tests.helpers import write_event

    kw = {"latency": args.latency}
    fakes = {"email": FakeSendGrid("SG.crash", **kw).start(),
             "twilio": FakeTwilio(SID, TOKEN, **kw).start(),
             "vk": FakeVK("vk-group", "vk-user", 777, **kw).start(),
             "telegram": FakeTelegram(BOT, **kw).start()}
    os.environ.update({
        "PROMO_SENDGRID_API_KEY": "SG.crash", "PROMO_SENDGRID_HOST": fakes["email"].url,
        "PROMO_TWILIO_ACCOUNT_SID": SID, "PROMO_TWILIO_AUTH_TOKEN": TOKEN,
        "PROMO_TWILIO_FROM": "+15005550006", "PROMO_TWILIO_BASE_URL": fakes["twilio"].url,
        "PROMO_VK_GROUP_TOKEN": "vk-group", "PROMO_VK_GROUP_ID": "777",
        "PROMO_VK_API_URL": fakes["vk"].url + "/method/",
        "PROMO_TELEGRAM_BOT_TOKEN": BOT,
        "PROMO_TELEGRAM_BASE_URL": fakes["telegram"].url + "/bot",
        # SMS through a Messaging Service with a pool of senders, as in bench/send_wave.py
        "PROMO_RATE_LIMITS": json.dumps({"twilio_sms": 30}),
    })
    n = args.contacts
    path = write_event(folder, START, extra=CAMPAIGN)
    with session_scope() as s:
        event_id = save_event(s, load_event(path), path).id
        s.execute(insert(Contact), [
            {"id": i, "language": "ru", "timezone": "Europe/Moscow", "name": f"Гость {i}",
             "email": f"c{i}@example.org", "phone": f"+7916{i:07d}", "vk_id": 500000 + i,
             "telegram_chat_id": 800000 + i} for i in range(1, n + 1)])
        s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"}
                                         for i in range(1, n + 1)])
        s.execute(insert(Consent), [
            {"contact_id": i, "channel": ch, "granted_at": START - timedelta(days=90),
             "granted_source": "bench"}
            for i in range(1, n + 1) for ch in ("email", "sms", "vk", "telegram")])
    total = n * 4

    def received() -> int:
        return sum(len(f.received) for f in fakes.values())

    def sending() -> set[int]:
        with session_scope() as s:
            return set(s.scalars(select(Message.id).where(Message.event_id == event_id,
                                                          Message.status == "sending")))

    def statuses(ids: set[int]) -> Counter:
        with session_scope() as s:
            return Counter(s.scalars(select(Message.status).where(Message.id.in_(list(ids)))))

    with prefect_test_harness(server_startup_timeout=120):
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}

        def run() -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "-m", "tests.crash_worker", "python-meetup-74", "announce",
                 ANNOUNCE.isoformat()], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)

        rounds: list[dict] = []
        proc = run()
        for crash in range(args.crashes):
            # kill at a random point while it sends (after it has sent something new)
            target = received() + rng.randint(5, max(6, total // (args.crashes * 2)))
            while received() < target and proc.poll() is None:
                time.sleep(0.005)
            if proc.poll() is not None:
                print(f"crash {crash + 1}: the wave finished before the kill", flush=True)
                break
            proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            proc.wait()
            in_flight = sending()
            proc = run()  # resume at once
            while in_flight & sending() and proc.poll() is None:
                time.sleep(0.02)
            resumed = time.monotonic() - killed_at
            # the resumed run settles them in its first step; wait until it has
            settled = statuses(in_flight)
            rounds.append({"in_flight": len(in_flight), "taken_over_s": resumed,
                           "ids": in_flight, "settled": settled})
            print(f"crash {crash + 1}: {len(in_flight)} in flight, taken over "
                  f"{resumed:.1f} s after the kill", flush=True)
        proc.wait(timeout=600)
        last = run()  # whatever the last round left
        last.wait(timeout=600)

    with session_scope() as s:
        rows = s.execute(select(Message.id, Message.channel, Message.status, Message.contact_id)
                         .where(Message.event_id == event_id)).all()
    got = {
        "email": Counter(int(to[1:].split("@")[0]) for m in fakes["email"].received
                         for to in m["to"]),
        "sms": Counter(int(m["to"][5:]) for m in fakes["twilio"].received),
        "vk": Counter(m["peer_id"] - 500000 for m in fakes["vk"].received),
        "telegram": Counter(m["chat_id"] - 800000 for m in fakes["telegram"].received),
    }
    for f in fakes.values():
        f.stop()
    duplicates = sum(c - 1 for counts in got.values() for c in counts.values() if c > 1)
    status_of = {r.id: r.status for r in rows}
    lost = sum(1 for r in rows if r.status in ("planned", "sending")
               or (r.status == "sent" and got[r.channel][r.contact_id] == 0))
    uncertain_ids = {i for i, st in status_of.items() if st == "uncertain"}
    per_crash = [len(uncertain_ids & r["ids"]) for r in rounds]
    print(json.dumps({
        "messages": total, "crashes": len(rounds), "duplicates": duplicates, "lost": lost,
        "statuses": dict(Counter(status_of.values())),
        "in_flight_per_crash": [r["in_flight"] for r in rounds],
        "uncertain_per_crash": per_crash,
        "uncertain_per_crash_mean": round(statistics.mean(per_crash), 2) if per_crash else 0,
        "uncertain_per_crash_max": max(per_crash, default=0),
        "time_to_take_over_s_median": round(statistics.median(
            r["taken_over_s"] for r in rounds), 2) if rounds else None,
        "time_to_take_over_s_max": round(max((r["taken_over_s"] for r in rounds), default=0), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
