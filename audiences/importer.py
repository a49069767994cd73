"""CSV imports of contacts and registrations: read whatever the organizer's export is, check
every row, report every problem at once, and change nothing unless asked to skip bad rows.

The steps, in one transaction:
1. read: the encoding (UTF-8 with or without BOM, UTF-16 with BOM, cp1251), the delimiter
   (`,` `;` tab, or Excel's `sep=` line) and the column layout (generic, timepad, meetup);
2. check every row, collecting problems as (line, column, reason);
3. match the rows to stored contacts by email, phone, VK id or Telegram chat id, and to each
   other (one person twice in a file is one contact);
4. unless there were problems (and no `skip_invalid`) or it is a dry run: write everything in
   bulk statements.

One module per stage: `import_layouts` (the column layouts), `import_read` (1), `import_rows`
(2), `import_match` (3), `import_write` (4), `import_report` (problems and the report); this
one runs them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audiences.contacts import (
    AddressError,
    check_channel,
    check_topic,
)
from audiences.import_match import ImportOptions, match_rows
from audiences.import_read import PROGRESS_FROM, read_rows
from audiences.import_report import ImportRefused, ImportReport, Problem
from audiences.import_write import write_people, write_registrations
from promo.db.models import Event
from promo.errors import UserError
from promo.settings import get_settings

# what callers use; the stages live in audiences/import_*.py
__all__ = ["ImportRefused", "ImportReport", "Problem", "run_import"]


def _check_options(topics: Iterable[str], consent: Iterable[str]) -> tuple[tuple, tuple]:
    try:
        checked_topics = tuple(dict.fromkeys(check_topic(t) for t in topics))
    except AddressError as exc:
        raise UserError(f"--topic: {exc}") from None
    channels: list[str] = []
    for value in consent:
        for part in re.split(r"[,|\s]+", value):
            if part:
                try:
                    channels.append(check_channel(part))
                except AddressError as exc:
                    raise UserError(f"--consent: {exc}") from None
    return checked_topics, tuple(dict.fromkeys(channels))


def run_import(session: Session, path: Path, *, event: Event | None = None,
               format: str | None = None, encoding: str | None = None,
               topics: Iterable[str] = (), consent: Iterable[str] = (),
               skip_invalid: bool = False, dry_run: bool = False, now: datetime | None = None,
               progress: Callable[[str], None] | None = None) -> ImportReport:
    """Import contacts (or, with `event`, the event's registrations) from a CSV file.

    Raises ImportRefused, changing nothing, when a row has a problem and `skip_invalid` is
    false. A dry run checks and matches everything and writes nothing.
    """
    now = now or datetime.now(UTC)
    checked_topics, channels = _check_options(topics, consent)
    opts = ImportOptions(checked_topics, channels, skip_invalid, dry_run)
    report = ImportReport(str(path), "registrations" if event is not None else "contacts",
                          dry_run=dry_run)
    local_tz = ZoneInfo(event.timezone if event is not None else get_settings().default_timezone)
    rows = read_rows(path, layout_name=format, encoding=encoding,
                     registrations=event is not None, now=now, local_tz=local_tz,
                     report=report, progress=progress)
    if event is not None:
        kept = [r for r in rows if not r.cancelled]
        report.cancelled = len(rows) - len(kept)
        rows = kept
    if progress and report.rows < PROGRESS_FROM:
        progress = None
    if progress:
        progress(f"matching {len(rows):,} rows with the store")
    people = match_rows(session, path, rows, report, opts, now)
    del rows  # the people hold what is needed from them
    report.problems.sort(key=lambda p: p.line)
    report.notes.sort(key=lambda p: p.line)
    if report.problems and not skip_invalid:
        raise ImportRefused(report)
    for p in people:
        if p.id is None:
            report.new += 1
        elif p.values() != p.stored or p.new_topics or p.changed_consents:
            report.merged += 1
        else:
            report.unchanged += 1
        report.consents_granted += len(p.changed_consents or ())
    if dry_run:
        if event is not None:
            write_registrations(session, people, event, path, report.format, report, write=False)
        return report
    try:
        write_people(session, people, event, path, report.format, now, report, progress)
    except IntegrityError:
        raise UserError(f"{path}: the store changed while importing (another import at the "
                        f"same time?); nothing was imported: run it again") from None
    report.applied = True
    return report
