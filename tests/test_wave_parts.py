"""One wave sent by several flow runs (flows/parts.py): each part in its own process, as on
separate workers, against the provider fakes and one store (SQLite and PostgreSQL).

- two parts send a wave: every message arrives once, the ledger is all `sent`, and each
  part sent a real share of it (the work was split, not done twice over or by one);
- two waves of two events at once, each in two parts (four processes): the caps hold per
  contact exactly as with one sender (one SMS a week), and are filled;
- a part killed with SIGKILL mid-wave: the other part sends the rest of its share and
  settles what it had in flight; nothing twice, nothing left waiting;
- the wave run against a Prefect API with a real `wave-part` deployment: it starts its
  other part as a named, tagged subflow run; one that a process executes sends its share;
  one that no worker starts is cancelled, and the wave run has sent everything itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from flows.ledger import message_key
from flows.store import save_event
from flows.wave import prepare_wave
from promo.db import session_scope
from promo.db.models import Consent, Contact, ContactTopic, Message, SendWorker
from promo.domain.event import parse_event
from promo.settings import get_settings, reset_settings
from tests.helpers import EVENT_TEMPLATE
from tests.test_crash_resume import (  # noqa: F401 - `fakes`: the fixture
    ANNOUNCE,
    CONTACTS,
    ROOT,
    check_final,
    fakes,
    seed,
    sending,
)

SLUG, WAVE = "python-meetup-74", "announce"
TOTAL = CONTACTS * 4  # email, sms, vk and telegram for every contact (mode: all)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest) -> object:
    return request.getfixturevalue("store" if request.param == "sqlite" else "pg_store")


def part(k: int, n: int, slug: str = SLUG, now: datetime = ANNOUNCE,
         start_at: float | None = None) -> subprocess.Popen:
    """Part k of n of the wave in a process of its own (tests/crash_worker.py), beginning at
    `start_at` (time.time()) if given."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    env.pop("CRASH_WORKER_KILL", None)
    if start_at:
        env["CRASH_WORKER_START_AT"] = str(start_at)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_worker", slug, WAVE, now.isoformat(), f"{k}/{n}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sent_by(proc: subprocess.Popen, timeout: float = 300) -> Counter:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return Counter(json.loads(out.strip().splitlines()[-1]))


def claimers(event_id: int) -> Counter:
    """How many of the wave's messages each sending process claimed."""
    with session_scope() as s:
        return Counter(dict(s.execute(select(Message.claimed_by, func.count()).where(
            Message.event_id == event_id).group_by(Message.claimed_by)).all()))


def test_two_parts_in_two_processes_send_each_message_once(prefect_api: None, fakes: dict,  # noqa: F811
                                                           any_store: object,
                                                           tmp_path: Path) -> None:
    event_id = seed(tmp_path)
    prepared = prepare_wave(SLUG, WAVE, ANNOUNCE, get_settings())
    assert sum(n for c in prepared.new_decisions.values() for n in c.values()) == TOTAL
    # both begin together (as two workers picking up their parts): each its own share first
    start_at = time.time() + 10
    procs = [part(0, 2, start_at=start_at), part(1, 2, start_at=start_at)]
    try:
        first, second = (sent_by(p) for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    result = check_final(event_id, fakes, [])
    assert result["statuses"] == {"sent": TOTAL}, result
    assert first["sent"] + second["sent"] == TOTAL
    # the wave was shared: each part sent a good part of it (its own share is half the
    # contacts, and the sweep may take the end of the other's)
    assert first["sent"] > TOTAL // 5 and second["sent"] > TOTAL // 5, (first, second)
    by = claimers(event_id)
    assert len(by) == 2 and min(by.values()) > TOTAL // 5, by


def seed_two_waves(contacts: int, now: datetime) -> dict[str, int]:
    """Two events with an SMS and an email due now for each contact of one audience:
    together over the SMS cap (1 a week). Recorded as the planner would have only if it had
    decided both at once: the claim is what must hold the cap."""
    events = {}
    with session_scope() as s:
        s.execute(insert(Contact), [
            {"id": i, "name": f"Contact {i}", "email": f"c{i}@example.org",
             "phone": f"+7916{i:07d}", "timezone": "Europe/Moscow", "language": "en"}
            for i in range(1, contacts + 1)])
        s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"}
                                         for i in range(1, contacts + 1)])
        s.execute(insert(Consent), [
            {"contact_id": i, "channel": ch, "granted_at": now - timedelta(days=100),
             "granted_source": "test"} for i in range(1, contacts + 1) for ch in ("sms", "email")])
        for slug in ("meetup-a", "meetup-b"):
            spec = parse_event(EVENT_TEMPLATE.format(
                slug=slug, starts_at=(now + timedelta(days=10)).isoformat()))
            event = save_event(s, spec)
            s.execute(insert(Message), [
                {"key": message_key(slug, WAVE, i, ch), "event_id": event.id, "wave": WAVE,
                 "contact_id": i, "channel": ch, "status": "planned", "send_at": now,
                 "decided_at": now, "counts_for_caps": True, "attempts": 0, "updated_at": now}
                for i in range(1, contacts + 1) for ch in ("sms", "email")])
            events[slug] = event.id
    return events


def test_two_waves_in_two_parts_each_hold_the_caps(prefect_api: None, fakes: dict,  # noqa: F811
                                                   any_store: object) -> None:
    now = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)  # 12:00 in Moscow: inside every window
    contacts = 120
    seed_two_waves(contacts, now)
    procs = [part(k, 2, slug, now) for slug in ("meetup-a", "meetup-b") for k in (0, 1)]
    try:
        for p in procs:
            sent_by(p)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    with session_scope() as s:
        rows = s.execute(select(Message.contact_id, Message.channel, Message.status)).all()
    assert Counter(r.status for r in rows) == {"sent": contacts * 3, "capped": contacts}
    sent = Counter((r.contact_id, r.channel) for r in rows if r.status == "sent")
    for cid in range(1, contacts + 1):
        assert sent[(cid, "sms")] == 1, f"contact {cid}: {sent[(cid, 'sms')]} SMS in a week"
        assert sent[(cid, "email")] == 2
    # and the providers got exactly that: one SMS per person, two emails, none twice
    sms = Counter(m["to"] for m in fakes["twilio"].received)
    assert len(sms) == contacts and set(sms.values()) == {1}
    emails = Counter(to for m in fakes["email"].received for to in m["to"])
    assert len(emails) == contacts and set(emails.values()) == {2}


def kill_mid_share(proc: subprocess.Popen, recorded: int = 30, timeout: float = 180) -> str:
    """SIGKILL a part once it has sent and recorded `recorded` messages: mid-way through its
    share, with more in flight. Returns its lease id."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the part did not get going"
        with session_scope() as s:
            lease = s.scalar(select(SendWorker.id).where(SendWorker.pid == proc.pid))
            n = s.scalar(select(func.count()).where(
                Message.claimed_by == lease, Message.status != "sending")) if lease else 0
        if n >= recorded:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return lease
        time.sleep(0.02)


def test_a_part_killed_mid_wave_is_finished_by_the_other(prefect_api: None, fakes: dict,  # noqa: F811
                                                         any_store: object,
                                                         tmp_path: Path) -> None:
    event_id = seed(tmp_path)
    prepare_wave(SLUG, WAVE, ANNOUNCE, get_settings())
    survivor, doomed = part(0, 2), part(1, 2)
    try:
        dead = kill_mid_share(doomed)
        at_kill = sending(event_id)
        with session_scope() as s:
            # the dead part's share was not done: what is left of it is the survivor's to send
            left = s.scalar(select(func.count()).where(
                Message.event_id == event_id, Message.status == "planned",
                Message.contact_id % 2 == 1))
        assert left > 0
        mine = {i: w for i, w in at_kill.items() if w == dead}
        got = sent_by(survivor)
    finally:
        for p in (survivor, doomed):
            if p.poll() is None:
                p.kill()
    result = check_final(event_id, fakes, [mine])
    assert result["statuses"].get("sent", 0) + result["uncertain"] == TOTAL, result
    # the survivor took over the dead part's messages in flight, and sent the rest of its share
    assert got["sent"] >= left, (got, left)
    with session_scope() as s:
        by_dead = Counter(s.scalars(select(Message.status).where(Message.claimed_by == dead)))
        now_held = dict(s.execute(select(Message.id, Message.claimed_by)
                                  .where(Message.id.in_(list(mine)))).all())
    print("recorded by the dead part:", by_dead, "in flight at the kill:", len(mine))
    assert by_dead["sent"] >= 30 and "sending" not in by_dead
    assert dead not in now_held.values()  # what it had in flight, the survivor took over
    print("the dead part's in flight:", len(mine), "left of its share:", left, result)


def test_the_wave_run_starts_its_parts_on_the_part_deployment(prefect_api: None, fakes: dict,  # noqa: F811
                                                              store: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """The part-starting code against a real Prefect API: a `wave-part` deployment (no
    worker polls it), the wave flow run with `send_workers` 3. Part 2 is executed by a process
    of its own as soon as it appears (`prefect flow-run execute`, what a process worker
    runs); part 3 is never started: the wave run sweeps its share and cancels it."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Pending

    from flows.campaign import wave_flow
    from flows.parts import wave_part
    from flows.schedule import known_run

    monkeypatch.setenv("PROMO_SEND_WORKERS", "3")
    # VK at 6 calls a second: the wave takes long enough for part 2's process to join in
    monkeypatch.setenv("PROMO_RATE_LIMITS", json.dumps(
        {"sendgrid": 60, "twilio_sms": 60, "vk_group": 6, "telegram": 60}))
    reset_settings()
    event_id = seed(store)
    deployment = wave_part.to_deployment(name=f"test-parts-{os.getpid()}")
    # Prefect writes the entrypoint relative to the working directory, which is the test's
    # store folder here; part 2's process runs in the project (cwd=ROOT), as prefect.yaml has it
    deployment.entrypoint = "flows/parts.py:wave_part"
    deployment.apply()
    name = f"wave-part/{deployment.name}"

    executed: list[subprocess.Popen] = []
    stop = threading.Event()

    def execute_part_two() -> None:
        """Stand in for a worker that takes part 2 (and only part 2) when it is created."""
        with get_client(sync_client=True) as client:
            while not stop.is_set():
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=["part", f"event:{SLUG}"])))
                two = [r for r in runs if r.parameters.get("part") == 1]
                if two:
                    # as a worker does: Pending, then the flow run's own process
                    client.set_flow_run_state(two[0].id, Pending())
                    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
                    executed.append(subprocess.Popen(
                        [str(Path(sys.executable).parent / "prefect"), "flow-run", "execute",
                         str(two[0].id)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True))
                    return
                time.sleep(0.2)

    helper = threading.Thread(target=execute_part_two, daemon=True)
    helper.start()
    try:
        result = wave_flow(SLUG, WAVE, ANNOUNCE.isoformat(), part_deployment=name)
    finally:
        stop.set()
        helper.join(timeout=10)
    assert executed, "part 2 was never created"
    out, _ = executed[0].communicate(timeout=120)
    assert executed[0].returncode == 0, out[-3000:]

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=["part", f"event:{SLUG}"])))
    by_part = {r.parameters["part"]: r for r in runs}
    assert set(by_part) == {1, 2}
    for k, r in by_part.items():
        assert r.name == f"{SLUG} · {WAVE} · part {k + 1} of 3"
        assert {f"event:{SLUG}", f"wave:{WAVE}", "part", "channel:email"} <= set(r.tags)
        assert r.parameters == {"event_slug": SLUG, "wave": WAVE, "part": k, "parts": 3,
                                "now": ANNOUNCE.isoformat()}
        assert r.parent_task_run_id is not None  # a subflow of the wave run in the UI
    assert by_part[1].state.type == StateType.COMPLETED, by_part[1].state
    assert by_part[2].state.type == StateType.CANCELLED, by_part[2].state
    assert {p["name"]: p["state"] for p in result["parts"]} == {
        by_part[1].name: "Completed", by_part[2].name: "Cancelled"}

    statuses = check_final(event_id, fakes, [])["statuses"]
    assert statuses == {"sent": TOTAL}
    assert result["outcomes"] and sum(result["outcomes"][c]["sent"]
                                      for c in result["outcomes"]) == TOTAL
    # the wave run sent its own share and part 3's; part 2 its own (it ran alongside)
    by = claimers(event_id)
    assert len(by) == 2 and sum(by.values()) == TOTAL, by
    assert sum(result["sent"].values()) < TOTAL
    # a part is no run of the wave: the campaign and the daily run know none for it
    assert known_run(event_id, WAVE) is None
