"""One wave sent by several flow runs, so that every worker of the pool can help send it.

A deployed wave run with more than one batch due and `send_workers` above 1 splits its
sending into parts: it starts parts 2..n as runs of the `wave-part/send-part` deployment
(`start_parts`; any worker of the pool takes them), sends part 1 itself, and waits for the
others to end (`await_parts`) before it publishes what the whole wave did. Each part sends
its share first (the contacts whose id is its number modulo n: `flows.ledger.Share`), then
whatever of the wave is still due (`flows.sending.send_due`): the end of a slower part's
share, or all of a part that never started or died. The claim (`flows.send.claim`) is what
makes that safe: a message goes to the one sender that moves it to `sending`, and caps are
checked in the same transaction, whichever part claims it.

A part run is named after its wave (`python-meetup-74 · announce · part 2 of 3`) and tagged
like it (`event:`, `wave:`, `channel:`) plus `part`; it is a subflow of its wave run in the
UI. Nothing else counts it as a run of the wave: the campaign and the daily run know a
wave's run by its `WaveRun` row, which only the campaign writes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.schedule import wave_tags
from flows.sending import send_due
from flows.store import find_event
from promo.db import session_scope
from promo.settings import Settings, get_settings

# the deployment the parts run on (prefect.yaml: flow "wave-part", deployment "send-part")
PART_DEPLOYMENT = "wave-part/send-part"
# the tag that tells a part from the wave run it belongs to
PART_TAG = "part"


def parts_for(due: int, settings: Settings) -> int:
    """Into how many parts a wave with `due` messages is split: `send_workers`, but never
    more parts than batches (a part with less than a batch would only add a flow run)."""
    return max(1, min(settings.send_workers, math.ceil(due / settings.send_batch_size)))


def part_run_name(event_slug: str, wave: str, part: int, parts: int) -> str:
    return f"{event_slug} · {wave} · part {part + 1} of {parts}"


def _part_run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters or {}
    return part_run_name(str(p.get("event_slug")), str(p.get("wave")), int(p.get("part", 0)),
                         int(p.get("parts", 1)))


@flow(name="wave-part", flow_run_name=_part_run_name,
      task_runner=ThreadPoolTaskRunner(max_workers=64))
def wave_part(event_slug: str, wave: str, part: int, parts: int,
              now: str | None = None) -> Any:
    """One part of a wave's sending, started by the wave run (never by hand): the messages
    of its share (contacts whose id is `part` modulo `parts`), then whatever of the wave is
    still due. The wave run has decided already; a part only sends.

    Args:
        event_slug: The event (or digest) whose wave this is.
        wave: The wave's name.
        part: This part's number, from 0 (the wave run's own) to parts - 1.
        parts: How many parts the wave is split into.
        now: The wave run's clock, ISO 8601 with an offset (None: the real time).
    """
    if not 0 <= part < parts:
        raise ValueError(f"part {part} of {parts}: a part is numbered 0 to {parts - 1}")
    logger = get_run_logger()
    settings = get_settings()
    clock = datetime.now(UTC) if now is None else datetime.fromisoformat(now)
    if clock.tzinfo is None:
        raise ValueError(f"now={now!r} needs a UTC offset")
    with session_scope(settings.database_url) as s:
        event_id = find_event(s, event_slug).id
    sending = send_due(event_slug, event_id, wave, clock.isoformat(), settings, None,
                       (part, parts))
    line = ", ".join(f"{k} {v}" for k, v in sorted(sending.sent.items())) or "nothing"
    logger.info("%s: this part: %s", part_run_name(event_slug, wave, part, parts), line)
    if sending.misconfigured:
        # what stays planned here is sent by the other parts' sweep if their settings allow
        return Failed(message=f"{event_slug} {wave}: {sending.misconfigured[0]}")
    return Completed(message=f"this part: {line}", data={
        "event": event_slug, "wave": wave, "part": part, "parts": parts,
        "sent": dict(sending.sent), "taken_over": sending.taken_over})


def start_parts(event_slug: str, wave: str, now: str | None, parts: int, deployment: str,
                channels: list[str]) -> list[str]:
    """Runs of the part deployment for parts 1..parts-1, to start at once; their ids.

    Keyed by the wave run and part, so that a retried wave run finds its parts again. An
    empty list when the deployment does not exist (an older `prefect deploy`): the wave run
    then sends everything itself.
    """
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.runtime import flow_run

    started: list[str] = []
    for part in range(1, parts):
        try:
            run = run_deployment(
                name=deployment,
                parameters={"event_slug": event_slug, "wave": wave, "part": part,
                            "parts": parts, "now": now},
                flow_run_name=part_run_name(event_slug, wave, part, parts),
                timeout=0,
                tags=[*wave_tags(event_slug, wave, channels), PART_TAG],
                idempotency_key=f"{flow_run.id}:part:{part}:{parts}" if flow_run.id else None,
            )
        except ObjectNotFound:
            get_run_logger().warning(
                "%s %s: no deployment %s (run `prefect deploy --all`): this run sends the "
                "whole wave", event_slug, wave, deployment)
            break
        started.append(str(run.id))
    return started


@dataclass
class PartRun:
    """How a part run ended, for the wave run's log and result."""

    id: str
    name: str
    state: str
    message: str | None


def await_parts(run_ids: list[str], seconds: float) -> list[PartRun]:
    """Wait, at most `seconds`, for the part runs to end, once the wave run has nothing left
    to send. A part no worker has started is cancelled: the wave run's sweep sent its share
    (no second worker, or all busy); one that is starting or running ends in a moment, with
    nothing due. Returns each part's state as it was at the end of the wait."""
    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(i) for i in run_ids]
            for r in runs:
                if r.state is None or r.state.type == StateType.SCHEDULED:
                    client.set_flow_run_state(r.id, Cancelled(
                        message="not started: the wave run sent its share"))
            runs = [client.read_flow_run(i) for i in run_ids]
            if all(r.state is not None and r.state.is_final() for r in runs) \
                    or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    return [PartRun(str(r.id), r.name, r.state.name if r.state else "?",
                    r.state.message if r.state else None) for r in runs]
