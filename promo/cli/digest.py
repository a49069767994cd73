"""`promo digest preview|run --series S`: the series' monthly digest by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from promo.cli.output import console, outcome_table, parse_time, print_json

digest_app = typer.Typer(help="The monthly digest: a series' next events and the recordings "
                         "of the last ones.", no_args_is_help=True)

SERIES = typer.Option("--series", metavar="S", help="the series (an event's `series:`, "
                      "default its topic)")
NOW = typer.Option(help="the clock, ISO 8601 with offset (testing, replays)")


@digest_app.command()
def preview(
    series: Annotated[str, SERIES],
    now: Annotated[str | None, NOW] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """What this month's digest lists and whom it would reach, sending nothing."""
    from flows.digest import preview_digest
    from promo.db import session_scope
    from promo.settings import get_settings

    clock = parse_time(now) or datetime.now(UTC)
    with session_scope() as s:
        data = preview_digest(s, series, clock, get_settings())
        s.rollback()  # a preview changes nothing
    if as_json:
        print_json(data)
        return
    _print(data)


@digest_app.command()
def run(
    series: Annotated[str, SERIES],
    now: Annotated[str | None, NOW] = None,
) -> None:
    """Send this month's digest now, through the waves' send pipeline (once a month: a
    re-run sends only what was not sent)."""
    from flows.campaign import all_outcomes
    from flows.digest import compose
    from flows.digest_flow import digest_flow
    from promo.db import session_scope
    from promo.settings import get_settings

    clock = parse_time(now) or datetime.now(UTC)
    with session_scope() as s:  # an unknown series is one message, not a failed flow run
        compose(s, series, clock, get_settings())
        s.rollback()
    result = digest_flow(series, clock.isoformat())
    console.print(escape(result["note"]), highlight=False)
    if result.get("digest"):
        console.print(outcome_table(f"{result['digest']}: messages so far",
                                    all_outcomes(result["digest"])))
    if result.get("failed"):
        from promo.errors import UserError

        raise UserError(f"{result['digest']}: {result['failed']}")


def _print(data: dict[str, Any]) -> None:
    console.print(escape(data["note"]), highlight=False)
    if data["digest"] is None:
        return
    console.print(f"digest {data['digest']} ({data['month']}), audience {data['audience']}:")
    for e in data["upcoming"]:
        console.print(escape(f"  upcoming  {e['title']}: {e['starts_at']} ({e['timezone']})"),
                      highlight=False)
    for e in data["past"]:
        got = [f"{len(e['recordings'])} recording(s)"] if e["recordings"] else []
        got += [k for k in ("slides", "photos") if e[k]]
        console.print(escape(f"  past      {e['title']}: {', '.join(got) or 'no recordings'}"),
                      highlight=False)
    title = "recorded" if not data["predicted"] else "predicted"
    console.print(outcome_table(f"{data['digest']}: {title}", {"digest": data["outcomes"]}))
    sample = data["samples"].get("email.ru") or data["samples"].get("email.en")
    if sample:
        console.print(escape(f"email subject: {sample['subject']}"), highlight=False)
