"""The Prefect flows: a campaign, a wave, and the daily reminder run.

Thin on purpose: the decisions live in plain functions (`flows.plan`, `flows.decide`,
`flows.wave`, `channels.send`); a task is a batch of recipients, never one message.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from sqlalchemy import select

from channels.render import sample_check
from channels.send import send_batch
from flows.events import load_event
from flows.ledger import next_due, wave_outcomes
from flows.plan import plan_campaign
from flows.store import event_spec, find_event, save_event
from flows.wave import due_batches, prepare_wave
from promo.db import session_scope
from promo.db.models import Event, Message
from promo.settings import get_settings


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


@task(name="decide-wave", task_run_name="decide {event_slug} {wave}")
def decide_task(event_slug: str, wave: str, now: str) -> dict[str, Any]:
    prepared = prepare_wave(event_slug, wave, parse_now(now), get_settings())
    return {"status": prepared.status, "note": prepared.note, "decided": prepared.new_decisions,
            "interrupted": prepared.interrupted}


@task(name="send-batch", task_run_name="send {channel} batch of {size}")
def send_task(message_ids: list[int], now: str, channel: str, size: int) -> dict[str, int]:
    return dict(send_batch(message_ids, parse_now(now), get_settings(), get_run_logger()))


@flow(name="wave", flow_run_name="{event_slug} · {wave}", log_prints=False)
def wave_flow(event_slug: str, wave: str, now: str | None = None) -> dict[str, Any]:
    """Decide the wave for everyone not yet decided and send what is due now."""
    logger = get_run_logger()
    settings = get_settings()
    clock = parse_now(now).isoformat()
    decided = decide_task(event_slug, wave, clock)
    if decided["status"] in ("dropped", "early"):
        logger.info("%s %s: %s", event_slug, wave, decided["note"])
        return {"event": event_slug, "wave": wave, **decided, "sent": {}}
    batches = due_batches(event_slug, wave, parse_now(clock), settings)
    with session_scope(settings.database_url) as s:
        channels = dict(s.execute(select(Message.id, Message.channel).where(
            Message.id.in_([b[0] for b in batches]))).all()) if batches else {}
    futures = [
        send_task.submit(b, clock, channels.get(b[0], "?"), len(b)) for b in batches
    ]
    sent: Counter = Counter()
    for f in futures:
        sent.update(f.result())
    with session_scope(settings.database_url) as s:
        row = find_event(s, event_slug)
        outcomes = wave_outcomes(s, row.id, wave)
        later = next_due(s, row.id, wave)
    _publish_outcomes(event_slug, wave, outcomes)
    logger.info("%s %s: %s", event_slug, wave,
                ", ".join(f"{k} {v}" for k, v in sorted(sent.items())) or "nothing due")
    return {"event": event_slug, "wave": wave, **decided, "sent": dict(sent),
            "outcomes": outcomes, "next_due": later.isoformat() if later else None}


def _publish_outcomes(event_slug: str, wave: str, outcomes: dict[str, dict[str, int]]) -> None:
    columns = ("sent", "planned", "deferred", "capped", "suppressed", "dropped", "failed",
               "uncertain")
    table = [{"channel": ch, **{c: row.get(c, 0) for c in columns}}
             for ch, row in sorted(outcomes.items())]
    create_table_artifact(
        key=f"{_slug(event_slug)}-{_slug(wave)}-outcomes",
        table=table,
        description=f"{event_slug}, {wave}: outcome per channel",
    )


@flow(name="campaign", flow_run_name="campaign {event_file}")
def campaign_flow(event_file: str, now: str | None = None,
                  simulate_clock: bool = False) -> dict[str, Any]:
    """Validate the event and its templates, store it, plan the waves and run them.

    Runs each wave that is due now. With `simulate_clock` (the demo) it runs every wave
    "at" its time, and releases the messages held by quiet hours at the time they open.
    """
    logger = get_run_logger()
    settings = get_settings()
    clock = parse_now(now)
    spec = load_event(event_file)
    plan = plan_campaign(spec, clock)
    override = None
    with session_scope(settings.database_url) as s:
        row = save_event(s, spec, Path(event_file))
        override = row.definition.get("_templates_dir")
    sample_check(spec, {w.name: list(w.spec.channels) for w in plan.active}, override)
    create_table_artifact(
        key=f"{spec.slug}-plan",
        table=[{"wave": w.name, "send_at": w.send_at.isoformat() if w.send_at else "",
                "status": w.status, "channels": ", ".join(w.spec.channels),
                "mode": w.spec.mode, "note": w.note} for w in plan.waves],
        description=f"Campaign plan for {spec.title}",
    )
    for w in plan.waves:
        logger.info("%s: %s %s %s", w.name, w.status,
                    w.send_at.astimezone(spec.zone).isoformat() if w.send_at else "-", w.note)
    results = []
    for w in plan.active:
        if simulate_clock:
            results.append(wave_flow(spec.slug, w.name, w.send_at.isoformat()))
            results.extend(_release_deferred(spec.slug, w.name, spec.starts_at))
        elif w.send_at <= clock:
            results.append(wave_flow(spec.slug, w.name, clock.isoformat()))
    return {"event": spec.slug, "waves": [
        {"name": w.name, "status": w.status, "send_at": w.send_at.isoformat() if w.send_at else None,
         "note": w.note} for w in plan.waves], "runs": results}


def _release_deferred(slug: str, wave: str, starts_at: datetime) -> list[dict[str, Any]]:
    """Simulated clock: run the wave again at each time held messages become due."""
    settings = get_settings()
    results = []
    for _ in range(48):  # at most one run per opening window; a guard, not a limit in practice
        with session_scope(settings.database_url) as s:
            later = next_due(s, find_event(s, slug).id, wave)
        if later is None or later >= starts_at:
            break
        results.append(wave_flow(slug, wave, later.isoformat()))
    return results


@flow(name="reminders", flow_run_name="daily reminders")
def reminder_flow(now: str | None = None) -> list[dict[str, Any]]:
    """Every day: the day-before reminders for tomorrow's events, and any wave that is due
    and was never run (a worker was down), once."""
    logger = get_run_logger()
    settings = get_settings()
    clock = parse_now(now)
    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(Event).where(
            Event.cancelled_at.is_(None), Event.starts_at > clock,
            Event.starts_at < clock + timedelta(days=22))).all()
        todo = []
        for row in rows:
            spec = event_spec(row)
            plan = plan_campaign(spec, clock)
            ran = set(s.scalars(select(Message.wave).where(Message.event_id == row.id).distinct()))
            for w in plan.active:
                due = w.send_at <= clock
                if w.name == "reminder" and due:
                    todo.append((spec.slug, w.name))  # re-running sends only what was not sent
                elif due and w.name not in ran:
                    logger.info("%s: catching up the %s wave", spec.slug, w.name)
                    todo.append((spec.slug, w.name))
    return [wave_flow(slug, wave, clock.isoformat()) for slug, wave in todo]


def format_outcomes(outcomes: dict[str, dict[str, int]]) -> list[str]:
    return [f"{ch}: " + ", ".join(f"{k} {v}" for k, v in sorted(row.items()))
            for ch, row in sorted(outcomes.items())]


def all_outcomes(slug: str) -> dict[str, dict[str, dict[str, int]]]:
    settings = get_settings()
    with session_scope(settings.database_url) as s:
        row = find_event(s, slug)
        waves = s.scalars(select(Message.wave).where(Message.event_id == row.id).distinct()).all()
        return {w: wave_outcomes(s, row.id, w) for w in waves}
