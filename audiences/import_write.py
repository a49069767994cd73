"""Import, writing: contacts, consents, topics and registrations in bulk statements."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from audiences.contacts import (
    ADDRESS_KINDS,
    SOURCE_LENGTH,
)
from audiences.import_layouts import ATTRIBUTION
from audiences.import_match import Person, chunks
from audiences.import_report import ImportReport
from promo.db.models import Consent, Contact, ContactTopic, Event, Registration


def write_people(session: Session, people: list[Person], event: Event | None, path: Path,
           layout: str, now: datetime, report: ImportReport,
           progress: Callable[[str], None] | None) -> None:
    new = [p for p in people if p.id is None]
    if progress and new:
        progress(f"writing {len(new):,} new contacts")
    contacts = Contact.__table__
    for part in chunks(new):
        # plain executemany, then the ids read back by address: INSERT ... RETURNING in
        # parameter order makes SQLAlchemy run one statement per row on SQLite
        session.execute(insert(contacts), [
            {**dict(zip(Person.FIELDS, p.values(), strict=True)), "created_at": now,
             "updated_at": now} for p in part])
        by_kind: dict[str, dict[object, Person]] = {}
        for p in part:
            kind = next(k for k in ADDRESS_KINDS if getattr(p, k) is not None)
            by_kind.setdefault(kind, {})[getattr(p, kind)] = p
        for kind, wanted in by_kind.items():
            column = contacts.c[kind]
            for cid, value in session.execute(
                    select(contacts.c.id, column).where(column.in_(list(wanted)))):
                wanted[value].id = cid
    changed = [p for p in people if p.stored is not None and p.values() != p.stored]
    for part in chunks(changed):
        session.execute(update(Contact), [
            {"id": p.id, **dict(zip(Person.FIELDS, p.values(), strict=True)), "updated_at": now}
            for p in part])
    topics = [{"contact_id": p.id, "topic": t} for p in people for t in p.new_topics or ()]
    for part in chunks(topics):
        session.execute(insert(ContactTopic.__table__), part)
    fresh, stale = [], []
    for p in people:
        for channel in sorted(p.changed_consents or ()):
            s = p.consents[channel]
            row = {"contact_id": p.id, "channel": channel, "granted_at": s.granted_at,
                   "granted_source": s.granted_source}
            (stale if channel in p.stored_channels else fresh).append(row)
    for part in chunks(fresh):
        session.execute(insert(Consent.__table__), part)
    for part in chunks(stale):
        session.execute(update(Consent), part)
    if event is not None:
        write_registrations(session, people, event, path, layout, report, write=True)
    session.flush()


def write_registrations(session: Session, people: list[Person], event: Event, path: Path,
                   layout: str, report: ImportReport, *, write: bool) -> None:
    """Count (and with `write`, store) the new registrations and the changed ones."""
    if not write:  # a dry run: new people have no id yet, and all their registrations are new
        report.registrations_new = sum(1 for p in people
                                       if p.id is None and p.registration is not None)
        people = [p for p in people if p.id is not None]
    regs = {p.id: p.registration for p in people if p.registration is not None}
    stored: dict[int, tuple[int, datetime, bool | None, bool]] = {}
    for part in chunks(sorted(regs)):
        for rid, cid, at, attended, source_, link in session.execute(
                select(Registration.id, Registration.contact_id, Registration.registered_at,
                       Registration.attended, Registration.utm_source, Registration.short_link)
                .where(Registration.event_id == event.id, Registration.contact_id.in_(part))):
            stored[cid] = (rid, at, attended, source_ is not None or link is not None)
    fresh, changed = [], []
    source = f"import {path.name} ({layout})"[:SOURCE_LENGTH]
    blank = (None,) * len(ATTRIBUTION)
    for cid, (at, attended, _line, came_by) in regs.items():
        if cid not in stored:
            fresh.append({"event_id": event.id, "contact_id": cid, "registered_at": at,
                          "attended": attended, "source": source,
                          **dict(zip(ATTRIBUTION, came_by or blank, strict=True))})
            continue
        rid, stored_at, stored_attended, attributed = stored[cid]
        values = {}
        if at < stored_at:
            values["registered_at"] = at
        if attended is not None and attended != stored_attended:
            values["attended"] = attended
        if came_by and not attributed:  # a later export that carries the tags fills them in
            values.update(zip(ATTRIBUTION, came_by, strict=True))
        if values:
            changed.append({"id": rid, **values})
    report.registrations_new += len(fresh)
    report.registrations_updated = len(changed)
    if not write:
        return
    for part in chunks(fresh):
        session.execute(insert(Registration), part)
    for row in changed:  # attendance marks after an event: few, and of different shapes
        session.execute(update(Registration).where(Registration.id == row.pop("id"))
                        .values(**row))


