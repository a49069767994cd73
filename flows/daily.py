"""The daily Prefect flow: tomorrow's reminders, and any wave that is due and was never run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_table_artifact
from prefect.states import Failed

from flows.artifacts import publish_report, report_hook
from flows.campaign import in_deployment, parse_now, run_wave
from flows.ledger import decided_waves, next_due
from flows.plan import WavePlan, plan_campaign
from flows.schedule import (
    WAVE_DEPLOYMENT,
    known_run,
    record_wave_run,
    run_on_its_way,
    schedule_wave,
    wave_key,
    wave_tags,
)
from flows.store import event_spec, find_event, upcoming_events
from promo.db import session_scope
from promo.domain.event import EventSpec
from promo.domain.times import shown
from promo.errors import PlanError
from promo.settings import get_settings


def _reminder_run_name() -> str:
    from prefect.runtime import flow_run

    now = (flow_run.parameters or {}).get("now")
    return f"daily · {parse_now(now):%Y-%m-%d}"


@flow(name="reminders", flow_run_name=_reminder_run_name)
def daily() -> list[dict[str, Any]]:
    """Every day: the day-before reminders for tomorrow's events, and any wave that is due
    and was never run (a worker was down), once. The deployed flow (prefect.yaml): no
    parameters to fill in."""
    return _daily(None, None, WAVE_DEPLOYMENT)


@flow(name="reminders", flow_run_name=_reminder_run_name)
def reminder_flow(now: str | None = None, schedule: bool | None = None,
                  wave_deployment: str = WAVE_DEPLOYMENT) -> list[dict[str, Any]]:
    """The daily run with its clock and wiring as parameters (tests, replays).

    A reminder due now (or overdue today) is sent here; deployed (`schedule`, default: when
    this run comes from a deployment), a reminder due before the next daily run gets a
    run of `wave_deployment` at its time (the campaign's own run, if it scheduled one).
    """
    return _daily(now, schedule, wave_deployment)


def _daily(now: str | None, schedule: bool | None,
           wave_deployment: str) -> list[dict[str, Any]]:
    logger = get_run_logger()
    settings = get_settings()
    clock = parse_now(now)
    deployed = in_deployment() if schedule is None else schedule
    todo: list[tuple[str, WavePlan]] = []
    later: list[tuple[EventSpec, WavePlan]] = []
    report: list[dict[str, Any]] = []
    with session_scope(settings.database_url) as s:
        for row in upcoming_events(s, clock, timedelta(days=22)):
            spec = event_spec(row)
            try:
                plan = plan_campaign(spec, clock)
            except PlanError as exc:  # one broken event must not stop the others' reminders
                logger.error("%s: %s", spec.slug, exc)
                report.append({"event": spec.slug, "wave": "-", "action": f"error: {exc}"})
                continue
            ran = decided_waves(s, row.id)
            for w in plan.active:
                due = w.send_at <= clock
                if w.name == "reminder" and due:
                    todo.append((spec.slug, w))  # a re-run sends only what was not sent
                elif w.name == "reminder" and w.send_at < clock + timedelta(days=1):
                    later.append((spec, w))
                elif due and w.name not in ran and deployed \
                        and (waiting := run_on_its_way(s, row.id, w.name, clock)):
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
                                spec.slug, w.name, shown(pending, spec.zone))
                    todo.append((spec.slug, w))
    if deployed and later:
        for spec, w in later:
            with session_scope(settings.database_url) as s:
                event_id = find_event(s, spec.slug).id
            known = known_run(event_id, w.name)
            run = schedule_wave(wave_deployment, spec, w, wave_key(spec, w), clock)
            record_wave_run(event_id, w.name, w.send_at, str(run.id),
                            run.state.name if run.state else "Scheduled")
            verb = "already scheduled" if str(run.id) == known else "scheduled"
            report.append({"event": spec.slug, "wave": w.name,
                           "action": f"{verb} at {shown(w.send_at, spec.zone)}"})
    else:
        for spec, w in later:
            report.append({"event": spec.slug, "wave": w.name,
                           "action": f"due at {shown(w.send_at, spec.zone)} (not deployed: "
                                     "run it then)"})
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
        report_hook(publish_report, slug, clock)
    failed = [f"{r['event']} {r['wave']}" for r in results if "failed" in r]
    create_table_artifact(key="daily-reminders", table=report or [
        {"event": "-", "wave": "-", "action": "no reminder or missed wave today"}],
        description=f"Daily run of {shown(clock, None)}: reminders and caught-up waves")
    if failed:  # the other events still ran; the day's run says which did not
        return Failed(message="failed: " + ", ".join(failed))
    return results
