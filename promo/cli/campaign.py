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
from promo.domain.times import shown
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
    from promo.cli.orphans import bind_temporary_server
    from promo.demo import EVENT_SLUG, run_demo

    bind_temporary_server()

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
    from flows.plan import plan_campaign
    from promo.cli.orphans import bind_temporary_server
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
    # say what is about to happen before Prefect starts: its temporary API takes seconds
    console.print(f"{spec.slug}: the event file, its rules and templates are fine; starts "
                  f"{shown(spec.starts_at, spec.zone)}", highlight=False)
    if not spec.cancelled:
        ran = _waves_that_ran(spec.slug)
        for w in waves:
            due = w.send_at is not None and w.send_at <= clock
            if w.name in ran:
                console.print(f"  {w.name}: ran already; a run sends only to whom it has not "
                              f"decided yet, nothing twice", highlight=False)
                continue
            console.print(f"  {w.name}: {w.status}, "
                          + ("due now: sending" if due else
                             f"goes {shown(w.send_at, spec.zone)}" if w.send_at else "dropped")
                          + (f" ({w.note})" if w.note else ""), highlight=False)
    console.print(_where_prefect_runs(), highlight=False)
    # Prefect is imported only now: the lines above show within a second or two
    bind_temporary_server()  # a killed command takes Prefect's temporary server with it
    from flows.account import wave_account
    from flows.campaign import all_outcomes, campaign_flow, wave_flow
    from flows.store import find_event, save_event

    if wave is not None:
        with session_scope() as s:
            save_event(s, spec, event_file)
        result = wave_flow(spec.slug, wave, clock.isoformat())
        if result.get("status") == "early":
            console.print(f"{wave}: {result['note']}")
    else:
        campaign_flow(str(event_file), clock.isoformat())
    outcomes = all_outcomes(spec.slug)
    console.print(outcome_table(f"{spec.slug}: messages so far, per channel", outcomes))
    with session_scope() as s:
        event_id = find_event(s, spec.slug).id
        for name in outcomes:
            account = wave_account(s, event_id, name)
            console.print(f"{name}: {account.line(limit=len(account.why))}", highlight=False)


def _waves_that_ran(slug: str) -> set[str]:
    """The event's waves with decisions in the store (none for an event not stored yet)."""
    from sqlalchemy import select

    from flows.ledger import decided_waves
    from promo.db import session_scope
    from promo.db.models import Event

    with session_scope() as s:
        event_id = s.scalar(select(Event.id).where(Event.slug == slug))
        return decided_waves(s, event_id) if event_id is not None else set()


def _where_prefect_runs() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return f"running the flows on the Prefect server at {url} (the runs stay in its UI)"
    return ("starting Prefect's temporary local API for the flow runs (a few seconds; set "
            "PREFECT_API_URL to run them on a server and keep them in its UI)")


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
    console.print(f"[bold]{spec.title}[/] ({spec.slug}), starts {shown(spec.starts_at, spec.zone)}; "
                  f"plan as of {shown(clock, spec.zone)}"
                  + ("; [bold]cancelled[/]: nothing more is sent" if spec.cancelled else ""))
    for w in data["waves"]:
        ran = w["status"] == "ran"
        when = (f"sent {shown(w.get('first_sent_at'), spec.zone)}" if ran
                else shown(w["send_at"], spec.zone))
        console.print(f"\n[bold]{w['name']}[/]: {w['status']} {when}, {w['mode']}: "
                      f"{', '.join(w['channels'])}" + (f"  ({w['note']})" if w["note"] else "")
                      + ("  · from the ledger: what it did" if ran else
                         "  · predicted" if w.get("predicted") else ""), highlight=False)
        if not ran and w["send_at"] is None:
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
        console.print(f"people: {w['people']['summary']}" if ran else
                      f"people: {_predicted_people(w['people'])}", highlight=False)
        console.print(f"{'cost of the wave' if ran else 'estimated cost of the wave'}: "
                      f"{_money(w['estimated_cost'])} {w['currency']} "
                      f"(prices: the `prices` setting)", highlight=False)


def _predicted_people(people: dict) -> str:
    """A wave to come in people: how many would get it (the account's "waiting")."""
    why = "; ".join(f"{w['reason']}: {w['people']}" for w in people["why"][:4])
    more = len(people["why"]) - 4
    return (f"{people['waiting']} of {people['people']} would get it, {people['nothing']} "
            f"would get nothing" + (f" ({why}" + (f"; +{more} more" if more > 0 else "") + ")"
                                    if why else ""))


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
        when = (f"sent {shown(x.sent_at, spec.zone)}" if x.sent_at else
                f"at {shown(x.send_at, spec.zone)}" if x.send_at else "")
        tail = f": {x.reason}" if x.reason else ""
        src = "" if x.source == "ledger" else f" ({x.source})"
        console.print(escape(f"  {x.wave:<9} {x.channel or '-':<9} {x.status}{tail} {when}{src}"),
                      highlight=False)
