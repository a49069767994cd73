"""The Prefect flows of a campaign and of a wave (the daily run: `flows/daily.py`).

Flows only: the steps live in plain functions (`flows.plan`, `flows.wave`, `flows.decide`,
`flows.send`, `flows.ledger`), what the UI shows in `flows.artifacts`, the scheduled wave
runs in `flows.schedule`; a task is a batch of recipients, never one message.

Two ways to run them:
- **locally** (`promo run`, the demo, the tests): the campaign runs the waves that are due
  now as subflows, in the same process;
- **deployed** (`prefect deploy --all`, see prefect.yaml): the campaign schedules each wave
  as a flow run of the `wave` deployment at its send time, and a worker runs it then.
  Each wave run has an idempotency key per event, wave and time, so running the campaign
  again never doubles a wave; a changed event reschedules the pending runs, a cancelled
  one cancels them. Messages held by quiet hours go out in a follow-up run of the wave
  deployment that the wave run schedules at the time the window opens.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import create_progress_artifact
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from channels.render import override_folder
from channels.samples import sample_check
from flows.account import reasons, wave_account
from flows.artifacts import (
    dashed,
    publish_nothing_sent,
    publish_outcomes,
    publish_plan,
    publish_report,
    publish_schedule,
    publish_summary,
    reminder_forecast,
    report_hook,
    wave_finished,
)
from flows.ledger import decided_waves, due_counts, next_due, wave_outcomes
from flows.parts import PART_DEPLOYMENT, await_parts, parts_for, start_parts
from flows.plan import plan_campaign
from flows.schedule import (
    WAVE_DEPLOYMENT,
    WaveRunAction,
    has_wave_runs,
    reconcile_wave_runs,
    schedule_held,
    wave_tags,
)
from flows.sending import send_due
from flows.store import find_event, save_event
from flows.wave import PreparedWave, prepare_wave
from promo.db import session_scope
from promo.domain.event import load_event
from promo.domain.names import WaveStatus
from promo.domain.times import shown
from promo.settings import get_settings

# a wave run that starts at most this much before the wave's time waits for it
EARLY_START_WAIT = timedelta(minutes=2)


def parse_now(now: str | datetime | None) -> datetime:
    """The flow's clock: the real time, or the time a test or a replay asks for."""
    if now is None:
        return datetime.now(UTC)
    if isinstance(now, datetime):
        value = now
    else:
        value = datetime.fromisoformat(now)
    if value.tzinfo is None:
        raise ValueError(f"now={now!r} needs a UTC offset")
    return value


def in_deployment() -> bool:
    """Whether this flow run (or the run it is a subflow of) came from a deployment."""
    from prefect.runtime import deployment

    return deployment.id is not None


def _own_wave_deployment() -> str | None:
    """`wave/<name>` when this run is a run of a wave deployment, else None."""
    from prefect.runtime import deployment, flow_run

    name, flow_name = deployment.name, flow_run.flow_name
    return f"{flow_name}/{name}" if name and flow_name == "wave" else None


def _wave_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    name = f"{params.get('event_slug')} · {params.get('wave')}"
    # a follow-up run for the messages quiet hours held (tagged so by `_schedule_held`)
    return name + " · held messages" if "held" in (flow_run.tags or []) else name


def _campaign_run_name() -> str:
    from prefect.runtime import flow_run

    event_file = (flow_run.parameters or {}).get("event_file") or "?"
    return f"campaign · {Path(str(event_file)).stem}"


# --- the wave -------------------------------------------------------------------------------


@task(name="decide-wave", task_run_name="decide {event_slug} {wave}")
def decide_task(event_slug: str, wave: str, now: str) -> PreparedWave:
    return prepare_wave(event_slug, wave, parse_now(now), get_settings())


def _decided(prepared: PreparedWave) -> dict[str, Any]:
    """The decide step as the wave flow's result reports it."""
    return {"status": prepared.status, "note": prepared.note, "decided": prepared.new_decisions,
            # a dead worker's messages the send loop took over (`flows.resume`)
            "interrupted": 0,
            "scheduled_at": prepared.scheduled_at.isoformat() if prepared.scheduled_at else None}


@flow(name="wave", flow_run_name=_wave_run_name, log_prints=False,
      # the send loop bounds the batches in flight (`send_batches_in_flight`); the pool
      # only has to have a thread for each
      task_runner=ThreadPoolTaskRunner(max_workers=64))
def wave_flow(event_slug: str, wave: str, now: str | None = None,
              follow_up_deployment: str | None = None,
              part_deployment: str | None = None) -> dict[str, Any]:
    """Decide the wave for everyone not yet decided and send what is due now.

    `now`: the clock (None: the real time). Messages held by quiet hours stay in the ledger
    as `deferred` with the time they become due; a run of a wave deployment (or one given
    `follow_up_deployment`) schedules a run of that deployment for that time, once. A run
    from a deployment (or one given `part_deployment`) with `send_workers` above 1 and more
    than one batch due sends the wave in parts, the others as runs of the part deployment
    (`flows.parts`); `result["sent"]` is then this run's own part, `outcomes` the wave's.
    """
    logger = get_run_logger()
    settings = get_settings()
    clock = parse_now(now).isoformat()
    prepared = decide_task(event_slug, wave, clock)
    if prepared.status == WaveStatus.early and now is None and _wait_until(prepared.scheduled_at):
        clock = parse_now(None).isoformat()
        prepared = decide_task(event_slug, wave, clock)
    decided = _decided(prepared)
    if prepared.status in (WaveStatus.dropped, WaveStatus.early):
        logger.info("%s %s: %s", event_slug, wave, prepared.note)
        publish_nothing_sent(event_slug, wave, prepared.note)
        return {"event": event_slug, "wave": wave, **decided, "sent": {}}
    if now is None:
        # a follow-up run for held messages may also start a moment before their time
        with session_scope(settings.database_url) as s:
            held = next_due(s, prepared.event_id, wave)
        if _wait_until(held):
            clock = parse_now(None).isoformat()
    with session_scope(settings.database_url) as s:
        due = due_counts(s, prepared.event_id, wave, parse_now(clock))
    total = sum(due.values())
    progress = create_progress_artifact(
        progress=0.0 if total else 100.0,
        key=f"{dashed(event_slug)}-{dashed(wave)}-progress",
        description=f"{event_slug}, {wave}: {total} messages due",
    )
    # a large wave deployed on several workers: this run sends one part, runs of the part
    # deployment the others (flows.parts); every part then sweeps what is still due
    parts = parts_for(total, settings)
    if parts > 1:
        part_deployment = part_deployment or (PART_DEPLOYMENT if in_deployment() else None)
    part_runs = start_parts(event_slug, wave, clock if now is not None else None, parts,
                            part_deployment, sorted(due)) if parts > 1 and part_deployment else []
    sending = send_due(event_slug, prepared.event_id, wave, clock, settings, progress,
                       (0, parts) if part_runs else None)
    ended = await_parts(part_runs, settings.send_lease_seconds + 60) if part_runs else []
    for p in ended:
        level = logging.INFO if p.state == "Completed" else logging.WARNING
        logger.log(level, "%s (%s): %s", p.name, p.state, p.message or "")
    sent, misconfigured = sending.sent, sending.misconfigured
    decided["interrupted"] = sending.taken_over
    with session_scope(settings.database_url) as s:
        outcomes = wave_outcomes(s, prepared.event_id, wave)
        later = next_due(s, prepared.event_id, wave)
        explained = reasons(s, prepared.event_id, wave)
        account = wave_account(s, prepared.event_id, wave)
    starts_at, zone = prepared.starts_at, prepared.timezone
    publish_outcomes(event_slug, wave, outcomes)
    follow_up = None
    deployment = follow_up_deployment or _own_wave_deployment()
    if later is not None and later < starts_at and deployment:
        follow_up = schedule_held(event_slug, wave, later, deployment)
    publish_summary(event_slug, wave, outcomes, explained, later, follow_up, account, zone,
                    footer=report_hook(reminder_forecast, event_slug, parse_now(clock))
                    if wave == "reminder" else "")
    logger.info("%s %s: this run: %s", event_slug, wave,
                ", ".join(f"{k} {v}" for k, v in sorted(sent.items())) or "nothing due")
    if later is not None:
        logger.info("%s %s: held messages due from %s%s", event_slug, wave, shown(later, zone),
                    f"; follow-up run {follow_up}" if follow_up else "")
    with_failures = wave_finished(event_slug, prepared.title, wave, outcomes, account, zone)
    if misconfigured:
        return Failed(message=f"{event_slug} {wave}: {misconfigured[0]} (the messages not "
                              f"sent stay planned: fix the setting and run the wave again)")
    result = {"event": event_slug, "wave": wave, **decided, "sent": dict(sent),
              "outcomes": outcomes, "people": account.as_dict(),
              "next_due": later.isoformat() if later else None, "follow_up_run": follow_up,
              "parts": [asdict(p) for p in ended]}
    if with_failures:
        # green enough that nothing retries or reschedules it, named so that nobody misses it
        return Completed(name=with_failures, data=result, message=account.line())
    return result


def run_wave(event_slug: str, wave: str, now: str | None, **kwargs: Any) -> dict[str, Any]:
    """The wave flow as a subflow: one that ends Failed (a misconfigured channel) is
    reported in its result, so that the caller's other waves and events still run."""
    state = wave_flow(event_slug, wave, now, return_state=True, **kwargs)
    if state.is_failed() or state.is_crashed():
        return {"event": event_slug, "wave": wave, "failed": state.message or state.name,
                "sent": {}}
    return state.result()


def _wait_until(at: datetime | str | None) -> bool:
    """A scheduled run may start a moment before its time (a worker's prefetch, clocks
    drift): sleep until then when it is at most EARLY_START_WAIT away, and say so (True:
    run on the clock as it is now). A time that passed meanwhile (deciding takes a moment)
    needs no sleep, but the run must still go on its own, later, clock."""
    if at is None:
        return False
    ahead = parse_now(at) - parse_now(None)
    if ahead > EARLY_START_WAIT:
        return False
    time.sleep(max(ahead.total_seconds(), 0) + 0.01)
    return True


# --- the campaign ---------------------------------------------------------------------------


@flow(name="campaign", flow_run_name=_campaign_run_name)
def campaign(event_file: str) -> dict[str, Any]:
    """Validate an event file and its templates, store the event, publish the plan and
    schedule each wave as a run of wave/wave at its time. Run it again after editing the
    file: changed times are rescheduled, `cancelled: true` cancels the pending waves, and
    nothing is ever sent twice.

    The deployed flow (prefect.yaml): its Run form asks only for the event file, with the
    hint below (Prefect reads it from this docstring).

    Args:
        event_file: The event's YAML file: a path relative to the project folder the worker
            runs in (e.g. events/python-meetup-74.yaml), or absolute on the worker's machine.
    """
    return _campaign(event_file, None, None, WAVE_DEPLOYMENT)


@flow(name="campaign", flow_run_name=_campaign_run_name)
def campaign_flow(event_file: str, now: str | None = None, schedule: bool | None = None,
                  wave_deployment: str = WAVE_DEPLOYMENT) -> dict[str, Any]:
    """The campaign with its clock and wiring as parameters (`promo run`, the demo, tests).

    - `schedule` (default: when this run comes from a deployment): schedule each wave as a
      run of `wave_deployment` at its send time; pending runs of a changed event are
      rescheduled, those of a cancelled (`cancelled: true`) or dropped wave cancelled.
    - otherwise: run each wave that is due now, here.
    """
    return _campaign(event_file, now, schedule, wave_deployment)


def _tag_run(*new: str) -> None:
    """Add tags to this flow run once they are known (the event's slug is in the file)."""
    from prefect import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.id)
        client.update_flow_run(run.id, tags=sorted({*run.tags, *new}))


def _campaign(event_file: str, now: str | None, schedule: bool | None,
              wave_deployment: str) -> dict[str, Any]:
    logger = get_run_logger()
    settings = get_settings()
    clock = parse_now(now)
    spec = load_event(event_file)
    _tag_run(f"event:{spec.slug}")
    deployed = in_deployment() if schedule is None else schedule
    plan = None
    if not spec.cancelled:
        # the rules and every template are checked before the stored event is replaced:
        # a bad edit fails here and the pending waves keep the last good version
        plan = plan_campaign(spec, clock)
        sample_check(spec, {w.name: list(w.spec.channels) for w in plan.active},
                     override_folder(spec, Path(event_file)), settings=settings)
    with session_scope(settings.database_url) as s:
        row = save_event(s, spec, Path(event_file))
        if spec.cancelled and row.cancelled_at is None:
            row.cancelled_at = clock
        elif not spec.cancelled:
            row.cancelled_at = None
        event_id = row.id
    if spec.cancelled:
        logger.info("%s: the event is cancelled; nothing more is sent", spec.slug)
        if clock < spec.starts_at:
            publish_plan(spec, clock)
        actions = reconcile_wave_runs(spec, None, event_id, wave_deployment, clock) \
            if (deployed or has_wave_runs(event_id)) else []
        publish_schedule(spec, actions, cancelled=True)
        return {"event": spec.slug, "cancelled": True, "waves": [], "runs": [],
                "wave_runs": [asdict(a) for a in actions]}
    assert plan is not None
    preview = publish_plan(spec, clock)
    for w in preview["waves"]:
        if w["status"] == "ran":
            logger.info("%s: ran, sent from %s: %s", w["name"],
                        shown(w["first_sent_at"], spec.zone), w["people"]["summary"])
        else:
            logger.info("%s: %s %s %s", w["name"], w["status"], shown(w["send_at"], spec.zone),
                        w["note"])
    results: list[dict[str, Any]] = []
    actions: list[WaveRunAction] = []
    if deployed:
        actions = reconcile_wave_runs(spec, plan, event_id, wave_deployment, clock)
        publish_schedule(spec, actions, cancelled=False)
        for a in actions:
            logger.info("%s: %s (run %s, %s)", a.wave, a.action, a.flow_run_id or "-",
                        shown(a.send_at, spec.zone))
    else:
        for w in plan.active:
            if w.send_at <= clock:
                with tags(*wave_tags(spec.slug, w.name, w.spec.channels)):
                    results.append(run_wave(spec.slug, w.name, clock.isoformat()))
    report_hook(publish_report, spec.slug, clock)
    failed = [r["failed"] for r in results if "failed" in r]
    if failed:
        return Failed(message="; ".join(failed))
    return {"event": spec.slug, "waves": [
        {"name": w["name"], "status": w["status"], "send_at": w["send_at"], "note": w["note"]}
        for w in preview["waves"]], "runs": results,
        "wave_runs": [asdict(a) for a in actions]}


def release_held(slug: str, wave: str, starts_at: datetime) -> list[dict[str, Any]]:
    """Simulated clock: run the wave again at each time held messages become due."""
    settings = get_settings()
    results = []
    previous = None
    for _ in range(48):  # at most one run per opening window; a guard, not a limit in practice
        with session_scope(settings.database_url) as s:
            later = next_due(s, find_event(s, slug).id, wave)
        # a time that does not move means the run could send nothing there: stop, not spin
        if later is None or later >= starts_at or later == previous:
            break
        previous = later
        results.append(run_wave(slug, wave, later.isoformat()))
    return results


def all_outcomes(slug: str) -> dict[str, dict[str, dict[str, int]]]:
    settings = get_settings()
    with session_scope(settings.database_url) as s:
        row = find_event(s, slug)
        return {w: wave_outcomes(s, row.id, w) for w in sorted(decided_waves(s, row.id))}
