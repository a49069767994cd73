"""Import, checking: every row of the file checked into a `Row` or problems (stage 2; the file
itself is read in `import_read`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from audiences.contacts import (
    ADDRESS_KINDS,
    MAX_NAME,
    AddressError,
    address_for,
    check_channel,
    check_timezone,
    check_topic,
    normalize_email,
    normalize_language,
    normalize_phone,
    normalize_telegram_chat_id,
    normalize_vk_id,
)
from audiences.import_layouts import ATTRIBUTION, Layout
from audiences.import_report import ROW, Problem

# the words of yes/no, cancelled and attended columns, and how a header cell is compared
_YES = {"да", "yes", "y", "true", "1", "+", "x", "✓", "✔", "посетил", "посетила", "пришел",
        "пришла", "был", "была", "attended", "present", "checked in", "showed up"}
_NO = {"нет", "no", "n", "false", "0", "не посетил", "не посетила", "не пришел", "не пришла",
       "не был", "не была", "no show", "no-show", "noshow", "absent"}
_UNKNOWN = {"", "-", "—", "n/a", "?"}
# registration statuses (Timepad order states, Meetup RSVP answers) that mean "not coming"
_CANCELLED = ("отмен", "возврат", "удален", "просрочен", "cancel", "refund", "declin")
_NOT_REGISTERED = {"no", "нет", "waitlist", "waiting list", "лист ожидания"}
_ATTENDED_STATUS = ("посетил", "пришел", "attended", "checked in")


def _header_key(text: str) -> str:
    return " ".join(text.replace("\ufeff", "").strip().strip("*").strip().lower()
                    .replace("ё", "е").split())


# -- one row -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """A checked row, its values normalized."""

    line: int
    name: str | None = None
    language: str | None = None
    timezone: str | None = None
    email: str | None = None
    phone: str | None = None
    vk_id: int | None = None
    telegram_chat_id: int | None = None
    topics: tuple[str, ...] = ()
    consents: tuple[str, ...] = ()
    consent_at: datetime | None = None
    registered_at: datetime | None = None
    attended: bool | None = None
    digest: bool | None = None
    cancelled: bool = False
    came_by: tuple[str | None, ...] | None = None  # the ATTRIBUTION values, when any is given


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class RowReader:
    """Checks rows of one file against one layout; every problem is collected."""

    def __init__(self, layout: Layout, header: list[str], *, region: str, local_tz: ZoneInfo,
                 now: datetime, registrations: bool):
        self.layout = layout
        self.header = header
        self.region = region
        self.local_tz = local_tz
        self.now = now
        self.registrations = registrations
        self.index: dict[str, int] = {}  # field -> column position
        self.notes: list[Problem] = []
        names = {n: f for f, ns in layout.columns.items() for n in ns}
        seen: set[str] = set()
        for i, raw in enumerate(header):
            key = _header_key(raw)
            if not key:
                continue
            f = names.get(key)
            if key in seen:
                self.notes.append(Problem(1, raw, "the column appears twice; the first is used"))
            seen.add(key)
            if f is None:
                if layout.warn_unknown:
                    self.notes.append(Problem(1, raw, "not a column of the generic format "
                                                      "(ignored)"))
            elif f not in self.index:
                self.index[f] = i

    def column(self, f: str) -> str:
        return self.header[self.index[f]].strip().lstrip("\ufeff") or f

    def missing_addresses(self) -> bool:
        return not any(f in self.index for f in ADDRESS_KINDS)

    def _cell(self, cells: list[str], f: str) -> str | None:
        i = self.index.get(f)
        if i is None or i >= len(cells):
            return None
        value = cells[i].strip()
        return value or None

    def _date(self, text: str) -> datetime:
        value = text.strip()
        parsed: datetime | None = None
        try:
            parsed = datetime.fromisoformat(value.replace(" ", "T", 1) if " " in value
                                            and value[:4].isdigit() else value)
        except ValueError:
            for fmt in self.layout.date_formats:
                try:
                    parsed = datetime.strptime(value, fmt)
                    break
                except ValueError:
                    continue
        if parsed is None:
            raise AddressError(f"{text!r} is not a date (like 2026-11-26 18:30 or "
                               f"26.11.2026 18:30)")
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.local_tz)
        parsed = parsed.astimezone(UTC)
        if parsed > self.now + timedelta(days=1):
            raise AddressError(f"{text!r} is in the future")
        return parsed

    def read(self, line: int, cells: list[str]) -> tuple[Row | None, list[Problem]]:
        problems: list[Problem] = []
        width = len(self.header)
        if len(cells) > width:
            problems.append(Problem(line, ROW, f"{len(cells)} fields, the header has {width} "
                                               f"(an unquoted delimiter in a value?)"))
            return None, problems
        if len(cells) < width:
            problems.append(Problem(line, ROW, f"{len(cells)} fields, the header has {width} "
                                               f"(a line broken inside a value?)"))
            return None, problems
        row = Row(line)

        def bad(f: str, reason: str) -> None:
            problems.append(Problem(line, self.column(f), reason))

        for i, cell in enumerate(cells[:width]):
            if _CONTROL.search(cell):
                problems.append(Problem(line, self.header[i].strip() or ROW,
                                        "contains control characters (a binary file?)"))
                return None, problems

        name = self._cell(cells, "name")
        if name is None and ("first_name" in self.index or "last_name" in self.index):
            parts = [self._cell(cells, "first_name"), self._cell(cells, "last_name")]
            name = " ".join(p for p in parts if p) or None
        if name is not None:
            name = " ".join(name.split())
            if len(name) > MAX_NAME:
                bad("name" if "name" in self.index else "first_name",
                    f"{len(name)} characters; a name is at most {MAX_NAME}")
            row.name = name

        checks: tuple[tuple[str, Callable[[str], object]], ...] = (
            ("email", normalize_email),
            ("phone", lambda v: normalize_phone(v, self.region)),
            ("vk_id", normalize_vk_id),
            ("telegram_chat_id", normalize_telegram_chat_id),
            ("language", normalize_language),
            ("timezone", check_timezone),
        )
        for f, check in checks:
            value = self._cell(cells, f)
            if value is not None:
                try:
                    setattr(row, f, check(value))
                except AddressError as exc:
                    bad(f, str(exc))

        topics = self._cell(cells, "topics")
        if topics is not None:
            out = []
            for part in topics.split("|"):
                if part.strip():
                    try:
                        out.append(check_topic(part))
                    except AddressError as exc:
                        bad("topics", str(exc))
            row.topics = tuple(dict.fromkeys(out))

        consents: list[str] = []
        consent = self._cell(cells, "consent")
        if consent is not None:
            for part in consent.split("|"):
                if part.strip():
                    try:
                        consents.append(check_channel(part))
                    except AddressError as exc:
                        bad("consent", str(exc))
        yes_no = self._cell(cells, "email_consent")
        if yes_no is not None:
            mark = _yes_no(yes_no)
            if mark is _INVALID:
                bad("email_consent", f"{yes_no!r} is not yes or no (да/нет)")
            elif mark:
                consents.append("email")
        for channel in dict.fromkeys(consents):
            if getattr(row, address_for(channel)) is None and not any(
                    p.column == self.column(address_for(channel)) for p in problems
                    if address_for(channel) in self.index):
                source_col = "consent" if "consent" in self.index else "email_consent"
                bad(source_col, f"consent to {channel}, but the row has no "
                                f"{address_for(channel)}")
        row.consents = tuple(dict.fromkeys(consents))

        for f in ("consent_at", "registered_at"):
            value = self._cell(cells, f)
            if value is not None:
                try:
                    setattr(row, f, self._date(value))
                except AddressError as exc:
                    bad(f, str(exc))

        attended = self._cell(cells, "attended")
        if attended is not None:
            mark = _yes_no(attended)
            if mark is _INVALID:
                bad("attended", f"{attended!r} is not an attendance mark (yes/no, да/нет)")
            else:
                row.attended = mark
        digest = self._cell(cells, "digest")
        if digest is not None:
            mark = _yes_no(digest)
            if mark is _INVALID:
                bad("digest", f"{digest!r} is not yes or no (да/нет)")
            else:
                row.digest = mark
        if self.registrations:
            came_by = tuple(self._cell(cells, f) for f in ATTRIBUTION)
            for f, value in zip(ATTRIBUTION, came_by, strict=True):
                limit = 300 if f == "short_link" else 200
                if value is not None and len(value) > limit:
                    bad(f, f"{len(value)} characters; at most {limit}")
            if any(came_by):
                row.came_by = came_by
        status = self._cell(cells, "status")
        if status is not None:
            s = " ".join(status.lower().replace("ё", "е").split())
            if any(word in s for word in _CANCELLED) or s in _NOT_REGISTERED:
                row.cancelled = True
            elif row.attended is None and any(word in s for word in _ATTENDED_STATUS):
                row.attended = not s.startswith("не ")

        if not any(getattr(row, f) is not None for f in ADDRESS_KINDS) and not any(
                p.column in {self.column(f) for f in ADDRESS_KINDS if f in self.index}
                for p in problems):
            present = ", ".join(self.column(f) for f in ADDRESS_KINDS if f in self.index)
            problems.append(Problem(line, ROW, f"no address: give at least one of {present}"))
        return (None if problems else row), problems


_INVALID = object()


def _yes_no(text: str) -> object:
    s = " ".join(text.strip().lower().replace("ё", "е").split())
    if s in _YES:
        return True
    if s in _NO:
        return False
    if s in _UNKNOWN:
        return None
    return _INVALID
