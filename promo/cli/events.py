"""`promo events` (check and store event files) and `promo db`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from promo.cli.output import console, parse_time, print_json
from promo.domain.times import shown

events_app = typer.Typer(help="Event files: check and store them; the stored events and their waves.",
                         no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)


@events_app.command("check")
def events_check(
    event_file: Path,
    now: Annotated[str | None, typer.Option(help="the clock, ISO 8601 with offset")] = None,
) -> None:
    """Check an event file as `promo plan` does (rules, the plan, every template) and show
    its waves; every problem is listed at once. Nothing is stored or sent."""
    from channels.render import override_folder
    from channels.samples import sample_check
    from flows.plan import check_rules, plan_campaign
    from flows.preview import preview_campaign
    from promo.db import session_scope
    from promo.domain.event import load_event
    from promo.errors import UserError
    from promo.settings import get_settings

    clock = parse_time(now) or datetime.now(UTC)
    spec = load_event(event_file)  # the file's own mistakes, all at once, with their lines
    settings = get_settings()
    problems: list[str] = []
    try:
        check_rules(spec)
        plan_campaign(spec, clock)
    except UserError as exc:
        problems.append(str(exc))
    override = override_folder(spec, event_file)
    for name, w in spec.campaign.waves().items():
        for channel in w.channels:  # each template on its own: one broken one hides no other
            try:
                sample_check(spec, {name: [channel]}, override, settings=settings)
            except UserError as exc:
                if str(exc) not in problems:
                    problems.append(str(exc))
    if len(problems) == 1:
        raise UserError(f"{event_file}: {problems[0]}")
    if problems:
        raise UserError(f"{event_file}: {len(problems)} problems:\n"
                        + "\n".join(f"  - {p}" for p in problems))
    with session_scope() as s:
        data = preview_campaign(s, spec, clock, settings, override)
        s.rollback()  # a check changes nothing
    for w in data["waves"]:
        wave_spec = spec.campaign.waves()[w["name"]]
        at = (f"sent {shown(w.get('first_sent_at'), spec.zone)}" if w["status"] == "ran"
              else shown(w["send_at"] or w["scheduled_at"], spec.zone))
        console.print(f"{w['name']}: {w['status']} {at}, {wave_spec.mode}: "
                      f"{', '.join(wave_spec.channels)}" + (f" ({w['note']})" if w["note"] else ""),
                      highlight=False)
    console.print(f"{event_file}: ok" + (" (cancelled: nothing more is sent)"
                                         if spec.cancelled else ""), highlight=False)


@events_app.command("list")
def events_list(
    now: Annotated[str | None, typer.Option(help="the clock, ISO 8601 with offset")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """The stored events: slug, title, start, and each wave's state with its counts (people
    reached, from the ledger, for a wave that ran)."""
    from sqlalchemy import select

    from flows.account import wave_account
    from flows.plan import plan_campaign
    from flows.store import event_spec
    from promo.db import session_scope
    from promo.db.models import Event
    from promo.errors import UserError

    clock = parse_time(now) or datetime.now(UTC)
    rows: list[dict] = []
    with session_scope() as s:
        for event in s.scalars(select(Event).order_by(Event.starts_at, Event.slug)):
            spec = event_spec(event)
            if event.kind == "digest":  # a series' monthly digest: its one wave
                rows.append(_digest_row(s, event, spec))
                continue
            try:
                plan = {w.name: w for w in plan_campaign(spec, clock).waves}
            except UserError:
                plan = {}  # started: only the ledger can say
            waves = []
            for name in spec.campaign.waves():
                account = wave_account(s, event.id, name)
                if account.ran:
                    state, detail = "ran", account.line(limit=2)
                elif event.cancelled_at is not None:
                    state, detail = "cancelled", ""
                elif name in plan:
                    w = plan[name]
                    state = str(w.status)
                    detail = shown(w.send_at, spec.zone) if w.send_at else w.note
                else:
                    state, detail = "not sent", "the event has started"
                waves.append({"wave": name, "state": state, "detail": detail,
                              "reached": account.reached, "got_nothing": account.nothing})
            rows.append({"slug": spec.slug, "title": spec.title, "kind": "event",
                         "starts_at": spec.starts_at.isoformat(),
                         "start": shown(spec.starts_at, spec.zone),
                         "cancelled": event.cancelled_at is not None, "waves": waves})
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no events stored yet: `promo events add EVENT.yaml` or `promo run`")
        return
    table = Table(title="events")
    for column in ("slug", "title", "start", "waves"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["slug"], r["title"], r["start"] + (" (cancelled)" if r["cancelled"] else ""),
                      "\n".join(f"{w['wave']}: {w['state']}"
                                + (f" · {w['detail']}" if w["detail"] else "") for w in r["waves"]))
    console.print(table)


@events_app.command("add")
def events_add(
    event_file: Path,
    now: Annotated[str | None, typer.Option(help="the clock, ISO 8601 with offset")] = None,
) -> None:
    """Validate an event file and store (or update) the event. An event that has already
    happened is stored for its series' history; nothing is planned for it."""
    from flows.plan import check_rules
    from flows.store import save_event
    from promo.db import session_scope
    from promo.domain.event import load_event

    clock = parse_time(now) or datetime.now(UTC)
    spec = load_event(event_file)
    check_rules(spec)
    with session_scope() as s:
        save_event(s, spec, event_file)
    if spec.starts_at <= clock:
        console.print(f"{spec.slug}: stored as a past event of the series {spec.series_name} "
                      f"(started {spec.local_start:%Y-%m-%d %H:%M %Z}); nothing is planned. "
                      f"Import its registrations and attendance for the report and the forecast.",
                      highlight=False)
        return
    console.print(f"{spec.slug}: stored")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database (also done on first use)."""
    from promo.db import get_engine

    engine = get_engine()
    console.print(f"{engine.url.render_as_string(hide_password=True)}: up to date")


def _digest_row(s, event, spec) -> dict:
    """A digest in `promo events list`: its month (its `starts_at` is the month's end) and
    what its one wave did."""
    from flows.account import wave_account
    from promo.domain.names import DIGEST

    account = wave_account(s, event.id, DIGEST)
    return {"slug": spec.slug, "title": spec.title, "kind": "digest",
            "starts_at": spec.starts_at.isoformat(), "start": f"the month {spec.month}",
            "cancelled": False,
            "waves": [{"wave": DIGEST, "state": "ran" if account.ran else "not sent",
                       "detail": account.line(limit=2) if account.ran else "",
                       "reached": account.reached, "got_nothing": account.nothing}]}
