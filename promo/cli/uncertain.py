"""`promo uncertain`: the messages whose fate nobody knows (a worker stopped while their
request was in flight, on a channel that cannot be asked), listed and settled by an operator
who checked with the provider or the recipients."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from promo.cli.output import console, print_json
from promo.errors import UserError

uncertain_app = typer.Typer(
    help="Messages whose fate is unknown (a worker stopped mid-request): list and settle them.",
    no_args_is_help=True)


@uncertain_app.command("list")
def uncertain_list(
    event: Annotated[str, typer.Argument(help="event slug")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """The event's uncertain messages, by wave, channel and reason."""
    from flows.ledger import uncertain_groups
    from flows.store import find_event
    from promo.db import session_scope

    with session_scope() as s:
        groups = uncertain_groups(s, find_event(s, event).id)
    if as_json:
        print_json([{"wave": w, "channel": c, "reason": r, "count": n} for w, c, r, n in groups])
        return
    if not groups:
        console.print(f"{event}: no uncertain messages")
        return
    table = Table(title=f"{event}: uncertain messages")
    for col in ("wave", "channel", "count", "reason"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for w, c, r, n in groups:
        table.add_row(w, c, str(n), escape(r or "-"))
    console.print(table)
    console.print("settle a group: promo uncertain settle EVENT --wave WAVE --channel CHANNEL "
                  "--as sent|resend", highlight=False)


@uncertain_app.command("settle")
def uncertain_settle(
    event: Annotated[str, typer.Argument(help="event slug")],
    wave: Annotated[str, typer.Option(help="the group's wave")],
    channel: Annotated[str, typer.Option(help="the group's channel")],
    as_: Annotated[str, typer.Option("--as", help="sent: they went out; resend: send them again")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Settle one group of uncertain messages: mark them sent, or send them again (they go
    with the wave's next run)."""
    from flows.ledger import settle_uncertain, uncertain_groups
    from flows.store import find_event
    from promo.db import session_scope

    if as_ not in ("sent", "resend"):
        raise UserError(f"--as {as_!r}: one of sent, resend")
    with session_scope() as s:
        row = find_event(s, event)
        count = sum(n for w, c, _, n in uncertain_groups(s, row.id) if w == wave and c == channel)
        if not count:
            raise UserError(f"{event}: no uncertain {channel} messages in the {wave} wave")
        what = ("mark as sent" if as_ == "sent" else
                "send again (some may reach their recipient twice)")
        if not yes and not typer.confirm(f"{count} uncertain {channel} messages of {event} "
                                         f"{wave}: {what}?"):
            raise typer.Exit(1)
        done = settle_uncertain(s, row.id, wave, channel, as_ == "sent", datetime.now(UTC))
    console.print(f"{event} {wave} {channel}: {done} " + (
        "marked sent" if as_ == "sent" else
        f"to be sent again: promo run EVENT.yaml --wave {wave}"), highlight=False)
