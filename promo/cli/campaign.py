"""The campaign commands: `promo demo`, `run`, `plan` and `why`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from promo.cli.output import console, outcome_table, parse_time, print_json
from promo.errors import UserError


def demo(
    folder: Annotated[Path, typer.Option("--dir", help="where the demo writes its store and outbox")] = Path("demo"),
    contacts: Annotated[int, typer.Option(help="size of the synthetic audience", min=10)] = 1000,
    verbose: Annotated[bool, typer.Option("--verbose", help="show Prefect's run log")] = False,
) -> None:
    """Run a whole campaign on the embedded defaults: synthetic audience, simulated clock."""
    import os

    if not verbose:  # read when Prefect is first imported, just below
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.campaign import all_outcomes
    from promo.demo import EVENT_SLUG, run_demo

    started = time.monotonic()
    console.print(f"[bold]event-promo demo[/]: {contacts} synthetic contacts, event "
                  f"{EVENT_SLUG}, every wave run through the Prefect flows at its time")
    console.print("starting Prefect (a temporary local server, 10-20 s), then the waves:")
    result = run_demo(folder, contacts)
    digest = result["digest"]
    if digest.get("digest"):
        console.print(outcome_table(f"Monthly digest of the series (promo digest preview "
                                    f"--series python): {digest['note']}",
                                    all_outcomes(digest["digest"])), highlight=False)
        console.print(f"the digest's emails: {folder / 'outbox' / 'email'}/"
                      f"{digest['digest']}*.eml; ask why: promo why CONTACT-ID "
                      f"{digest['digest']}", highlight=False)
    else:
        console.print(f"monthly digest: {digest['note']}", highlight=False)
    outcomes = all_outcomes(EVENT_SLUG)
    order = {"announce": 0, "last_call": 1, "reminder": 2}
    outcomes = dict(sorted(outcomes.items(), key=lambda kv: order.get(kv[0], 9)))
    console.print(outcome_table("Messages per wave and channel", outcomes))
    console.print("capped: a frequency cap or kept for the reminder; suppressed: no address, no "
                  "consent, opted out or registered. Ask why for anyone: "
                  f"promo why CONTACT-ID {EVENT_SLUG}  (with PROMO_DATABASE_URL=sqlite:///"
                  f"{folder / 'promo.db'})", highlight=False)
    from promo.demo_series import show as show_series

    show_series(folder, EVENT_SLUG, console)
    console.print(f"event file: {result['event_file']}")
    console.print(f"outbox:     {folder / 'outbox'}  (.eml for email, JSON lines for the rest)")
    console.print(f"database:   {folder / 'promo.db'}")
    console.print(f"done in {time.monotonic() - started:.0f} s")


def run(
    event_file: Annotated[Path, typer.Argument(help="the event YAML")],
    wave: Annotated[str | None, typer.Option(help="run only this wave (announce, last_call, reminder)")] = None,
    now: Annotated[str | None, typer.Option(help="the clock, ISO 8601 with offset (testing, replays)")] = None,
) -> None:
    """Run a campaign (the waves due now) or one wave, through the Prefect flows."""
    from channels.render import override_folder
    from channels.samples import sample_check
    from flows.campaign import all_outcomes, campaign_flow, wave_flow
    from flows.plan import plan_campaign
    from flows.store import save_event
    from promo.db import session_scope
    from promo.domain.event import WAVES, load_event
    from promo.settings import get_settings

    clock = parse_time(now) or datetime.now(UTC)
    spec = load_event(event_file)
    # the rules and the templates are checked before any flow starts or anything is stored:
    # bad input gets one clear message, not a failed flow run
    if wave is not None and wave not in WAVES:
        raise UserError(f"--wave {wave!r}: one of {', '.join(WAVES)}")
    if not spec.cancelled:
        plan = plan_campaign(spec, clock)
        waves = [plan.wave(wave)] if wave else plan.active
        sample_check(spec, {w.name: list(w.spec.channels) for w in waves if w.send_at},
                     override_folder(spec, event_file), settings=get_settings())
    if wave is not None:
        if spec.cancelled:
            raise UserError(f"{spec.slug}: the event is cancelled (cancelled: true)")
        wp = plan.wave(wave)
        if wp.send_at is None:
            raise UserError(f"{spec.slug}: the {wave} wave is dropped: {wp.note}")
        with session_scope() as s:
            save_event(s, spec, event_file)
        result = wave_flow(spec.slug, wave, clock.isoformat())
        if result.get("status") == "early":
            console.print(f"{wave}: {result['note']}")
    else:
        result = campaign_flow(str(event_file), clock.isoformat())
        for w in result["waves"]:
            console.print(f"{w['name']}: {w['status']} {w['send_at'] or ''} {w['note']}")
    console.print(outcome_table(f"{spec.slug}: messages so far", all_outcomes(spec.slug)))


def plan(
    event_file: Annotated[Path, typer.Argument(help="the event YAML")],
    now: Annotated[str | None, typer.Option(help="the clock, ISO 8601 with offset")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Preview the campaign without sending: per wave, when, channels and outcome counts."""
    from channels.render import override_folder
    from channels.samples import sample_check
    from flows.plan import plan_campaign
    from flows.preview import preview_campaign
    from promo.db import session_scope
    from promo.domain.event import load_event
    from promo.domain.names import OUTCOMES
    from promo.settings import get_settings

    clock = parse_time(now) or datetime.now(UTC)
    spec = load_event(event_file)
    override = override_folder(spec, event_file)
    plan_ = plan_campaign(spec, clock)
    # every template the campaign will use, checked before anything else is shown
    sample_check(spec, {w.name: list(w.spec.channels) for w in plan_.active}, override,
                 settings=get_settings())
    with session_scope() as s:
        data = preview_campaign(s, spec, clock, get_settings(), override)
        s.rollback()  # a preview changes nothing
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]{spec.title}[/] ({spec.slug}), starts "
                  f"{spec.local_start:%Y-%m-%d %H:%M %Z}; plan as of {clock:%Y-%m-%d %H:%M %Z}")
    for w in data["waves"]:
        when = (datetime.fromisoformat(w["send_at"]).astimezone(spec.zone).strftime("%Y-%m-%d %H:%M %Z")
                if w["send_at"] else "-")
        console.print(f"\n[bold]{w['name']}[/]: {w['status']} {when}, {w['mode']}: "
                      f"{', '.join(w['channels'])}" + (f"  ({w['note']})" if w["note"] else ""))
        if w["send_at"] is None:
            continue
        if not w["outcomes"]:
            console.print("  nobody to send to yet" + (
                " (the reminder goes to those who registered)" if w["name"] == "reminder" else
                " (no contact follows the topic or attended an event of it)"))
            continue
        used = [c for c in OUTCOMES if any(r.get(c) for r in w["outcomes"].values())]
        table = Table(show_header=True)
        table.add_column("channel")
        for c in used:
            table.add_column(c, justify="right")
        table.add_column("SMS segments ru/en", justify="right")
        table.add_column(f"cost, {w['currency']}", justify="right")
        for channel, row in w["outcomes"].items():
            content = w["content"].get(channel)
            segments = ("/".join(str(n) for n in content["segments"].values())
                        if content and channel == "sms" else "")
            cost = _money(content["estimated_cost"]) if content else ""
            table.add_row(channel, *(str(row.get(c, 0)) for c in used), segments, cost)
        console.print(table)
        console.print(f"estimated cost of the wave: {_money(w['estimated_cost'])} {w['currency']} "
                      f"(prices: the `prices` setting)", highlight=False)


def _money(amount: float) -> str:
    # a few emails cost a fraction of a cent: show it rather than 0.00
    return f"{amount:,.2f}" if amount >= 1 or amount == 0 else f"{amount:.4f}".rstrip("0")


def why(
    contact: Annotated[str, typer.Argument(help="contact id, email or phone")],
    event: Annotated[str, typer.Argument(help="event slug (stored) or event YAML file")],
    now: Annotated[str | None, typer.Option(help="the clock, ISO 8601 with offset")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Explain, for one person, every decision for an event with its reason."""
    from dataclasses import asdict

    from audiences.privacy import person_or_error
    from flows.preview import explain
    from flows.store import event_spec, find_event
    from promo.db import session_scope
    from promo.domain.event import load_event
    from promo.settings import get_settings

    clock = parse_time(now) or datetime.now(UTC)
    with session_scope() as s:
        spec = load_event(event) if event.endswith((".yaml", ".yml")) else event_spec(find_event(s, event))
        person = person_or_error(s, contact)
        person_id, person_name = person.id, person.name
        lines = explain(s, person, spec, clock, get_settings())
        s.rollback()  # an explanation changes nothing
    if as_json:
        print_json({"contact": person_id, "event": spec.slug, "now": clock.isoformat(),
                    "decisions": [asdict(x) for x in lines]})
        return
    console.print(f"contact {person_id} ({person_name or 'no name'}), {spec.slug}:")
    if not lines:
        console.print("  no decisions yet")
    for x in lines:
        when = x.sent_at or x.send_at or ""
        tail = f": {x.reason}" if x.reason else ""
        src = "" if x.source == "ledger" else f" ({x.source})"
        console.print(escape(f"  {x.wave:<9} {x.channel or '-':<9} {x.status}{tail} {when}{src}"),
                      highlight=False)
