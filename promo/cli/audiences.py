"""`promo contacts ...` and `promo registrations ...`: imports, and what is stored about a person."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

contacts_app = typer.Typer(help="Contacts: import them, see and forget what is stored.",
                           no_args_is_help=True)
registrations_app = typer.Typer(help="Registrations for an event: import them.",
                                no_args_is_help=True)

NOTES_SHOWN = 50  # a big file can have thousands of notes; the JSON report has them all

FormatOption = Annotated[str | None, typer.Option(
    "--format", help="the file's column layout: generic, timepad or meetup "
                     "(default: recognized from the header)")]
EncodingOption = Annotated[str | None, typer.Option(
    help="read the file in this encoding (default: UTF-8 with or without BOM, else cp1251)")]
ConsentOption = Annotated[list[str] | None, typer.Option(
    "--consent", metavar="CHANNEL",
    help="consent on this channel for every row that has its address (email, sms, voice, "
         "vk, telegram); repeat it or separate with commas")]
SkipOption = Annotated[bool, typer.Option(
    "--skip-invalid", help="import the valid rows and report the others")]
DryRunOption = Annotated[bool, typer.Option(
    "--dry-run", help="check and count what would change; change nothing")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the report as JSON")]
NowOption = Annotated[str | None, typer.Option(
    help="the clock, ISO 8601 with offset: stamps undated consents, registrations and "
         "forgettings (testing, replays)")]


def _clock(now: str | None):
    from promo.cli.output import parse_time

    return parse_time(now)


def _consoles():
    from promo.cli.output import console, err

    return console, err


def _progress(message: str) -> None:
    _consoles()[1].print(f"[dim]{escape(message)}[/]", highlight=False)


def _print_report(report, as_json: bool) -> None:
    from promo.cli.output import print_json

    console, err = _consoles()
    if as_json:
        print_json(report.as_dict())
        return
    for line in report.problem_lines():
        err.print(f"[red]skipped[/] {escape(line)}", highlight=False, soft_wrap=True)
    notes = report.note_lines()
    for line in notes[:NOTES_SHOWN]:
        err.print(f"[yellow]note[/] {escape(line)}", highlight=False, soft_wrap=True)
    if len(notes) > NOTES_SHOWN:
        err.print(f"[yellow]note[/] ... and {len(notes) - NOTES_SHOWN} more (--json lists all)")
    delimiter = {"\t": "tab"}.get(report.delimiter, report.delimiter)
    verb = "would be" if report.dry_run else "were"
    console.print(f"{escape(report.file)}: {report.format} format, {report.encoding}, "
                  f"'{delimiter}'-separated, {report.rows} rows", highlight=False,
                  soft_wrap=True)
    lines = [
        ("new contacts", report.new),
        ("stored contacts updated", report.merged),
        ("stored contacts unchanged", report.unchanged),
        ("rows repeating a person earlier in the file", report.duplicates),
        ("consents recorded", report.consents_granted),
        ("consents not applied: the person had opted out", report.opt_outs_kept),
        ("rows of forgotten people, not imported", report.forgotten),
        ("rows with problems, skipped", report.invalid_rows),
    ]
    if report.kind == "registrations":
        lines += [("registrations added", report.registrations_new),
                  ("registrations updated (attendance, date)", report.registrations_updated),
                  ("cancelled registrations, skipped", report.cancelled)]
    for label, n in lines:
        if n or label in ("new contacts", "stored contacts updated"):
            console.print(f"  {label}: {n}")
    if report.dry_run:
        console.print(f"dry run: nothing {verb} changed")


def _run(path: Path, slug: str | None, **kwargs) -> None:
    from audiences.importer import ImportRefused, run_import
    from flows.store import find_event
    from promo.db import session_scope
    from promo.errors import UserError

    as_json = kwargs.pop("as_json")
    kwargs["now"] = _clock(kwargs.pop("now"))
    try:
        with session_scope() as s:
            try:
                event = find_event(s, slug) if slug is not None else None
            except UserError as exc:
                raise UserError(f"{path}: --event {slug}: {exc}") from None
            report = run_import(s, path, event=event, progress=None if as_json else _progress,
                                **kwargs)
    except ImportRefused as refused:
        # one problem per line, never wrapped: `file:line: column: reason` stays greppable
        _, err = _consoles()
        if as_json:
            from promo.cli.output import print_json

            print_json(refused.report.as_dict())
        err.print("[red]error:[/] " + escape(str(refused)), highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    _print_report(report, as_json)


@contacts_app.command("import")
def contacts_import(
    file: Annotated[Path, typer.Argument(help="the CSV file", metavar="FILE.csv")],
    format: FormatOption = None,
    topic: Annotated[list[str] | None, typer.Option(
        "--topic", metavar="T", help="every contact in the file follows this topic")] = None,
    consent: ConsentOption = None,
    skip_invalid: SkipOption = False,
    dry_run: DryRunOption = False,
    encoding: EncodingOption = None,
    as_json: JsonOption = False,
    now: NowOption = None,
) -> None:
    """Import contacts from a CSV file; every problem is reported with its line and column.

    A file with problems changes nothing (unless --skip-invalid).
    """
    _run(file, None, format=format, encoding=encoding, topics=topic or (),
         consent=consent or (), skip_invalid=skip_invalid, dry_run=dry_run, as_json=as_json,
         now=now)


@registrations_app.command("import")
def registrations_import(
    file: Annotated[Path, typer.Argument(help="the CSV file", metavar="FILE.csv")],
    event: Annotated[str, typer.Option("--event", metavar="SLUG",
                                       help="the stored event they registered for")],
    format: FormatOption = None,
    consent: ConsentOption = None,
    skip_invalid: SkipOption = False,
    dry_run: DryRunOption = False,
    encoding: EncodingOption = None,
    as_json: JsonOption = False,
    now: NowOption = None,
) -> None:
    """Import an event's registrations (and attendance, when the export has it).

    Registrants are matched to contacts like an import; unknown people become contacts.
    Registering implies no consent: give --consent if the registration form asked for it.
    """
    _run(file, event, format=format, encoding=encoding, consent=consent or (),
         skip_invalid=skip_invalid, dry_run=dry_run, as_json=as_json, now=now)


@contacts_app.command("show")
def contacts_show(
    who: Annotated[str, typer.Argument(metavar="ID|EMAIL|PHONE",
                                       help="a contact id, email or phone (vk:ID, tg:ID too)")],
    as_json: JsonOption = False,
) -> None:
    """Everything stored about a person: addresses, topics, consents, registrations, messages."""
    from audiences.privacy import show
    from promo.cli.output import print_json
    from promo.db import session_scope

    with session_scope() as s:
        data = show(s, who)
    if as_json:
        print_json(data)
        return
    console, _ = _consoles()
    console.print(f"[bold]contact {data['id']}[/]: {escape(data['name'] or '(no name)')}")
    for key in ("email", "phone", "vk_id", "telegram_chat_id", "language", "timezone",
                "created_at", "updated_at"):
        if data[key] is not None:
            console.print(f"  {key}: {escape(str(data[key]))}", highlight=False)
    if data["opted_out_at"]:
        console.print(f"  [red]opted out of everything[/] at {data['opted_out_at']} "
                      f"({escape(data['opted_out_source'] or '')})")
    console.print(f"  topics: {escape(', '.join(data['topics']) or '-')}")
    table = Table(title="consent per channel")
    for col in ("channel", "can send", "granted", "withdrawn", "unreachable"):
        table.add_column(col)
    for c in data["consents"]:
        table.add_row(
            c["channel"], "yes" if c["can_send"] else f"no: {c['why_not']}",
            f"{c['granted_at'] or '-'} {c['granted_source'] or ''}",
            f"{c['withdrawn_at'] or '-'} {c['withdrawn_source'] or ''}",
            f"{c['unreachable_at'] or '-'} {c['unreachable_reason'] or ''}")
    console.print(table)
    if data["registrations"]:
        table = Table(title="registrations")
        for col in ("event", "registered", "attended", "source"):
            table.add_column(col)
        for r in data["registrations"]:
            attended = {True: "yes", False: "no", None: "-"}[r["attended"]]
            table.add_row(r["event"], r["registered_at"], attended, r["source"] or "")
        console.print(table)
    table = Table(title=f"messages ({len(data['messages'])})")
    for col in ("event", "wave", "channel", "status", "reason", "sent", "delivery"):
        table.add_column(col)
    for m in data["messages"]:
        table.add_row(m["event"], m["wave"], m["channel"], m["status"], m["reason"] or "",
                      m["sent_at"] or "", m["delivery_status"] or "")
    console.print(table)


@contacts_app.command("forget")
def contacts_forget(
    who: Annotated[list[str], typer.Argument(metavar="ID|EMAIL|PHONE...",
                                             help="contact ids, emails or phones")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    now: NowOption = None,
) -> None:
    """Erase people, keeping only an anonymous tombstone of each address.

    A later import of a forgotten address does not bring the person back (unless the file
    dates a new consent after the forgetting).
    """
    from audiences.privacy import forget
    from promo.db import session_scope

    console, _ = _consoles()
    clock = _clock(now)
    if not yes and not typer.confirm(f"Erase {len(who)} contact(s) and all they are "
                                     f"associated with?"):
        raise typer.Exit(1)
    with session_scope() as s:
        done = [(w, forget(s, w, clock)) for w in who]  # all or none
    for w, result in done:
        kinds = ", ".join(result["tombstones"])
        if result["contact_id"] is None:
            console.print(f"{escape(w)}: not stored; tombstoned ({kinds}) so no import adds it")
        else:
            console.print(f"{escape(w)}: contact {result['contact_id']} erased; tombstones: "
                          f"{kinds}")


@contacts_app.command("list")
def contacts_list(
    topic: Annotated[str | None, typer.Option(help="only followers of this topic")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every contact with addresses, topics and the channels that can reach them now."""
    from audiences.privacy import list_contacts
    from promo.db import session_scope

    console, _ = _consoles()
    with session_scope() as s:
        if as_json:
            # streamed: one contact at a time, a JSON array all the same
            out = sys.stdout
            out.write("[")
            for i, c in enumerate(list_contacts(s, topic)):
                out.write(("," if i else "") + "\n  " + json.dumps(c, ensure_ascii=False))
            out.write("\n]\n")
            return
        table = Table()
        for col in ("id", "name", "email", "phone", "vk", "telegram", "topics", "reachable on"):
            table.add_column(col)
        n = 0
        for c in list_contacts(s, topic):
            n += 1
            table.add_row(str(c["id"]), c["name"] or "", c["email"] or "", c["phone"] or "",
                          str(c["vk_id"] or ""), str(c["telegram_chat_id"] or ""),
                          ", ".join(c["topics"]), ", ".join(c["reachable_on"]) or "-")
        console.print(table)
        console.print(f"{n} contacts")
