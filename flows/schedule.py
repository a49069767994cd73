"""The wave runs a deployed campaign schedules on Prefect, kept in step with the plan, and
the `WaveRun` rows that remember them.

Each wave run has an idempotency key per event, wave and time, so running the campaign
again never doubles a wave; a changed event reschedules the pending runs, a cancelled
one cancels them. Messages held by quiet hours go out in a follow-up run that the wave
run schedules at the time the window opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prefect.client.schemas.objects import FlowRun
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flows.plan import CampaignPlan, WavePlan
from promo.db import session_scope
from promo.db.models import WaveRun, utcnow
from promo.domain.event import EventSpec
from promo.domain.names import WAVES
from promo.domain.times import shown
from promo.errors import PlanError
from promo.settings import get_settings

# the deployment the campaign schedules its waves on (prefect.yaml: flow "wave", deployment "wave")
WAVE_DEPLOYMENT = "wave/wave"


def wave_tags(event_slug: str, wave: str, channels: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The tags a wave's runs carry, so the UI filters by event, wave and channel."""
    return [f"event:{event_slug}", f"wave:{wave}", *(f"channel:{c}" for c in channels)]


def schedule_held(event_slug: str, wave: str, at: datetime, deployment: str) -> str:
    """A run of the wave deployment at `at`, when held messages become due. The key makes
    it one run per wave and time, however many runs ask for it."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        name=deployment,
        parameters={"event_slug": event_slug, "wave": wave},
        scheduled_time=at,
        flow_run_name=f"{event_slug} · {wave} · held messages",
        timeout=0,
        tags=wave_tags(event_slug, wave) + ["held"],
        idempotency_key=f"{event_slug}:{wave}:held:{at.isoformat()}",
        as_subflow=False,
    )
    return str(run.id)


def wave_key(spec: EventSpec, w: WavePlan) -> str:
    # the time the campaign asks for, not the time it goes: a late wave goes "now", and now
    # changes with every run of the campaign
    return f"{spec.slug}:{w.name}:{w.scheduled_at.astimezone(UTC).isoformat()}"


def reconcile_wave_runs(spec: EventSpec, plan: CampaignPlan | None, event_id: int,
                         deployment: str, clock: datetime) -> list[WaveRunAction]:
    """Make the scheduled wave runs match the plan (None: the event is cancelled).

    A wave keeps its run when the time is unchanged; a pending run whose time changed is
    cancelled and a new one scheduled; a dropped wave's pending run is cancelled. A wave
    whose run already started or finished is left alone: a wave goes to everyone once.
    """
    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelled, Cancelling

    settings = get_settings()
    pending = {StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED}
    with session_scope(settings.database_url) as s:
        known = {r.wave: (r.flow_run_id, r.send_at)
                 for r in s.scalars(select(WaveRun).where(WaveRun.event_id == event_id))}
    planned = {w.name: w for w in plan.waves} if plan is not None else {}
    actions: list[WaveRunAction] = []
    with get_client(sync_client=True) as client:

        def read(run_id: str | None) -> FlowRun | None:
            if not run_id:
                return None
            try:
                return client.read_flow_run(run_id)
            except ObjectNotFound:  # another Prefect server, or a deleted run
                return None

        def cancel(run: FlowRun, why: str) -> None:
            state = (Cancelled(message=why) if run.state.type == StateType.SCHEDULED
                     else Cancelling(message=why))  # the worker may have started it: stop it
            client.set_flow_run_state(run.id, state, force=True)

        for name in WAVES:
            w = planned.get(name)
            old_id, old_at = known.get(name, (None, None))
            old = read(old_id)
            old_pending = old is not None and old.state is not None and old.state.type in pending
            ran = old is not None and old.state is not None and old.state.type in (
                StateType.RUNNING, StateType.COMPLETED, StateType.FAILED, StateType.CRASHED)
            if (w is None or w.send_at is None) and ran:
                # a wave that ran stays what it was, whatever the plan says about it now
                actions.append(_action(name, old_at, old_id, f"ran ({old.state.name})"))
                continue
            if w is None or w.send_at is None:
                if old_pending:
                    why = ("the event was cancelled" if plan is None
                           else f"the wave was dropped: {w.note}" if w else "the wave was removed")
                    cancel(old, why)
                    actions.append(_action(name, old_at, old_id, f"cancelled: {why}"))
                    record_wave_run(event_id, name, old_at, old_id, "Cancelled")
                elif w is not None:
                    actions.append(_action(name, None, None, f"dropped: {w.note}"))
                continue
            key = wave_key(spec, w)
            if old is not None and old.state is not None and old.state.type in (
                    StateType.RUNNING, StateType.COMPLETED) \
                    and not (old.idempotency_key or "").startswith(key):
                # it ran (or is running) at the old time: a wave is not sent twice
                actions.append(_action(name, old_at, old_id,
                                       f"kept: already {old.state.name if old.state else 'run'}; "
                                       f"the new time does not send it again"))
                continue
            if old_pending and not (old.idempotency_key or "").startswith(key):
                cancel(old, f"rescheduled to {shown(w.send_at, spec.zone)}")
                actions.append(_action(name, old_at, old_id, "cancelled: rescheduled"))
            run = schedule_wave(deployment, spec, w, key, clock)
            state = run.state.name if run.state else "Scheduled"
            verb = "kept" if str(run.id) == old_id else "scheduled"
            if run.state is not None and run.state.type != StateType.SCHEDULED:
                verb = "ran" if run.state.is_final() else "running"
            verb += f" ({state})"
            actions.append(_action(name, run.expected_start_time or w.send_at, str(run.id), verb))
            record_wave_run(event_id, name, w.send_at, str(run.id), state)
    return actions


def schedule_wave(deployment: str, spec: EventSpec, w: WavePlan, key: str,
                   clock: datetime) -> FlowRun:
    """A run of the wave deployment at the wave's time; the same key returns the same run.

    A key whose run was cancelled (the time changed and then changed back) gets a
    numbered successor, found again the same way by the next run of the campaign.
    """
    from prefect.deployments import run_deployment

    send_at = max(w.send_at, clock)
    for attempt in range(1, 50):
        k = key if attempt == 1 else f"{key}#{attempt}"
        run = run_deployment(
            name=deployment,
            parameters={"event_slug": spec.slug, "wave": w.name},
            scheduled_time=send_at,
            flow_run_name=f"{spec.slug} · {w.name}",
            timeout=0,
            tags=wave_tags(spec.slug, w.name, w.spec.channels),
            idempotency_key=k,
            as_subflow=False,
        )
        if not _is_over_unsent(run):
            return run
    raise PlanError(f"{spec.slug}: {w.name}: too many cancelled or failed runs for one time")


def _is_over_unsent(run: FlowRun) -> bool:
    """A run that will not send (cancelled, failed, crashed): the wave needs a successor,
    which sends only what is still planned."""
    from prefect.client.schemas.objects import StateType

    return run.state is not None and run.state.type in (
        StateType.CANCELLED, StateType.CANCELLING, StateType.FAILED, StateType.CRASHED)


@dataclass
class WaveRunAction:
    """What the campaign did about one wave's scheduled run."""

    wave: str
    send_at: str | None  # UTC, ISO 8601
    flow_run_id: str | None
    action: str


def _action(wave: str, at: datetime | None, run_id: str | None, action: str) -> WaveRunAction:
    return WaveRunAction(wave, at.astimezone(UTC).isoformat() if at else None, run_id, action)


def record_wave_run(event_id: int, wave: str, send_at: datetime | None, run_id: str | None,
            state: str) -> None:
    settings = get_settings()
    with session_scope(settings.database_url) as s:
        row = s.scalar(select(WaveRun).where(WaveRun.event_id == event_id, WaveRun.wave == wave))
        if row is None:
            row = WaveRun(event_id=event_id, wave=wave)
            s.add(row)
        row.send_at = send_at or utcnow()
        row.flow_run_id = run_id
        row.state = state


def has_wave_runs(event_id: int) -> bool:
    with session_scope(get_settings().database_url) as s:
        return s.scalar(select(func.count()).select_from(WaveRun)
                        .where(WaveRun.event_id == event_id)) > 0


def known_run(event_id: int, wave: str) -> str | None:
    """The flow run id last recorded for the wave, if any."""
    with session_scope(get_settings().database_url) as s:
        return s.scalar(select(WaveRun.flow_run_id).where(
            WaveRun.event_id == event_id, WaveRun.wave == wave))


# a scheduled wave run later than this is taken for a worker that was down: the daily run
# catches the wave up instead of waiting for it
LATE_RUN_GRACE = timedelta(minutes=30)


def run_on_its_way(session: Session, event_id: int, wave: str, clock: datetime) -> str | None:
    """The state of the wave's scheduled run when a worker is running it or will soon."""
    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    # in the caller's transaction: on SQLite a second one would wait for it
    run_id = session.scalar(select(WaveRun.flow_run_id).where(
        WaveRun.event_id == event_id, WaveRun.wave == wave))
    if not run_id:
        return None
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            return None
    if run.state is None:
        return None
    if run.state.type in (StateType.RUNNING, StateType.CANCELLING):
        return run.state.name
    expected = run.expected_start_time or clock
    if run.state.type in (StateType.SCHEDULED, StateType.PENDING) \
            and expected > clock - LATE_RUN_GRACE:
        return run.state.name
    return None
