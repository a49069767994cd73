"""`promo report EVENT` and `promo report --series S`: the series report, as text, JSON, CSV
and a picture."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from promo.cli.output import console, parse_time, print_json
from promo.errors import UserError


def report(
    event: Annotated[str | None, typer.Argument(help="the event's slug", metavar="EVENT")] = None,
    series: Annotated[str | None, typer.Option("--series", metavar="S",
                                               help="the whole series, its events in order")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    as_csv: Annotated[bool, typer.Option(
        "--csv", help="a long table: event, wave, channel, measure, value")] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", metavar="FILE.png",
        help="also draw the picture: registrations over time, registered vs came")] = None,
    now: Annotated[str | None, typer.Option(help="the clock, ISO 8601 with offset")] = None,
) -> None:
    """What the waves did and who came: per event (reached, clicks, registrations per wave
    and channel, attendance, show-up rate, opt-outs, money) or per series, and the show-up
    forecast for an event to come."""
    from flows.store import find_event, series_events
    from promo.db import session_scope
    from promo.report.series import event_report, series_history, series_report
    from promo.settings import get_settings

    if (event is None) == (series is None):
        raise UserError("give an EVENT slug or --series S (one of them)")
    if as_json and as_csv:
        raise UserError("--json or --csv, not both")
    if plot is not None and plot.suffix.lower() != ".png":
        raise UserError(f"--plot {plot}: the picture is a PNG (FILE.png)")
    clock = parse_time(now) or datetime.now(UTC)
    settings = get_settings()
    with session_scope() as s:
        if event is not None:
            row = find_event(s, event)
            data: dict[str, Any] = event_report(s, row, clock, settings)
            reports = [data]
            current = data
            if plot is not None:  # the series' other events, for the picture's lower half
                history = series_history(s, row, data, clock, settings)
        else:
            rows = series_events(s, series)
            data = series_report(s, series, clock, settings, rows)
            reports = history = data["events"]
            # the picture's top half: the event to come, else the last one
            upcoming = [i for i, e in enumerate(reports) if e["status"] == "upcoming"]
            at = upcoming[0] if upcoming else len(rows) - 1
            row, current = rows[at], reports[at]
        if plot is not None:
            from promo.report.plot import picture

            png = picture(s, row, current, history)
        s.rollback()  # a report changes nothing
    if plot is not None:
        try:
            plot.write_bytes(png)
        except OSError as exc:
            raise UserError(f"--plot {plot}: cannot write: {exc.strerror or exc}") from None
    if as_json:
        print_json(data)
    elif as_csv:
        from promo.report.series import CSV_COLUMNS, csv_rows

        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in reports:
            writer.writerows(csv_rows(r))
    else:
        show(reports, series, data.get("trend"))
    if plot is not None and not (as_json or as_csv):
        console.print(f"picture: {plot}", highlight=False)


def show(reports: list[dict[str, Any]], series: str | None,
         trend: dict[str, Any] | None = None) -> None:
    if series is not None:
        table = Table(title=f"series {series}: event after event")
        for col in ("event", "starts", "registered", "came", "show-up", "walk-ins", "new",
                    "returning", "cost", "forecast (80%)"):
            table.add_column(col, justify="left" if col in ("event", "starts") else "right")
        for r in reports:
            f = r["forecast"]
            table.add_row(r["event"], r["starts_at"][:10], str(r["registered"]), _n(r["attended"]),
                          _pct(r["show_up_rate"]), _n(r["walk_ins"]), _n(r["new_attendees"]),
                          _n(r["returning_attendees"]), f"{r['cost']['total']:.2f}",
                          f"{f['expected']} ({f['low']}-{f['high']})" if f else "")
        console.print(table)
        if trend and trend["registered_per_event"] is not None:
            line = f"trend over {trend['past_events']} past events: registered " \
                   f"{trend['registered_per_event']:+.1f} per event"
            if trend["show_up_rate_per_event"] is not None:
                line += (f", show-up rate {100 * trend['show_up_rate_per_event']:+.1f} points "
                         f"per event (the last one {100 * trend['last_show_up_rate_vs_before']:+.1f}"
                         f" against the average before it)")
            console.print(line, highlight=False)
        return
    for r in reports:
        console.print(f"[bold]{escape(r['title'])}[/] ({r['event']}, series {r['series']}), "
                      f"{r['starts_at']}, {r['status']}", highlight=False)
        came = ("attendance not known yet" if r["attended"] is None else
                f"came {r['attended']} of {r['registered']} registered "
                f"({_pct(r['show_up_rate'])}), walk-ins {r['walk_ins']}; "
                f"new {r['new_attendees']}, returning {r['returning_attendees']}")
        console.print(f"  registered {r['registered']}; {came}", highlight=False)
        table = Table(title="per wave and channel")
        for col in ("wave", "channel", "reached", "posts", "clicks", "registrations",
                    "opt-outs", f"cost, {r['cost']['currency']}"):
            table.add_column(col, justify="left" if col in ("wave", "channel") else "right")
        for w in r["waves"]:
            table.add_row(w["wave"], w["channel"], str(w["reached"]), str(w["posts"]),
                          str(w["clicks"]), str(w["registrations"]), str(w["opt_outs"]),
                          f"{w['cost']:.2f}")
        other = [x for x in r["registrations_by"] if x["wave"] is None]
        for x in other:
            table.add_row("-", x["channel"] or "unattributed", "", "", "",
                          str(x["registrations"]), "", "")
        console.print(table)
        f = r["forecast"]
        if f is not None:
            console.print(f"  forecast: [bold]{f['expected']}[/] of {f['registered']} registered "
                          f"so far will come (80% range {f['low']}-{f['high']}); {f['note']}",
                          highlight=False)
            more = f.get("with_registrations_to_come")
            if more and more["registrations_to_come"]:
                console.print(f"  with about {more['registrations_to_come']} more registrations "
                              f"to come: [bold]{more['expected']}[/] "
                              f"(80% range {more['low']}-{more['high']})", highlight=False)


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
