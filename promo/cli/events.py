"""`promo events` (check and store event files) and `promo db`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from promo.cli.output import console, parse_time

events_app = typer.Typer(help="Event files: check and store them.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)


@events_app.command("check")
def events_check(
    event_file: Path,
    now: Annotated[str | None, typer.Option(help="the clock, ISO 8601 with offset")] = None,
) -> None:
    """Validate an event file and show its waves; an event that has started is refused."""
    from flows.plan import plan_campaign
    from promo.domain.event import load_event
    from promo.errors import PlanError

    clock = parse_time(now) or datetime.now(UTC)
    spec = load_event(event_file)
    try:
        plan_campaign(spec, clock)  # the rules, and an event in the past is refused
    except PlanError as exc:
        raise PlanError(f"{event_file}: {exc}") from None
    for name, w in spec.campaign.waves().items():
        at = spec.wave_time(w)
        console.print(f"{name}: {at:%Y-%m-%d %H:%M %Z}, {w.mode}: {', '.join(w.channels)}")
    console.print(f"{event_file}: ok")


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
