"""Check-in lists: who came to an event.

Every row of a check-in list is someone who came. The rows are read, checked and matched to
contacts exactly as a registration import reads them (`audiences.importer`: the same
layouts, encodings, file:line errors and matching by email, phone, VK id or Telegram chat
id); then, in one transaction:

- a registrant on the list is marked as having come;
- someone on the list who had not registered is a walk-in: a registration marked `walk_in`
  (and, if the person is unknown, a new contact), "registered" at the event's start;
- a registrant not on the list is marked as not having come, once a list is imported:
  attendance is then known. A second list (another door) marks its people as come.

A file with a problem changes nothing; a dry run checks and counts and writes nothing.
Importing the same list again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audiences.import_match import ImportOptions, Person, chunks, match_rows
from audiences.import_read import read_rows
from audiences.import_report import ImportReport
from audiences.import_write import write_people
from promo.db.models import Event, Registration
from promo.errors import UserError

# a check-in list is made at the door: one for an event further off than this is a mistake
CHECK_IN_OPENS = timedelta(hours=12)


@dataclass
class AttendanceReport:
    """What a check-in import found and did (or, on a dry run, would do)."""

    file: str
    event: str
    rows: int = 0
    came: int = 0  # distinct people on the list
    registrants_marked: int = 0  # registrants marked as come by this import
    registrants_already_marked: int = 0
    walk_ins: int = 0  # people on the list without a registration: recorded as walk-ins
    walk_ins_already: int = 0  # walk-ins an earlier list already recorded
    new_contacts: int = 0  # walk-ins nobody knew: new contacts
    no_shows_marked: int = 0  # registrants not on any list: marked as not come
    duplicates: int = 0  # rows repeating a person earlier in the file
    forgotten: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False
    applied: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class AttendanceRefused(UserError):
    """The file has problems; nothing was imported."""

    def __init__(self, report: AttendanceReport):
        self.report = report
        n = len(report.problems)
        super().__init__(
            f"{report.file}: {n} problem{'s' if n != 1 else ''}; nothing was imported (a "
            f"check-in list is imported whole: fix the rows and run it again)\n"
            + "\n".join("  " + p for p in report.problems))


def import_check_in(session: Session, path: Path, event: Event, *, now: datetime,
                    format: str | None = None, encoding: str | None = None,
                    dry_run: bool = False) -> AttendanceReport:
    """Record who came to `event` from a check-in list (see the module's docstring)."""
    if now < event.starts_at - CHECK_IN_OPENS:
        zone = ZoneInfo(event.timezone)
        raise UserError(
            f"{event.slug}: starts {event.starts_at.astimezone(zone):%Y-%m-%d %H:%M %Z}; a "
            f"check-in list is taken at the door (from {CHECK_IN_OPENS.seconds // 3600} hours "
            f"before). Is --event right?")
    inner = ImportReport(str(path), "attendance", dry_run=dry_run)
    rows = read_rows(path, layout_name=format, encoding=encoding, registrations=True, now=now,
                     local_tz=ZoneInfo(event.timezone), report=inner)
    people = match_rows(session, path, rows, inner, ImportOptions(dry_run=dry_run), now)
    report = AttendanceReport(str(path), event.slug, rows=inner.rows, dry_run=dry_run,
                              duplicates=inner.duplicates, forgotten=inner.forgotten,
                              problems=[p.format(str(path)) for p in
                                        sorted(inner.problems, key=lambda p: p.line)],
                              notes=[p.format(str(path)) for p in
                                     sorted(inner.notes, key=lambda p: p.line)])
    if report.problems:
        raise AttendanceRefused(report)
    report.came = len(people)
    known = [p.id for p in people if p.id is not None]
    stored: dict[int, tuple[int, bool | None, bool]] = {}
    for part in chunks(sorted(known)):
        for rid, cid, attended, walk_in in session.execute(
                select(Registration.id, Registration.contact_id, Registration.attended,
                       Registration.walk_in)
                .where(Registration.event_id == event.id, Registration.contact_id.in_(part))):
            stored[cid] = (rid, attended, walk_in)
    mark: list[int] = []
    walk_ins: list[Person] = []
    for p in people:
        reg = stored.get(p.id) if p.id is not None else None
        if reg is None:
            walk_ins.append(p)
        elif reg[2]:
            report.walk_ins_already += 1
        elif reg[1] is True:
            report.registrants_already_marked += 1
        else:
            mark.append(reg[0])
    report.registrants_marked = len(mark)
    report.walk_ins = len(walk_ins)
    report.new_contacts = sum(1 for p in people if p.id is None)
    on_list = set(known)
    report.no_shows_marked = sum(
        1 for cid in session.scalars(select(Registration.contact_id).where(
            Registration.event_id == event.id, Registration.attended.is_(None)))
        if cid not in on_list)
    if dry_run:
        return report
    try:
        # new contacts and whatever the list adds to known ones (no registration: done here)
        write_people(session, people, None, path, inner.format, now, inner, None)
        for part in chunks(mark):
            session.execute(update(Registration).where(Registration.id.in_(part))
                            .values(attended=True))
        source = f"check-in {path.name}"[:200]
        for part in chunks(walk_ins):
            session.execute(insert(Registration), [
                {"event_id": event.id, "contact_id": p.id, "registered_at": event.starts_at,
                 "attended": True, "walk_in": True, "source": source} for p in part])
        # attendance is known now: whoever registered and is on no list did not come
        session.execute(update(Registration).where(
            Registration.event_id == event.id, Registration.attended.is_(None))
            .values(attended=False))
        session.flush()
    except IntegrityError:
        raise UserError(f"{path}: the store changed while importing (another import at the "
                        f"same time?); nothing was imported: run it again") from None
    report.applied = True
    return report
