"""Import, matching: the rows to stored contacts (by email, phone, VK id or Telegram chat
id) and to each other, merging what a row adds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.contacts import (
    ADDRESS_KINDS,
    SOURCE_LENGTH,
    ConsentState,
    address_for,
    granted_after,
)
from audiences.import_report import ROW, ImportReport, Problem
from audiences.import_rows import Row
from audiences.privacy import forgotten_at, tombstone_key
from promo.db.models import Consent, Contact, ContactTopic

_NONE: frozenset[str] = frozenset()

CHUNK = 2000  # rows per IN (...) lookup and per bulk statement


class Person:
    """One contact the file speaks about: a stored one (with what is stored) or a new one."""

    __slots__ = (
        "changed_consents",
        "consents",
        "digest",
        "email",
        "id",
        "language",
        "line",
        "name",
        "new_topics",
        "opted_out_at",
        "phone",
        "registration",
        "stored",
        "stored_channels",
        "telegram_chat_id",
        "timezone",
        "topics",
        "vk_id",
    )

    def __init__(self, line: int, contact_id: int | None = None):
        self.id = contact_id
        self.line = line  # the first row that named a new person
        self.name = self.language = self.timezone = None
        self.email = self.phone = self.vk_id = self.telegram_chat_id = None
        self.digest: bool | None = None  # the monthly digest (None: follows the consent)
        self.opted_out_at: datetime | None = None
        self.stored: tuple | None = None  # the stored field values, to tell what changed
        # containers are made when first needed: a 100,000-row file holds 100,000 of these
        # (lists, not sets: a person has a handful of topics, and a set costs 216 bytes)
        self.topics: list[str] | None = None
        self.new_topics: list[str] | None = None
        self.consents: dict[str, ConsentState] | None = None
        self.stored_channels: frozenset[str] = _NONE  # channels with a stored consent row
        self.changed_consents: list[str] | None = None
        self.registration: list | None = None  # [registered_at, attended, line, came_by]

    FIELDS = ("name", "language", "timezone", "email", "phone", "vk_id", "telegram_chat_id",
              "digest")

    def values(self) -> tuple:
        return tuple(getattr(self, f) for f in self.FIELDS)

    def label(self) -> str:
        return f"contact {self.id}" if self.id is not None else f"line {self.line}"

    def add_topic(self, topic: str) -> None:
        if self.topics is None:
            self.topics = []
        if topic not in self.topics:
            self.topics.append(topic)
            if self.new_topics is None:
                self.new_topics = []
            self.new_topics.append(topic)

    def consent_state(self, channel: str) -> ConsentState | None:
        return self.consents.get(channel) if self.consents is not None else None

    def set_consent(self, channel: str, state: ConsentState, *, changed: bool) -> None:
        if self.consents is None:
            self.consents = {}
        self.consents[channel] = state
        if changed:
            if self.changed_consents is None:
                self.changed_consents = []
            if channel not in self.changed_consents:
                self.changed_consents.append(channel)


def chunks(items: Sequence, size: int = CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


Index = dict[str, dict[object, Person]]  # address kind -> address -> person


def _load_stored(session: Session, rows: list[Row]) -> Index:
    """The stored contacts any row's address names, indexed by address."""
    wanted: dict[str, set] = {k: set() for k in ADDRESS_KINDS}
    for r in rows:
        for k in ADDRESS_KINDS:
            v = getattr(r, k)
            if v is not None:
                wanted[k].add(v)
    people: dict[int, Person] = {}
    cols = (Contact.id, Contact.name, Contact.language, Contact.timezone, Contact.email,
            Contact.phone, Contact.vk_id, Contact.telegram_chat_id, Contact.digest,
            Contact.opted_out_at)
    for k, values in wanted.items():
        for part in chunks(sorted(values)):
            for cid, *fields, opted_out in session.execute(
                    select(*cols).where(getattr(Contact, k).in_(part))):
                if cid in people:
                    continue
                p = Person(0, cid)
                for f, v in zip(Person.FIELDS, fields, strict=True):
                    setattr(p, f, v)
                p.stored = p.values()
                p.opted_out_at = opted_out
                people[cid] = p
    ids = sorted(people)
    for part in chunks(ids):
        for cid, topic in session.execute(select(ContactTopic.contact_id, ContactTopic.topic)
                                          .where(ContactTopic.contact_id.in_(part))):
            person = people[cid]
            if person.topics is None:
                person.topics = []
            person.topics.append(topic)
        for cid, channel, *state in session.execute(
                select(Consent.contact_id, Consent.channel, Consent.granted_at,
                       Consent.granted_source, Consent.withdrawn_at, Consent.withdrawn_source)
                .where(Consent.contact_id.in_(part))):
            people[cid].set_consent(channel, ConsentState(*state), changed=False)
    index: Index = {k: {} for k in ADDRESS_KINDS}
    for p in people.values():
        if p.consents:
            p.stored_channels = frozenset(p.consents)
        for k in ADDRESS_KINDS:
            v = getattr(p, k)
            if v is not None:
                index[k][v] = p
    return index


@dataclass
class ImportOptions:
    topics: tuple[str, ...] = ()
    consent: tuple[str, ...] = ()
    skip_invalid: bool = False
    dry_run: bool = False


def _source(path: Path, line: int | None = None, how: str = "import") -> str:
    where = f"{path.name}:{line}" if line is not None else path.name
    return f"{how} {where}"[:SOURCE_LENGTH]


def match_rows(session: Session, path: Path, rows: list[Row], report: ImportReport,
           opts: ImportOptions, now: datetime) -> list[Person]:
    """Resolve every row to a person (stored, or new in this file) and merge it in."""
    index = _load_stored(session, rows)
    tombs = {}
    if tombstone_key(session, create=False) is not None:  # anyone forgotten here at all?
        tombs = forgotten_at(session, [(k, getattr(r, k)) for r in rows for k in ADDRESS_KINDS
                                       if getattr(r, k) is not None])
    people: list[Person] = []
    seen: set[int] = set()  # ids of Person objects already in `people`
    for r in rows:
        found: dict[int, tuple[Person, str]] = {}
        for k in ADDRESS_KINDS:
            v = getattr(r, k)
            if v is not None:
                p = index[k].get(v)
                if p is not None:
                    found.setdefault(id(p), (p, k))
        if len(found) > 1:
            said = "; ".join(f"{k} matches {p.label()}" for p, k in found.values())
            report.problems.append(Problem(
                r.line, ROW, f"two different people: {said} (fix the row, or forget one of "
                             f"them first)"))
            continue
        if found:
            (person, _), = found.values()
            if id(person) in seen:
                report.duplicates += 1
        else:
            dated = r.registered_at if report.kind == "registrations" else r.consent_at
            hit = [(k, tombs[(k, getattr(r, k))]) for k in ADDRESS_KINDS
                   if (k, getattr(r, k)) in tombs]
            if hit and (dated is None or dated <= max(at for _, at in hit)):
                report.forgotten += 1
                kinds = ", ".join(k for k, _ in hit)
                report.notes.append(Problem(
                    r.line, ROW, f"not imported: the person with this {kinds} asked to be "
                                 f"forgotten on {max(at for _, at in hit):%Y-%m-%d}"))
                continue
            person = Person(r.line)
        if id(person) not in seen:
            seen.add(id(person))
            people.append(person)
        _merge(person, r, index, report)
        _grant(person, r, path, opts, report, now)
        if report.kind == "registrations":
            at = r.registered_at or now
            if person.registration is None:
                person.registration = [at, r.attended, r.line, r.came_by]
            else:
                reg = person.registration
                reg[0] = min(reg[0], at)
                if r.attended is not None:
                    reg[1] = r.attended or bool(reg[1])
                reg[3] = reg[3] or r.came_by
    return people


def _merge(person: Person, r: Row, index: Index, report: ImportReport) -> None:
    """Fill in what the person lacks; a stored address is never replaced by an import."""
    for f in Person.FIELDS:
        v = getattr(r, f)
        if v is None:
            continue
        current = getattr(person, f)
        if f == "digest":  # a yes or no the file gives is the person's word now
            person.digest = v
        elif current is None:
            setattr(person, f, v)
            if f in ADDRESS_KINDS:
                index[f][v] = person
        elif current != v and f in ADDRESS_KINDS:
            report.notes.append(Problem(
                r.line, f, f"{v} differs from {current} of {person.label()}; kept {current}"))
    for t in r.topics:
        person.add_topic(t)


def _grant(person: Person, r: Row, path: Path, opts: ImportOptions, report: ImportReport,
           now: datetime) -> None:
    wanted = [(c, _source(path, r.line)) for c in r.consents]
    wanted += [(c, _source(path, how="import (--consent)")) for c in opts.consent
               if getattr(person, address_for(c)) is not None and c not in r.consents]
    for topic in opts.topics:
        person.add_topic(topic)
    for channel, source in wanted:
        state = person.consent_state(channel)
        at = r.consent_at or now
        new = granted_after(state, person.opted_out_at, at, undated=r.consent_at is None)
        if new is None:
            # not granted: because an opt-out (on the channel, or everywhere) is in force?
            granted = state.granted_at if state else None
            if any(t is not None and (granted is None or t >= granted)
                   for t in (state.withdrawn_at if state else None, person.opted_out_at)):
                report.opt_outs_kept += 1
            continue
        person.set_consent(channel, replace(state or ConsentState(), granted_at=new,
                                            granted_source=source), changed=True)


