"""`promo attendance import`: a check-in list (who came) for an event."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from promo.cli.audiences import DryRunOption, EncodingOption, FormatOption, JsonOption
from promo.cli.output import console, err, parse_time, print_json

attendance_app = typer.Typer(help="Attendance: who came to an event (check-in lists).",
                             no_args_is_help=True)


@attendance_app.command("import")
def attendance_import(
    file: Annotated[Path, typer.Argument(help="the check-in list (CSV)", metavar="FILE")],
    event: Annotated[str, typer.Option("--event", metavar="SLUG", help="the stored event")],
    dry_run: DryRunOption = False,
    format: FormatOption = None,
    encoding: EncodingOption = None,
    now: Annotated[str | None, typer.Option(help="the clock, ISO 8601 with offset")] = None,
    as_json: JsonOption = False,
) -> None:
    """Import a check-in list: every row is someone who came.

    Rows are matched to contacts as in a registration import. Someone who came without
    registering is recorded as a walk-in; registrants on no list are marked as not come.
    A file with a problem changes nothing.
    """
    from audiences.attendance import AttendanceRefused, import_check_in
    from flows.store import find_event
    from promo.db import session_scope

    clock = parse_time(now) or datetime.now(UTC)
    try:
        with session_scope() as s:
            row = find_event(s, event)
            report = import_check_in(s, file, row, now=clock, format=format, encoding=encoding,
                                     dry_run=dry_run)
            if dry_run:
                s.rollback()
    except AttendanceRefused as refused:
        if as_json:
            print_json(refused.report.as_dict())
        err.print("[red]error:[/] " + escape(str(refused)), highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        print_json(report.as_dict())
        return
    for line in report.notes[:50]:
        err.print(f"[yellow]note[/] {escape(line)}", highlight=False, soft_wrap=True)
    console.print(f"{escape(report.file)}: {report.rows} rows, {report.came} people came to "
                  f"{report.event}", highlight=False, soft_wrap=True)
    for label, n in (
        ("registrants marked as come", report.registrants_marked),
        ("registrants already marked", report.registrants_already_marked),
        ("walk-ins (came without registering)", report.walk_ins),
        ("walk-ins already recorded", report.walk_ins_already),
        ("of them new contacts", report.new_contacts),
        ("registrants on no list, marked as not come", report.no_shows_marked),
        ("rows repeating a person earlier in the file", report.duplicates),
        ("rows of forgotten people, not imported", report.forgotten),
    ):
        if n or label.startswith("registrants marked"):
            console.print(f"  {label}: {n}")
    if dry_run:
        console.print("dry run: nothing was changed")
