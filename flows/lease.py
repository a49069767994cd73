"""The sending process's lease: how another process knows whether the worker that claimed a
message is still alive.

Every process that claims messages registers once (`current_lease`) as a `SendWorker` row
and renews its `lease_until` from a background thread every quarter of
`send_lease_seconds`. Its claimed rows (`sending`, `claimed_by` = its id) are never taken
over while it lives. It is dead when
- its lease ran out (any machine: it stopped renewing `send_lease_seconds` ago), or
- it ran on this machine (same hostname and boot id) and its process is gone, or its pid
  now belongs to a process started at another time: known at once, no waiting.
Across machines the lease compares the workers' clocks: keep them in sync (NTP) to well
under `send_lease_seconds`.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select, update

from promo.db import has_engine, session_scope
from promo.db.models import SendWorker, utcnow

log = logging.getLogger(__name__)


def host_id() -> str:
    """This machine: its hostname and this boot (a pid means nothing after a reboot)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"[:200]


def process_start(pid: int) -> str | None:
    """When the process started (clock ticks since boot), so that a reused pid is not
    taken for the worker; None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count from its end
    return stat.rsplit(")", 1)[1].split()[19]


def _process_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    now_started = process_start(pid)
    return started is None or now_started is None or now_started == started


class Lease:
    """This process's registration as a sending worker, renewed until the process ends."""

    def __init__(self, database_url: str, seconds: float) -> None:
        self.id = uuid.uuid4().hex
        self.url = database_url
        self.seconds = seconds
        self._stop = threading.Event()
        pid = os.getpid()
        with session_scope(self.url) as s:
            s.add(SendWorker(id=self.id, host=host_id(), pid=pid,
                             process_start=process_start(pid), started_at=utcnow(),
                             lease_until=utcnow() + timedelta(seconds=seconds)))
        self._thread = threading.Thread(target=self._renew, name="send-lease", daemon=True)
        self._thread.start()

    def _pause(self, seconds: float) -> bool:
        """Sleep for `seconds`, or less once stopped; True when stopped. In short sleeps, not
        `Event.wait(timeout)`: under a moved clock (libfaketime, the suite's year-ahead pass)
        a timed wait never returns, the lease ran out while its process lived, and another
        process took over messages still in flight."""
        end = time.monotonic() + seconds
        while not self._stop.is_set() and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.25))
        return self._stop.is_set()

    def _renew(self) -> None:
        while not self._pause(self.seconds / 4):
            if not has_engine(self.url):
                self._stop.set()  # the store was closed (tests, a settings change): done
                return
            try:
                with session_scope(self.url) as s:
                    s.execute(update(SendWorker).where(SendWorker.id == self.id)
                              .values(lease_until=utcnow() + timedelta(seconds=self.seconds)))
            except Exception as exc:  # noqa: BLE001 - a busy database: try again next round
                log.warning("send lease: could not renew: %s", exc)

    def stop(self) -> None:
        """A clean exit: nothing of ours is in flight any more."""
        self._stop.set()
        try:
            with session_scope(self.url) as s:
                s.execute(delete(SendWorker).where(SendWorker.id == self.id))
        except Exception as exc:  # noqa: BLE001 - at exit: the lease runs out by itself
            log.debug("send lease: not released: %s", exc)


_leases: dict[str, Lease] = {}
_lock = threading.Lock()


def current_lease(database_url: str, seconds: float) -> Lease:
    """This process's lease on this store, taken on first use."""
    with _lock:
        lease = _leases.get(database_url)
        if lease is None or lease.seconds != seconds or lease._stop.is_set():
            lease = _leases[database_url] = Lease(database_url, seconds)
            atexit.register(lease.stop)
        return lease


def dead_workers(session, now: datetime | None = None) -> tuple[set[str], set[str]]:
    """(dead, alive): the ids of the registered workers, by the tests above. Dead rows are
    deleted once their messages are taken over (`forget_workers`)."""
    now = now or utcnow()
    here = host_id()
    dead, alive = set(), set()
    for w in session.scalars(select(SendWorker)):
        gone = w.lease_until < now or (w.host == here and not _process_alive(w.pid,
                                                                              w.process_start))
        (dead if gone else alive).add(w.id)
    return dead, alive


def forget_workers(session, ids: set[str]) -> None:
    if ids:
        session.execute(delete(SendWorker).where(SendWorker.id.in_(ids)))
