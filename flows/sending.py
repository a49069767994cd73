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
from flows.ledger import due_counts, in_flight
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


def send_due(event_slug: str, event_id: int, wave: str, clock: str, settings: Settings,
             progress_id: object | None) -> SendProgress:
    """Send everything of the wave that is due at `clock`, `send_batches_in_flight` batches
    at a time, until nothing is due and no stopped worker holds any of it."""
    logger = get_run_logger()
    now = _parse(clock)
    me = current_lease(settings.database_url, settings.send_lease_seconds).id
    out = SendProgress()
    waited_since: float | None = None
    due: dict[str, int] | None = None  # counted at the end of the pass before
    for _ in range(MAX_PASSES):
        resumed = resume_task(event_id, wave, clock)
        out.sent.update(resumed)
        out.taken_over += sum(resumed.values())
        if due is None or resumed:  # a scan of the wave's waiting rows: not twice in a row
            with session_scope(settings.database_url) as s:
                due = due_counts(s, event_id, wave, now)
        total = sum(due.values()) + out.done
        _one_pass(event_slug, event_id, wave, clock, settings, progress_id, total, out)
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
        time.sleep(min(1.0, settings.send_lease_seconds / 4))
    return out


def _one_pass(event_slug: str, event_id: int, wave: str, clock: str, settings: Settings,
              progress_id: object | None, total: int, out: SendProgress) -> None:
    """One stream of the due messages through `send_batches_in_flight` batch tasks."""
    now = _parse(clock)
    limit = settings.send_batches_in_flight
    pending: dict[PrefectFuture, tuple[str, int]] = {}
    streams = due_streams(event_id, wave, now, settings)

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
        if progress_id is not None and total:
            update_progress_artifact(
                progress_id, progress=min(100.0, 100.0 * out.done / total),
                description=f"{event_slug}, {wave}: {out.done} of {total} done")
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
