"""The daily run catches up a wave a worker never ran, but never runs a wave a second time
while its own scheduled run is on its way (the worker is about to start it, or runs it)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select

from flows.events import load_event
from flows.store import save_event
from promo.db import session_scope
from promo.db.models import Consent, Contact, ContactTopic, Message, WaveRun
from tests.helpers import write_event

MSK = ZoneInfo("Europe/Moscow")
START = datetime(2027, 3, 18, 19, 0, tzinfo=MSK)
ANNOUNCE = START - timedelta(days=14) + timedelta(hours=-8)  # 14 days before, 11:00
CAMPAIGN = """\
campaign:
  announce: {channels: [email]}
  last_call: null
  reminder: null
"""


def _seed(folder: Path, run_id: str) -> int:
    path = write_event(folder, START, extra=CAMPAIGN)
    with session_scope() as s:
        event = save_event(s, load_event(path), path)
        s.execute(insert(Contact), [{"id": i, "language": "ru", "timezone": "Europe/Moscow",
                                     "email": f"guest{i}@example.org"} for i in (1, 2, 3)])
        s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"} for i in (1, 2, 3)])
        s.execute(insert(Consent), [{"contact_id": i, "channel": "email", "granted_source": "t",
                                     "granted_at": START - timedelta(days=90)} for i in (1, 2, 3)])
        # what the campaign recorded when it scheduled the wave's run
        s.add(WaveRun(event_id=event.id, wave="announce", send_at=ANNOUNCE,
                      flow_run_id=run_id, state="Scheduled"))
        return event.id


def _announced(event_id: int) -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Message).where(
            Message.event_id == event_id, Message.wave == "announce"))


def test_the_daily_run_leaves_a_wave_to_its_run_on_its_way_and_catches_up_a_late_one(
        prefect_api: None, store: Path) -> None:
    from prefect import flow, get_client
    from prefect.states import Scheduled

    from flows.campaign import LATE_RUN_GRACE, reminder_flow

    @flow(name="wave")
    def wave_stand_in() -> None:  # the scheduled run only has to exist on the server
        pass

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(wave_stand_in, state=Scheduled(scheduled_time=ANNOUNCE))
    event_id = _seed(store, str(run.id))

    # minutes after the wave's time, its run not yet picked up: not the daily run's to send
    reminder_flow((ANNOUNCE + timedelta(minutes=5)).isoformat(), schedule=True)
    assert _announced(event_id) == 0

    # the run is still waiting long after its time: the worker is down, the daily run sends
    reminder_flow((ANNOUNCE + LATE_RUN_GRACE + timedelta(minutes=1)).isoformat(),
                  schedule=True)
    assert _announced(event_id) == 3
