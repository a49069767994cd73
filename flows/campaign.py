"""The Prefect flows: a campaign, a wave, and the daily reminder run.

Thin on purpose: the decisions live in plain functions (`flows.plan`, `flows.decide`,
`flows.wave`, `channels.send`); a task is a batch of recipients, never one message.

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

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.schemas.objects import FlowRun
from prefect.futures import as_completed
from prefect.states import Failed
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audiences.segments import ADDRESS_FIELD
from channels.base import ConfigurationError
from channels.render import override_folder, sample_check
from channels.send import send_batch
from flows.events import WAVES, EventSpec, load_event
from flows.ledger import next_due, wave_outcomes
from flows.plan import CampaignPlan, WavePlan, plan_campaign
from flows.store import event_spec, find_event, save_event
from flows.wave import due_batches, prepare_wave
from promo.db import session_scope
from promo.db.models import Contact, Event, Message, WaveRun, utcnow
from promo.errors import PlanError
from promo.masking import mask_address, scrub
from promo.report.artifact import publish_report, reminder_forecast
from promo.settings import get_settings

# the deployment the campaign schedules its waves on (prefect.yaml: flow "wave", deployment "wave")
WAVE_DEPLOYMENT = "wave/wave"

# what the UI shows per wave and channel, in this order
OUTCOME_COLUMNS = ("sent", "planned", "deferred", "capped", "suppressed", "dropped", "failed",
                   "uncertain")
# outcomes whose reasons the wave summary explains, with examples
EXPLAINED = ("capped", "suppressed", "deferred", "dropped", "failed", "uncertain")
EXAMPLES_PER_REASON = 3
REASONS_PER_OUTCOME = 5
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


def _slug(name: str) -> str:
    return name.replace("_", "-")


def wave_tags(event_slug: str, wave: str, channels: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The tags a wave's runs carry, so the UI filters by event, wave and channel."""
    return [f"event:{event_slug}", f"wave:{wave}", *(f"channel:{c}" for c in channels)]


def _in_deployment() -> bool:
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


def _reminder_run_name() -> str:
    from prefect.runtime import flow_run

    now = (flow_run.parameters or {}).get("now")
    return f"daily reminders · {parse_now(now):%Y-%m-%d}"


# --- the wave -------------------------------------------------------------------------------


@task(name="decide-wave", task_run_name="decide {event_slug} {wave}")
def decide_task(event_slug: str, wave: str, now: str) -> dict[str, Any]:
    prepared = prepare_wave(event_slug, wave, parse_now(now), get_settings())
    return {"status": prepared.status, "note": prepared.note, "decided": prepared.new_decisions,
            "interrupted": prepared.interrupted,
            "scheduled_at": prepared.scheduled_at.isoformat() if prepared.scheduled_at else None}


@task(name="send-batch", task_run_name="send {channel} batch of {size}")
def send_task(message_ids: list[int], now: str, channel: str, size: int) -> dict[str, Any]:
    try:
        return dict(send_batch(message_ids, parse_now(now), get_settings(), get_run_logger()))
    except ConfigurationError as exc:
        # the batch recorded what went; the rest stays planned for a run with the fix.
        # Said in one line (the wave ends Failed with it), not a traceback per task
        get_run_logger().error("%s: %s; its unsent messages stay planned", channel, exc)
        return {"misconfigured": f"{channel}: {exc}"}


@flow(name="wave", flow_run_name=_wave_run_name, log_prints=False)
def wave_flow(event_slug: str, wave: str, now: str | None = None,
              follow_up_deployment: str | None = None) -> dict[str, Any]:
    """Decide the wave for everyone not yet decided and send what is due now.

    `now`: the clock (None: the real time). Messages held by quiet hours stay in the ledger
    as `deferred` with the time they become due; a run of a wave deployment (or one given
    `follow_up_deployment`) schedules a run of that deployment for that time, once.
    """
    logger = get_run_logger()
    settings = get_settings()
    clock = parse_now(now).isoformat()
    decided = decide_task(event_slug, wave, clock)
    if decided["status"] == "early" and now is None and _wait_until(decided["scheduled_at"]):
        clock = parse_now(None).isoformat()
        decided = decide_task(event_slug, wave, clock)
    if decided["status"] in ("dropped", "early"):
        logger.info("%s %s: %s", event_slug, wave, decided["note"])
        create_markdown_artifact(
            key=f"{_slug(event_slug)}-{_slug(wave)}-summary",
            markdown=f"# {event_slug} · {wave}\n\nNothing sent: {decided['note']}.\n",
            description=f"{event_slug}, {wave}: nothing sent",
        )
        return {"event": event_slug, "wave": wave, **decided, "sent": {}}
    if now is None:
        # a follow-up run for held messages may also start a moment before their time
        with session_scope(settings.database_url) as s:
            held = next_due(s, find_event(s, event_slug).id, wave)
        if _wait_until(held):
            clock = parse_now(None).isoformat()
    due = due_batches(event_slug, wave, parse_now(clock), settings)
    batches = [ids for _, ids in due]
    total = sum(len(b) for b in batches)
    progress = create_progress_artifact(
        progress=0.0 if total else 100.0,
        key=f"{_slug(event_slug)}-{_slug(wave)}-progress",
        description=f"{event_slug}, {wave}: {total} messages due",
    )
    futures = []
    for channel, b in due:
        with tags(f"channel:{channel}"):
            futures.append(send_task.submit(b, clock, channel, len(b)))
    sizes = {f.task_run_id: len(b) for f, b in zip(futures, batches, strict=True)}
    sent: Counter = Counter()
    done = 0
    misconfigured: list[str] = []
    for f in as_completed(futures):
        counts = f.result()
        if "misconfigured" in counts:
            misconfigured.append(counts.pop("misconfigured"))
        sent.update(counts)
        done += sizes[f.task_run_id]
        update_progress_artifact(progress, progress=100.0 * done / total,
                                 description=f"{event_slug}, {wave}: {done} of {total} done")
    with session_scope(settings.database_url) as s:
        row = find_event(s, event_slug)
        outcomes = wave_outcomes(s, row.id, wave)
        later = next_due(s, row.id, wave)
        starts_at = row.starts_at
        explained = _explain(s, row.id, wave)
    publish_outcomes(event_slug, wave, outcomes)
    follow_up = None
    deployment = follow_up_deployment or _own_wave_deployment()
    if later is not None and later < starts_at and deployment:
        follow_up = _schedule_held(event_slug, wave, later, deployment)
    _publish_summary(event_slug, wave, outcomes, explained, later, follow_up,
                     _report_hook(reminder_forecast, event_slug, parse_now(clock))
                     if wave == "reminder" else "")
    logger.info("%s %s: %s", event_slug, wave,
                ", ".join(f"{k} {v}" for k, v in sorted(sent.items())) or "nothing due")
    if later is not None:
        logger.info("%s %s: held messages due from %s%s", event_slug, wave, later.isoformat(),
                    f"; follow-up run {follow_up}" if follow_up else "")
    if misconfigured:
        return Failed(message=f"{event_slug} {wave}: {misconfigured[0]} (the messages not "
                              f"sent stay planned: fix the setting and run the wave again)")
    return {"event": event_slug, "wave": wave, **decided, "sent": dict(sent),
            "outcomes": outcomes, "next_due": later.isoformat() if later else None,
            "follow_up_run": follow_up}


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


def _schedule_held(event_slug: str, wave: str, at: datetime, deployment: str) -> str:
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


def publish_outcomes(event_slug: str, wave: str, outcomes: dict[str, dict[str, int]]) -> None:
    """The wave's outcome per channel, as a table artifact."""
    table = [{"channel": ch, **{c: row.get(c, 0) for c in OUTCOME_COLUMNS}}
             for ch, row in sorted(outcomes.items())]
    create_table_artifact(
        key=f"{_slug(event_slug)}-{_slug(wave)}-outcomes",
        table=table,
        description=f"{event_slug}, {wave}: outcome per channel",
    )


def _explain(session: Session, event_id: int, wave: str) -> list[dict[str, Any]]:
    """The most common reasons per outcome and channel, each with a few masked examples."""
    q = (select(Message.status, Message.channel, Message.reason, func.count())
         .where(Message.event_id == event_id, Message.wave == wave,
                Message.status.in_(EXPLAINED))
         .group_by(Message.status, Message.channel, Message.reason)
         .order_by(Message.status, func.count().desc()))
    out: list[dict[str, Any]] = []
    shown: Counter = Counter()
    for status, channel, reason, n in session.execute(q):
        if shown[status] >= REASONS_PER_OUTCOME:
            continue
        shown[status] += 1
        examples: list[str] = []
        field = ADDRESS_FIELD.get(channel)
        if field is not None:
            where = [Message.event_id == event_id, Message.wave == wave,
                     Message.status == status, Message.channel == channel]
            where.append(Message.reason.is_(None) if reason is None else Message.reason == reason)
            rows = session.execute(
                select(getattr(Contact, field)).select_from(Message)
                .join(Contact, Contact.id == Message.contact_id).where(*where).order_by(Message.id).limit(EXAMPLES_PER_REASON))
            examples = [mask_address(channel, a) for (a,) in rows]
        out.append({"status": status, "channel": channel, "reason": scrub(reason) or "-",
                    "count": n, "examples": examples})
    return out


def _publish_summary(event_slug: str, wave: str, outcomes: dict[str, dict[str, int]],
                     explained: list[dict[str, Any]], later: datetime | None,
                     follow_up: str | None, footer: str = "") -> None:
    totals: Counter = Counter()
    for row in outcomes.values():
        totals.update(row)
    lines = [f"# {event_slug} · {wave}", ""]
    lines.append(", ".join(f"**{c}** {totals[c]}" for c in OUTCOME_COLUMNS if totals.get(c))
                 or "No decisions: nobody in the audience.")
    lines.append("")
    for status in EXPLAINED:
        rows = [r for r in explained if r["status"] == status]
        if not rows:
            continue
        lines += [f"## {status.capitalize()} ({totals[status]})", "",
                  "| channel | why | how many | for example |", "|---|---|---:|---|"]
        for r in rows:
            lines.append(f"| {r['channel']} | {r['reason'].replace('|', '/')} | {r['count']} "
                         f"| {', '.join(r['examples']) or '-'} |")
        lines.append("")
    if later is not None:
        if follow_up:
            lines.append(f"Held messages are due from {later:%Y-%m-%d %H:%M} UTC: a follow-up run "
                         f"of this wave is scheduled then (flow run `{follow_up}`).")
        else:
            lines.append(f"Held messages are due from {later:%Y-%m-%d %H:%M} UTC: run the wave "
                         f"again then (deployed waves schedule it themselves).")
    if footer:
        lines += ["", footer]
    create_markdown_artifact(
        key=f"{_slug(event_slug)}-{_slug(wave)}-summary",
        markdown="\n".join(lines) + "\n",
        description=f"{event_slug}, {wave}: what happened and why (addresses masked)",
    )


# --- the campaign ---------------------------------------------------------------------------


@flow(name="campaign", flow_run_name=_campaign_run_name)
def campaign_flow(event_file: str, now: str | None = None, schedule: bool | None = None,
                  wave_deployment: str = WAVE_DEPLOYMENT) -> dict[str, Any]:
    """Validate the event and its templates, store it, plan the waves and run or schedule them.

    - `schedule` (default: when this run comes from a deployment): schedule each wave as a
      run of `wave_deployment` at its send time; pending runs of a changed event are
      rescheduled, those of a cancelled (`cancelled: true`) or dropped wave cancelled.
    - otherwise: run each wave that is due now, here.
    """
    logger = get_run_logger()
    settings = get_settings()
    clock = parse_now(now)
    spec = load_event(event_file)
    deployed = _in_deployment() if schedule is None else schedule
    plan = None
    if not spec.cancelled:
        # the rules and every template are checked before the stored event is replaced:
        # a bad edit fails here and the pending waves keep the last good version
        plan = plan_campaign(spec, clock)
        sample_check(spec, {w.name: list(w.spec.channels) for w in plan.active},
                     override_folder(spec, Path(event_file)))
    with session_scope(settings.database_url) as s:
        row = save_event(s, spec, Path(event_file))
        if spec.cancelled and row.cancelled_at is None:
            row.cancelled_at = clock
        elif not spec.cancelled:
            row.cancelled_at = None
        event_id = row.id
        has_wave_runs = s.scalar(select(func.count()).select_from(WaveRun)
                                 .where(WaveRun.event_id == event_id)) > 0
    if spec.cancelled:
        logger.info("%s: the event is cancelled; nothing more is sent", spec.slug)
        actions = _reconcile_wave_runs(spec, None, event_id, wave_deployment, clock) \
            if (deployed or has_wave_runs) else []
        _publish_schedule(spec, actions, cancelled=True)
        return {"event": spec.slug, "cancelled": True, "waves": [], "runs": [],
                "wave_runs": actions}
    assert plan is not None
    _publish_plan(spec, plan, clock)
    for w in plan.waves:
        logger.info("%s: %s %s %s", w.name, w.status,
                    w.send_at.astimezone(spec.zone).isoformat() if w.send_at else "-", w.note)
    results: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    if deployed:
        actions = _reconcile_wave_runs(spec, plan, event_id, wave_deployment, clock)
        _publish_schedule(spec, actions, cancelled=False)
        for a in actions:
            logger.info("%s: %s (run %s, %s)", a["wave"], a["action"], a["flow_run_id"] or "-",
                        a["send_at"] or "-")
    else:
        for w in plan.active:
            if w.send_at <= clock:
                with tags(*wave_tags(spec.slug, w.name, w.spec.channels)):
                    results.append(run_wave(spec.slug, w.name, clock.isoformat()))
    _report_hook(publish_report, spec.slug, clock)
    failed = [r["failed"] for r in results if "failed" in r]
    if failed:
        return Failed(message="; ".join(failed))
    return {"event": spec.slug, "waves": [
        {"name": w.name, "status": w.status, "send_at": w.send_at.isoformat() if w.send_at else None,
         "note": w.note} for w in plan.waves], "runs": results, "wave_runs": actions}


def _publish_plan(spec: EventSpec, plan: CampaignPlan, clock: datetime) -> None:
    """The plan as a table: per wave and channel, when, and how many contacts each outcome
    would get (the preview: the ledger for what was decided, predicted for the rest)."""
    from flows.preview import preview_campaign

    settings = get_settings()
    with session_scope(settings.database_url) as s:
        preview = preview_campaign(s, spec, clock, settings)
    rows: list[dict[str, Any]] = []
    for w in preview["waves"]:
        at = datetime.fromisoformat(w["send_at"]).astimezone(spec.zone).strftime(
            "%Y-%m-%d %H:%M %Z") if w["send_at"] else ""
        per_channel = w["outcomes"] or {c: {} for c in w["channels"]}
        for channel in w["channels"]:
            counts = per_channel.get(channel, {})
            rows.append({"wave": w["name"], "time": at, "status": w["status"],
                         "channel": channel, "mode": w["mode"],
                         **{c: counts.get(c, 0) for c in OUTCOME_COLUMNS},
                         "note": w["note"]})
    create_table_artifact(
        key=f"{spec.slug}-plan",
        table=rows,
        description=(f"Campaign plan for {spec.title}: contacts per wave, channel and outcome "
                     f"as of {clock:%Y-%m-%d %H:%M} UTC (later waves predicted from today's "
                     f"contacts, registrations and caps)"),
    )


def _publish_schedule(spec: EventSpec, actions: list[dict[str, Any]], *, cancelled: bool) -> None:
    lines = [f"# {spec.slug}: wave runs", ""]
    if cancelled:
        lines += [("The event is **cancelled** (`cancelled: true`): its pending wave runs are "
                   "cancelled and nothing more is sent."), ""]
    if actions:
        lines += ["| wave | send at (UTC) | what the campaign did | flow run |", "|---|---|---|---|"]
        lines += [f"| {a['wave']} | {a['send_at'] or '-'} | {a['action']} | "
                  f"`{a['flow_run_id'] or '-'}` |" for a in actions]
    else:
        lines.append("No wave runs.")
    create_markdown_artifact(key=f"{spec.slug}-wave-runs", markdown="\n".join(lines) + "\n",
                             description=f"{spec.slug}: the wave runs the campaign scheduled")


def _wave_key(spec: EventSpec, w: WavePlan) -> str:
    # the time the campaign asks for, not the time it goes: a late wave goes "now", and now
    # changes with every run of the campaign
    return f"{spec.slug}:{w.name}:{w.scheduled_at.astimezone(UTC).isoformat()}"


def _reconcile_wave_runs(spec: EventSpec, plan: CampaignPlan | None, event_id: int,
                         deployment: str, clock: datetime) -> list[dict[str, Any]]:
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
    actions: list[dict[str, Any]] = []
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
            if w is None or w.send_at is None:
                if old_pending:
                    why = ("the event was cancelled" if plan is None
                           else f"the wave was dropped: {w.note}" if w else "the wave was removed")
                    cancel(old, why)
                    actions.append(_action(name, old_at, old_id, f"cancelled: {why}"))
                    _record(event_id, name, old_at, old_id, "Cancelled")
                elif w is not None:
                    actions.append(_action(name, None, None, f"dropped: {w.note}"))
                continue
            key = _wave_key(spec, w)
            if old is not None and old.state is not None and old.state.type in (
                    StateType.RUNNING, StateType.COMPLETED) \
                    and not (old.idempotency_key or "").startswith(key):
                # it ran (or is running) at the old time: a wave is not sent twice
                actions.append(_action(name, old_at, old_id,
                                       f"kept: already {old.state.name if old.state else 'run'}; "
                                       f"the new time does not send it again"))
                continue
            if old_pending and not (old.idempotency_key or "").startswith(key):
                cancel(old, f"rescheduled to {w.send_at.isoformat()}")
                actions.append(_action(name, old_at, old_id, "cancelled: rescheduled"))
            run = _schedule_wave(deployment, spec, w, key, clock)
            state = run.state.name if run.state else "Scheduled"
            verb = "kept" if str(run.id) == old_id else "scheduled"
            verb += f" ({state})"
            actions.append(_action(name, run.expected_start_time or w.send_at, str(run.id), verb))
            _record(event_id, name, w.send_at, str(run.id), state)
    return actions


def _schedule_wave(deployment: str, spec: EventSpec, w: WavePlan, key: str,
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


def _action(wave: str, at: datetime | None, run_id: str | None, action: str) -> dict[str, Any]:
    return {"wave": wave, "send_at": at.astimezone(UTC).isoformat() if at else None,
            "flow_run_id": run_id, "action": action}


def _record(event_id: int, wave: str, send_at: datetime | None, run_id: str | None,
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


def _release_deferred(slug: str, wave: str, starts_at: datetime) -> list[dict[str, Any]]:
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


# --- the daily run --------------------------------------------------------------------------


@flow(name="reminders", flow_run_name=_reminder_run_name)
def reminder_flow(now: str | None = None, schedule: bool | None = None,
                  wave_deployment: str = WAVE_DEPLOYMENT) -> list[dict[str, Any]]:
    """Every day: the day-before reminders for tomorrow's events, and any wave that is due
    and was never run (a worker was down), once.

    A reminder due now (or overdue today) is sent here; deployed (`schedule`, default: when
    this run comes from a deployment), a reminder due before the next daily run gets a
    run of `wave_deployment` at its time (the campaign's own run, if it scheduled one).
    """
    logger = get_run_logger()
    settings = get_settings()
    clock = parse_now(now)
    deployed = _in_deployment() if schedule is None else schedule
    todo: list[tuple[str, WavePlan]] = []
    later: list[tuple[EventSpec, WavePlan]] = []
    report: list[dict[str, Any]] = []
    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(Event).where(
            Event.cancelled_at.is_(None), Event.starts_at > clock,
            Event.starts_at < clock + timedelta(days=22))).all()
        for row in rows:
            spec = event_spec(row)
            try:
                plan = plan_campaign(spec, clock)
            except PlanError as exc:  # one broken event must not stop the others' reminders
                logger.error("%s: %s", spec.slug, exc)
                report.append({"event": spec.slug, "wave": "-", "action": f"error: {exc}"})
                continue
            ran = set(s.scalars(select(Message.wave).where(Message.event_id == row.id).distinct()))
            for w in plan.active:
                due = w.send_at <= clock
                if w.name == "reminder" and due:
                    todo.append((spec.slug, w))  # a re-run sends only what was not sent
                elif w.name == "reminder" and w.send_at < clock + timedelta(days=1):
                    later.append((spec, w))
                elif due and w.name not in ran and deployed \
                        and (waiting := _run_on_its_way(s, row.id, w.name, clock)):
                    # the worker is about to run it (or is running it): a catch-up here
                    # would be a second run of the same wave
                    report.append({"event": spec.slug, "wave": w.name,
                                   "action": f"left to its own run ({waiting})"})
                elif due and w.name not in ran:
                    logger.info("%s: catching up the %s wave", spec.slug, w.name)
                    todo.append((spec.slug, w))
                elif due and (pending := next_due(s, row.id, w.name)) is not None \
                        and pending <= clock:
                    # a run that failed or crashed left messages due: send them, once
                    logger.info("%s: the %s wave has messages due since %s; sending them",
                                spec.slug, w.name, pending.isoformat())
                    todo.append((spec.slug, w))
    if deployed and later:
        for spec, w in later:
            with session_scope(settings.database_url) as s:
                event_id = find_event(s, spec.slug).id
                known = s.scalar(select(WaveRun.flow_run_id).where(
                    WaveRun.event_id == event_id, WaveRun.wave == w.name))
            run = _schedule_wave(wave_deployment, spec, w, _wave_key(spec, w), clock)
            _record(event_id, w.name, w.send_at, str(run.id),
                    run.state.name if run.state else "Scheduled")
            verb = "already scheduled" if str(run.id) == known else "scheduled"
            report.append({"event": spec.slug, "wave": w.name,
                           "action": f"{verb} at {w.send_at.isoformat()}"})
    else:
        for spec, w in later:
            report.append({"event": spec.slug, "wave": w.name,
                           "action": f"due at {w.send_at.isoformat()} (not deployed: run it then)"})
    results = []
    for slug, w in todo:
        with tags(*wave_tags(slug, w.name, w.spec.channels)):
            result = run_wave(slug, w.name, now,
                              follow_up_deployment=wave_deployment if deployed else None)
        results.append(result)
        report.append({"event": slug, "wave": w.name,
                       "action": f"failed: {result['failed']}" if "failed" in result else
                       "sent: " + (", ".join(f"{k} {v}" for k, v in
                                             sorted(result.get("sent", {}).items()))
                                   or "nothing due")})
    for slug in dict.fromkeys(slug for slug, w in todo if w.name == "reminder"):
        _report_hook(publish_report, slug, clock)
    failed = [f"{r['event']} {r['wave']}" for r in results if "failed" in r]
    create_table_artifact(key="daily-reminders", table=report or [
        {"event": "-", "wave": "-", "action": "no reminder or missed wave today"}],
        description=f"Daily run of {clock:%Y-%m-%d %H:%M} UTC: reminders and caught-up waves")
    if failed:  # the other events still ran; the day's run says which did not
        return Failed(message="failed: " + ", ".join(failed))
    return results


# a scheduled wave run later than this is taken for a worker that was down: the daily run
# catches the wave up instead of waiting for it
LATE_RUN_GRACE = timedelta(minutes=30)


def _run_on_its_way(session: Session, event_id: int, wave: str, clock: datetime) -> str | None:
    """The state of the wave's scheduled run when a worker is running it or will soon."""
    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

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


def _report_hook(publish: Any, slug: str, clock: datetime) -> str:
    """The series report (promo/report) in the run's artifacts. A report is for reading: one
    that cannot be made is logged and never fails the run that sends the messages."""
    try:
        return publish(slug, clock) or ""
    except Exception as exc:  # noqa: BLE001 - see the docstring
        get_run_logger().warning("%s: the report could not be made: %s", slug, exc)
        return ""


def all_outcomes(slug: str) -> dict[str, dict[str, dict[str, int]]]:
    settings = get_settings()
    with session_scope(settings.database_url) as s:
        row = find_event(s, slug)
        waves = s.scalars(select(Message.wave).where(Message.event_id == row.id).distinct()).all()
        return {w: wave_outcomes(s, row.id, w) for w in waves}
