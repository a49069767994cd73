"""Caps hold when waves of different campaigns send at the same moment from several workers.

Three campaigns each have an SMS and an email message due for every contact of one shared
audience at the same instant: together far over the caps (SMS 1 per 7 days, email 3, all
channels 4). Their batches are sent at once from threads and from separate processes
against one database. The send-time claim must let through exactly what the caps allow.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from flows.ledger import message_key
from flows.send import send_batch
from flows.store import save_event
from promo.db import session_scope
from promo.db.models import Consent, Contact, ContactTopic, Message
from promo.domain.event import parse_event
from promo.settings import get_settings
from tests.helpers import EVENT_TEMPLATE

NOW = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)  # 12:00 in Moscow: inside every send window
CONTACTS = 120
CAMPAIGNS = ("meetup-a", "meetup-b", "meetup-c")

CHILD = """
import json, sys, time
from datetime import datetime
from flows.send import send_batch
from promo.settings import get_settings
ids, now, start = json.loads(sys.argv[1]), datetime.fromisoformat(sys.argv[2]), float(sys.argv[3])
settings = get_settings()
time.sleep(max(0.0, start - time.time()))
for batch in ids:
    send_batch(batch, now, settings)
"""


def seed() -> dict[str, list[int]]:
    """The audience, three events and their due messages; returns message ids per campaign."""
    with session_scope() as s:
        s.execute(insert(Contact), [
            {"id": i, "name": f"Contact {i}", "email": f"c{i}@example.org",
             "phone": f"+7916{i:07d}", "timezone": "Europe/Moscow", "language": "en"}
            for i in range(1, CONTACTS + 1)])
        s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"}
                                         for i in range(1, CONTACTS + 1)])
        s.execute(insert(Consent), [
            {"contact_id": i, "channel": ch, "granted_at": NOW - timedelta(days=100),
             "granted_source": "test"} for i in range(1, CONTACTS + 1) for ch in ("sms", "email")])
        ids: dict[str, list[int]] = {}
        for slug in CAMPAIGNS:
            spec = parse_event(EVENT_TEMPLATE.format(
                slug=slug, starts_at=(NOW + timedelta(days=10)).isoformat()))
            event = save_event(s, spec)
            rows = [{"key": message_key(slug, "announce", i, ch), "event_id": event.id,
                     "wave": "announce", "contact_id": i, "channel": ch, "status": "planned",
                     "send_at": NOW, "decided_at": NOW, "counts_for_caps": True, "attempts": 0,
                     "updated_at": NOW}
                    for i in range(1, CONTACTS + 1) for ch in ("sms", "email")]
            s.execute(insert(Message), rows)
            s.flush()
            ids[slug] = list(s.scalars(select(Message.id).where(Message.event_id == event.id)))
    return ids


def batches_of(ids: list[int], size: int, rng: random.Random) -> list[list[int]]:
    """Large batches in contact order: every worker reaches the same contacts at the same time."""
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def check_caps() -> Counter:
    with session_scope() as s:
        rows = s.execute(select(Message.contact_id, Message.channel, Message.status)).all()
    statuses = Counter(r.status for r in rows)
    assert statuses["planned"] == 0 and statuses["sending"] == 0, statuses
    if statuses["failed"]:
        with session_scope() as s:
            reasons = Counter(s.scalars(select(Message.reason).where(Message.status == "failed")))
        raise AssertionError(f"failed sends: {reasons.most_common(3)}")
    sent = Counter((r.contact_id, r.channel) for r in rows if r.status == "sent")
    total = Counter(r.contact_id for r in rows if r.status == "sent")
    for cid in range(1, CONTACTS + 1):
        assert sent[(cid, "sms")] <= 1, f"contact {cid}: {sent[(cid, 'sms')]} SMS in a week"
        assert sent[(cid, "email")] <= 3
        assert total[cid] <= 4, f"contact {cid}: {total[cid]} messages in a week"
        # the caps are also filled: nothing was refused that had room
        assert total[cid] == 4 and sent[(cid, "sms")] == 1
    return statuses


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request):
    if request.param == "sqlite":
        return request.getfixturevalue("store")
    return request.getfixturevalue("pg_store")


def test_concurrent_waves_never_exceed_a_cap(any_store, tmp_path):
    ids = seed()
    rng = random.Random(1)
    # two campaigns from threads in this process ...
    threaded = [batches_of(ids[slug], 80, rng) for slug in CAMPAIGNS[:2]]
    # ... and the third split over two other processes (other workers)
    third = batches_of(ids[CAMPAIGNS[2]], 80, rng)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    # every worker starts at the same moment, once the processes have imported everything
    start = time.time() + 4
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(part), NOW.isoformat(),
                          str(start)],
                         env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        for part in (third[0::2], third[1::2])
    ]
    errors: list[BaseException] = []

    def worker(batches: list[list[int]]) -> None:
        time.sleep(max(0.0, start - time.time()))
        try:
            for b in batches:
                send_batch(b, NOW, get_settings())
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(b,)) for b in threaded]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
    assert not errors, errors
    statuses = check_caps()
    assert statuses["sent"] == CONTACTS * 4
    assert statuses["capped"] == CONTACTS * 2
