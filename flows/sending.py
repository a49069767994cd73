"""The wave's send loop as Prefect tasks: a fixed number of batch tasks in flight, fed from a
stream of the due messages, then what is left over (taken over from a stopped worker, sent
again after a lookup, a fallback's next channel) until the wave has nothing due.

A batch task (`send_task`) sends its messages a small group at a time (`flows.send`); the
loop never holds more than `send_batches_in_flight` batches, so a wave of any size needs
the same threads, connections and memory.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from prefect import get_run_logger, tags, task
from prefect.artifacts import update_progress_artifact
from prefect.futures import PrefectFuture, as_completed

from channels.base import ConfigurationError
from flows.lease import current_lease
from flows.ledger import Share, due_counts, in_flight
from flows.resume import resolve, take_over
from flows.send import send_batch
from flows.wave import due_streams
from promo.db import session_scope
from promo.settings import Settings

# a pass that leaves messages due again (taken over, a fallback) is followed by another;
# a guard, not a limit in practice
MAX_PASSES = 20


def _parse(now: str) -> datetime:
    return datetime.fromisoformat(now)


@dataclass
class BatchResult:
    """One send task's outcome counts, or the setting its channel lacks."""

    counts: dict[str, int] = field(default_factory=dict)
    misconfigured: str | None = None


@task(name="send-batch", task_run_name="send {channel} batch of {size}")
def send_task(message_ids: list[int], now: str, channel: str, size: int) -> BatchResult:
    from promo.settings import get_settings

    try:
        return BatchResult(dict(send_batch(message_ids, _parse(now), get_settings(),
                                           get_run_logger())))
    except ConfigurationError as exc:
        # the batch recorded what went; the rest stays planned for a run with the fix.
        # Said in one line (the wave ends Failed with it), not a traceback per task
        get_run_logger().error("%s: %s; its unsent messages stay planned", channel, exc)
        return BatchResult(misconfigured=f"{channel}: {exc}")


@task(name="take-over", task_run_name="take over {wave} from stopped workers")
def resume_task(event_id: int, wave: str, now: str) -> dict[str, int]:
    """The messages stopped workers left `sending`: resolved, or back to be sent."""
    from promo.settings import get_settings

    settings = get_settings()
    taken = take_over(event_id, wave, settings)
    return dict(resolve(taken, _parse(now), settings, get_run_logger())) if taken else {}


@dataclass
class SendProgress:
    sent: Counter = field(default_factory=Counter)
    misconfigured: list[str] = field(default_factory=list)
    taken_over: int = 0
    done: int = 0


@dataclass
class Progress:
    """The wave run's progress bar, moved at most every PROGRESS_EVERY seconds (a million
    messages are 2,000 batches: a call to the Prefect API each was a queue the loaded
    server once took a minute to answer). With one sender, what this run has done; with
    parts (`whole_wave`), what is no longer due or in flight anywhere, read from the ledger
    (a count over the wave's rows)."""

    artifact_id: object | None
    event_slug: str
    wave: str
    whole_wave: bool = False
    total: int = 0
    _last: float = 0.0

    def update(self, event_id: int, now: datetime, done: int, settings: Settings,
               final: bool = False) -> None:
        if self.artifact_id is None or not self.total:
            return
        if not final and time.monotonic() - self._last < PROGRESS_EVERY:
            return
        self._last = time.monotonic()
        if self.whole_wave:
            with session_scope(settings.database_url) as s:
                left = sum(due_counts(s, event_id, self.wave, now).values()) \
                    + sum(in_flight(s, event_id, self.wave).values())
            done = max(0, self.total - left)
        update_progress_artifact(
            self.artifact_id, progress=min(100.0, 100.0 * done / self.total),
            description=f"{self.event_slug}, {self.wave}: {done} of {self.total} done")


PROGRESS_EVERY = 2.0


def send_due(event_slug: str, event_id: int, wave: str, clock: str, settings: Settings,
             progress_id: object | None, share: Share | None = None) -> SendProgress:
    """Send everything of the wave that is due at `clock`, `send_batches_in_flight` batches
    at a time, until nothing is due and no stopped worker holds any of it.

    A part of a wave sent by several flow runs (`share`: part k of n, `flows.parts`) first
    sends its share, then sweeps whatever of the wave is still due, from the last message
    back: the unsent end of a slower part's share, or all of one that never started or died
    (the claim lets only one sender have a message; the other finds it no longer waiting).
    """
    logger = get_run_logger()
    now = _parse(clock)
    me = current_lease(settings.database_url, settings.send_lease_seconds).id
    out = SendProgress()
    progress = Progress(progress_id, event_slug, wave, whole_wave=share is not None)
    waited_since: float | None = None
    due: dict[str, int] | None = None  # counted at the end of the pass before
    for pass_no in range(MAX_PASSES):
        resumed = resume_task(event_id, wave, clock)
        out.sent.update(resumed)
        out.taken_over += sum(resumed.values())
        first = pass_no == 0
        if share is None:
            if due is None or resumed:  # a scan of the wave's waiting rows: not twice in a row
                with session_scope(settings.database_url) as s:
                    due = due_counts(s, event_id, wave, now)
            progress.total = sum(due.values()) + out.done
        elif first:  # the whole wave's, what every part still has to send
            with session_scope(settings.database_url) as s:
                progress.total = sum(due_counts(s, event_id, wave, now).values()) \
                    + sum(in_flight(s, event_id, wave).values())
        # the first pass sends this part's share; the next ones whatever is still due
        _one_pass(event_id, wave, clock, settings, progress, out, share if first else None,
                  descending=share is not None and not first)
        if out.misconfigured:
            break  # what stays planned waits for the settings to be fixed
        with session_scope(settings.database_url) as s:
            due = due_counts(s, event_id, wave, now)
            others = {w: n for w, n in in_flight(s, event_id, wave).items() if w != me}
        if due:
            continue
        if not others:
            break
        # another worker holds messages of this wave: alive, it records them in a moment;
        # dead, its lease runs out and the next pass takes them over
        waited_since = waited_since or time.monotonic()
        if time.monotonic() - waited_since > settings.send_lease_seconds + 60:
            logger.warning("%s %s: %d messages still held by other workers", event_slug, wave,
                           sum(others.values()))
            break
        if share is not None:  # the other parts are still sending: their progress too
            progress.update(event_id, now, out.done, settings)
        time.sleep(min(1.0, settings.send_lease_seconds / 4))
    progress.update(event_id, now, out.done, settings, final=True)
    return out


def _one_pass(event_id: int, wave: str, clock: str, settings: Settings, progress: Progress,
              out: SendProgress, share: Share | None, descending: bool) -> None:
    """One stream of the due messages (of `share`, if given) through
    `send_batches_in_flight` batch tasks."""
    now = _parse(clock)
    limit = settings.send_batches_in_flight
    pending: dict[PrefectFuture, tuple[str, int]] = {}
    streams = due_streams(event_id, wave, now, settings, share, descending)

    def submit(channel: str) -> bool:
        ids = next(streams[channel], None)
        if ids is None:
            del streams[channel]
            return False
        with tags(f"channel:{channel}"):
            pending[send_task.submit(ids, clock, channel, len(ids))] = (channel, len(ids))
        return True

    def collect_one() -> str:
        f = next(iter(as_completed(list(pending))))
        result = f.result()
        if result.misconfigured:
            out.misconfigured.append(result.misconfigured)
        out.sent.update(result.counts)
        channel, size = pending.pop(f)
        out.done += size
        progress.update(event_id, now, out.done, settings)
        return channel

    # the channels take turns for the slots; then a slot that frees goes to the same
    # channel while it has batches left (a provider that is slow to answer, or has a
    # high limit, keeps the tasks it needs), else to the next channel in turn
    while streams and len(pending) < limit:
        for channel in list(streams):
            if len(pending) < limit:
                submit(channel)
    while pending:
        freed = collect_one()
        if freed in streams and submit(freed):
            continue
        for channel in list(streams):
            if submit(channel):
                break
