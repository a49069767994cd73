"""Nothing lost, nothing twice, under SIGKILL: a live wave against the provider fakes is
killed while deciding, while sending and between two groups, and run again at once; then two
workers share one PostgreSQL store and one is killed while the other keeps sending.

Every message ends delivered exactly once (as the fakes saw it) or recorded `uncertain` or
`failed`; nothing stays `sending` or `planned`; and what is uncertain after a kill is only
what the killed process had in flight: at most `send_batches_in_flight` groups, each of at
most `send_concurrency` requests (a SendGrid request carries several recipients: a group
holds at most half a second of the account's pace).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select

from flows.store import save_event
from promo.db import session_scope
from promo.db.models import Consent, Contact, ContactTopic, Message, SendWorker
from promo.domain.event import load_event
from promo.settings import reset_settings
from tests.fakes import FakeSendGrid, FakeTelegram, FakeTwilio, FakeVK
from tests.helpers import write_event

ROOT = Path(__file__).resolve().parent.parent
MSK = ZoneInfo("Europe/Moscow")
START = datetime(2027, 3, 18, 19, 0, tzinfo=MSK)
ANNOUNCE = START - timedelta(days=14) + timedelta(hours=-8)
CAMPAIGN = """\
campaign:
  announce: {channels: [email, sms, vk, telegram], mode: all}
  last_call: null
  reminder: null
"""
SID, TOKEN, SENDER = "AC" + "8" * 32, "crash-token", "+15005550006"
BOT = "555999:crash-bot"
CONTACTS = 300
IN_FLIGHT, CONCURRENCY = 4, 4
# messages one process may have in flight: its groups, each of at most CONCURRENCY requests;
# a SendGrid request carries the whole group (the same content): at most a batch of 100
BOUND = IN_FLIGHT * 100


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    kw = {"latency": 0.05}
    made = {"email": FakeSendGrid("SG.crash", **kw).start(),
            "twilio": FakeTwilio(SID, TOKEN, **kw).start(),
            "vk": FakeVK("vk-group", "vk-user", 777, **kw).start(),
            "telegram": FakeTelegram(BOT, **kw).start()}
    env = {
        "PROMO_SENDGRID_API_KEY": "SG.crash", "PROMO_SENDGRID_HOST": made["email"].url,
        "PROMO_TWILIO_ACCOUNT_SID": SID, "PROMO_TWILIO_AUTH_TOKEN": TOKEN,
        "PROMO_TWILIO_FROM": SENDER, "PROMO_TWILIO_BASE_URL": made["twilio"].url,
        "PROMO_VK_GROUP_TOKEN": "vk-group", "PROMO_VK_GROUP_ID": "777",
        "PROMO_VK_API_URL": made["vk"].url + "/method/",
        "PROMO_TELEGRAM_BOT_TOKEN": BOT, "PROMO_TELEGRAM_BASE_URL": made["telegram"].url + "/bot",
        "PROMO_RATE_LIMITS": json.dumps({"sendgrid": 60, "twilio_sms": 60, "vk_group": 20,
                                         "telegram": 60}),
        "PROMO_SEND_BATCHES_IN_FLIGHT": str(IN_FLIGHT),
        "PROMO_SEND_CONCURRENCY": str(CONCURRENCY),
        "PROMO_SEND_BATCH_SIZE": "100",
        "PROMO_SEND_LEASE_SECONDS": "3",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    yield made
    for fake in made.values():
        fake.stop()


def seed(folder: Path) -> int:
    path = write_event(folder, START, extra=CAMPAIGN)
    with session_scope() as s:
        event_id = save_event(s, load_event(path), path).id
        s.execute(insert(Contact), [
            {"id": i, "language": "ru", "timezone": "Europe/Moscow",
             "email": f"c{i}@example.org", "phone": f"+7916{i:07d}", "vk_id": 500000 + i,
             "telegram_chat_id": 800000 + i, "name": f"Гость {i}"}
            for i in range(1, CONTACTS + 1)])
        s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"}
                                         for i in range(1, CONTACTS + 1)])
        s.execute(insert(Consent), [
            {"contact_id": i, "channel": ch, "granted_at": START - timedelta(days=90),
             "granted_source": "test"}
            for i in range(1, CONTACTS + 1) for ch in ("email", "sms", "vk", "telegram")])
    return event_id


def worker(kill: str | None = None) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    env.pop("CRASH_WORKER_KILL", None)
    if kill:
        env["CRASH_WORKER_KILL"] = kill
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_worker", "python-meetup-74", "announce",
         ANNOUNCE.isoformat()], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def received(fakes: dict) -> int:
    return sum(len(f.received) for f in fakes.values())


def kill_when(proc: subprocess.Popen, fakes: dict, at: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while received(fakes) < at:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the wave did not get going"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode if proc.returncode else 0 if not out else proc.returncode


def sending(event_id: int) -> dict[int, str | None]:
    """The messages in `sending` now, and who claimed them."""
    with session_scope() as s:
        return dict(s.execute(select(Message.id, Message.claimed_by).where(
            Message.event_id == event_id, Message.status == "sending")).all())


def check_final(event_id: int, fakes: dict, kills: list[dict[int, str | None]]) -> dict:
    """Every message once or uncertain/failed; nothing waiting; no duplicate anywhere."""
    with session_scope() as s:
        rows = s.execute(select(Message.id, Message.channel, Message.status, Message.contact_id)
                         .where(Message.event_id == event_id)).all()
    statuses = Counter(r.status for r in rows)
    assert not statuses["sending"] and not statuses["planned"], statuses
    assert len(rows) == CONTACTS * 4
    got = {
        "email": Counter(int(to[1:].split("@")[0]) for m in fakes["email"].received
                         for to in m["to"]),
        "sms": Counter(int(m["to"][5:]) for m in fakes["twilio"].received),
        "vk": Counter(m["peer_id"] - 500000 for m in fakes["vk"].received),
        "telegram": Counter(m["chat_id"] - 800000 for m in fakes["telegram"].received),
    }
    for channel, counts in got.items():
        assert max(counts.values()) == 1, f"{channel}: sent twice"  # nothing twice
    uncertain = set()
    for r in rows:
        n = got[r.channel][r.contact_id]
        if r.status == "sent":
            assert n == 1, f"{r.channel} to {r.contact_id}: recorded sent, never arrived"
        elif r.status == "uncertain":
            # VK was sent again under its random_id, Twilio asked: only the others stay in doubt
            assert r.channel in ("email", "telegram"), r
            uncertain.add(r.id)
        else:
            assert r.status == "failed" and n == 0, (r, n)
    # only what a killed process had in flight is in doubt, and never more than it may have
    in_doubt = set().union(*kills) if kills else set()
    assert uncertain <= in_doubt
    for k in kills:
        assert len(uncertain & set(k)) <= BOUND
    return {"uncertain": len(uncertain), "statuses": dict(statuses)}


def test_a_wave_killed_at_any_point_resumes_at_once(prefect_api: None, fakes: dict,
                                                    store: Path) -> None:
    event_id = seed(store)
    total = CONTACTS * 4
    kills: list[dict[int, str | None]] = []
    # 1. while deciding: the decisions' transaction dies with the process, nothing is half-done
    p = worker("deciding")
    out, _ = p.communicate(timeout=180)
    assert p.returncode == -signal.SIGKILL, out
    with session_scope() as s:
        assert s.scalar(select(Message.id).where(Message.event_id == event_id)) is None
    # 2. while sending: killed from outside, at a third of the wave
    p = worker()
    kill_when(p, fakes, total // 3)
    kills.append(sending(event_id))
    assert len(kills[-1]) <= BOUND
    # 3. between two groups: the group is recorded, the next one not claimed
    p = worker("between:6")
    p.wait(timeout=180)
    assert p.returncode == -signal.SIGKILL
    kills.append(sending(event_id))
    # 4. the run after: everything not yet sent goes, the rest is resolved
    started = time.monotonic()
    p = worker()
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    assert time.monotonic() - started < 120
    result = check_final(event_id, fakes, kills)
    print("in flight at each kill:", [len(k) for k in kills], result)
    assert result["statuses"].get("sent", 0) + result["uncertain"] == total, result


def test_two_workers_one_killed_the_other_finishes(prefect_api: None, fakes: dict,
                                                   pg_store: str, tmp_path: Path) -> None:
    event_id = seed(tmp_path)
    total = CONTACTS * 4
    first, second = worker(), worker()
    try:
        kill_when(first, fakes, total // 3)
        at_kill = sending(event_id)
        with session_scope() as s:
            dead = s.scalar(select(SendWorker.id).where(SendWorker.pid == first.pid))
        mine = {i: w for i, w in at_kill.items() if w == dead}
        theirs = {i: w for i, w in at_kill.items() if w != dead}
        out, _ = second.communicate(timeout=300)
        assert second.returncode == 0, out
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
    result = check_final(event_id, fakes, [mine])
    print("the dead worker's in flight:", len(mine), "the survivor's:", len(theirs), result)
    # the survivor's own messages in flight at that moment were never taken for the dead one's
    with session_scope() as s:
        theirs_now = dict(s.execute(select(Message.id, Message.status)
                                    .where(Message.id.in_(list(theirs)))).all())
    assert "uncertain" not in theirs_now.values()
    assert result["statuses"].get("sent", 0) + result["uncertain"] == total, result


def test_a_killed_promo_run_leaves_no_temporary_prefect_server(store: Path) -> None:
    """`promo run` with no Prefect server configured starts a temporary one (uvicorn); a
    SIGKILL of the command takes the server with it (PR_SET_PDEATHSIG)."""
    path = write_event(store, START, extra=CAMPAIGN)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(store / "prefect-home")
    proc = subprocess.Popen([sys.executable, "-m", "promo.cli", "run", str(path), "--now",
                             ANNOUNCE.isoformat()], cwd=store, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    deadline = time.monotonic() + 120
    try:
        while server is None and time.monotonic() < deadline and proc.poll() is None:
            found = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "uvicorn"],
                                   check=False, capture_output=True, text=True).stdout.split()
            server = int(found[0]) if found else None
            time.sleep(0.2)
        assert server is not None, "the temporary server never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{server}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        state = Path(f"/proc/{server}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        state = "gone"
    assert state in ("gone", "Z"), f"uvicorn {server} outlived its parent ({state})"
