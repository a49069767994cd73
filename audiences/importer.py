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
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audiences.contacts import (
    ADDRESS_KINDS,
    MAX_NAME,
    SOURCE_LENGTH,
    AddressError,
    ConsentState,
    address_for,
    check_channel,
    check_timezone,
    check_topic,
    granted_after,
    normalize_email,
    normalize_language,
    normalize_phone,
    normalize_telegram_chat_id,
    normalize_vk_id,
)
from audiences.privacy import forgotten_at, tombstone_key
from promo.db.models import Consent, Contact, ContactTopic, Event, Registration
from promo.errors import UserError
from promo.settings import get_settings

CHUNK = 2000  # rows per IN (...) lookup and per bulk statement
PROGRESS_FROM = 20_000  # rows: smaller files import too fast to need progress lines
ROW = "row"  # the column named in problems that concern a whole row


# -- layouts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """How one kind of export names its columns: our field -> the header names it may carry
    (compared lower-cased, with ё read as е and runs of spaces as one)."""

    name: str
    columns: dict[str, tuple[str, ...]]
    date_formats: tuple[str, ...] = ()
    # a generic file's unknown column is likely a typo; an export's are just other data
    warn_unknown: bool = False


_DAY_FIRST = ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y", "%Y-%m-%d %H:%M:%S",
              "%Y-%m-%d %H:%M", "%Y-%m-%d")

GENERIC = Layout(
    "generic",
    {
        "name": ("name",),
        "email": ("email",),
        "phone": ("phone",),
        "vk_id": ("vk_id",),
        "telegram_chat_id": ("telegram_chat_id",),
        "language": ("language",),
        "timezone": ("timezone",),
        "topics": ("topics",),
        "consent": ("consent",),
        "consent_at": ("consent_at",),
        "registered_at": ("registered_at",),
        "attended": ("attended",),
        "status": ("status",),
    },
    _DAY_FIRST,
    warn_unknown=True,
)

TIMEPAD = Layout(
    "timepad",
    {
        "last_name": ("фамилия",),
        "first_name": ("имя",),
        "name": ("фио", "имя и фамилия", "участник"),
        "email": ("e-mail", "email", "электронная почта", "почта"),
        "phone": ("телефон", "мобильный телефон", "номер телефона"),
        "registered_at": ("дата регистрации", "дата и время регистрации", "дата заказа",
                          "дата создания заказа"),
        "status": ("статус", "статус заказа", "статус билета"),
        "attended": ("посетил", "посетил мероприятие", "пришел", "отметка о посещении", "явка"),
        "email_consent": ("согласие на рассылку", "подписка на рассылку",
                          "согласен получать рассылку", "согласие на получение рассылки"),
    },
    _DAY_FIRST,
)

MEETUP = Layout(
    "meetup",
    {
        "name": ("name",),
        "email": ("email", "email address"),
        "phone": ("phone", "phone number", "mobile phone"),
        "registered_at": ("rsvped on", "rsvp date"),
        "status": ("rsvp", "rsvp response"),
        "attended": ("attendance", "attended"),
    },
    ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M",
     "%m/%d/%Y", "%b %d, %Y %I:%M %p", "%B %d, %Y %I:%M %p", "%b %d, %Y", "%B %d, %Y"),
)

# how a registration came (kept raw; the report attributes it): UTM tags and the short link,
# where the registration platform passes them on, under the same names in every layout
ATTRIBUTION = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "short_link")
for _layout in (GENERIC, TIMEPAD, MEETUP):
    _layout.columns.update({f: (f, f.replace("_", " "), f.replace("_", "-")) for f in ATTRIBUTION})

LAYOUTS = {layout.name: layout for layout in (GENERIC, TIMEPAD, MEETUP)}

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


# -- problems and the report -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    column: str
    reason: str

    def format(self, file: str) -> str:
        return f"{file}:{self.line}: {self.column}: {self.reason}"


@dataclass
class ImportReport:
    """What an import found and did (or, on a dry run, would do)."""

    file: str
    kind: str  # contacts | registrations
    format: str = ""
    encoding: str = ""
    delimiter: str = ""
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)  # not errors: kept values, forgotten rows
    new: int = 0  # contacts created
    merged: int = 0  # stored contacts that got something new
    unchanged: int = 0  # stored contacts the file had nothing new for
    duplicates: int = 0  # rows that were the same person as an earlier row of the file
    forgotten: int = 0  # rows skipped: a forgotten person's address
    opt_outs_kept: int = 0  # consents in the file not applied: the person had opted out
    consents_granted: int = 0
    cancelled: int = 0  # registration rows that say the person is not coming
    registrations_new: int = 0
    registrations_updated: int = 0
    dry_run: bool = False
    applied: bool = False

    @property
    def invalid_rows(self) -> int:
        return len({p.line for p in self.problems})

    def problem_lines(self) -> list[str]:
        return [p.format(self.file) for p in self.problems]

    def note_lines(self) -> list[str]:
        return [p.format(self.file) for p in self.notes]

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("problems", "notes")}
        out["problems"] = self.problem_lines()
        out["notes"] = self.note_lines()
        return out


class ImportRefused(UserError):
    """The file has problems and nothing was changed."""

    def __init__(self, report: ImportReport):
        self.report = report
        n = len(report.problems)
        valid = report.rows - report.invalid_rows
        head = (f"{report.file}: {n} problem{'s' if n != 1 else ''} in "
                f"{report.invalid_rows} of {report.rows} rows; nothing was imported "
                f"(fix them, or --skip-invalid to import the {valid} valid rows)")
        super().__init__(head + "\n" + "\n".join("  " + line for line in report.problem_lines()))


# -- reading the file --------------------------------------------------------------------------


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def decode(path: Path, data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """The text and the encoding it was read in: the given one, a BOM's, UTF-8, else cp1251."""
    def attempt(enc: str, body: bytes, skipped: int) -> str:
        try:
            return body.decode(enc)
        except UnicodeDecodeError as exc:
            line = _line_of(data, skipped + exc.start) if "16" not in enc else "?"
            raise UserError(f"{path}:{line}: the file is not valid {enc} "
                            f"(byte {body[exc.start:exc.start + 1]!r}); save it as UTF-8 or "
                            f"give --encoding") from None
        except LookupError:
            raise UserError(f"--encoding {enc!r}: not an encoding Python knows") from None

    if encoding:
        return attempt(encoding, data, 0).lstrip("\ufeff"), encoding
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                     (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            body = data if enc == "utf-16" else data[len(bom):]
            return attempt(enc if enc == "utf-16" else "utf-8", body, len(bom)), enc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        # Russian Excel and 1C save CSV in Windows-1251
        return attempt("cp1251", data, 0), "cp1251"


_SEP_LINE = re.compile(r"^sep=(.)\s*$")


def sniff_delimiter(header: str) -> str:
    """The delimiter that splits the header line into the most columns (`,` on a tie)."""
    best, best_n = ",", 1
    for candidate in (",", ";", "\t"):
        n = len(next(csv.reader([header], delimiter=candidate), []))
        if n > best_n:
            best, best_n = candidate, n
    return best


def choose_layout(keys: Sequence[str]) -> Layout:
    """The layout whose column names the header matches best (generic on a tie)."""
    def score(layout: Layout) -> int:
        names = {n for names in layout.columns.values() for n in names}
        return sum(1 for k in keys if k in names)

    return max(LAYOUTS.values(), key=score)


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


def read_rows(path: Path, *, layout_name: str | None, encoding: str | None, registrations: bool,
              now: datetime, local_tz: ZoneInfo, report: ImportReport,
              progress: Callable[[str], None] | None = None) -> list[Row]:
    """The file's valid rows; its problems and notes go to the report."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    text, report.encoding = decode(path, data, encoding)
    del data
    stream = io.StringIO(text, newline="")
    del text
    # the header is the first line that is not blank (after Excel's "sep=;" line, if any)
    first_line, delimiter = 0, None
    while True:
        header_text = stream.readline()
        if not header_text:
            raise UserError(f"{path}: the file is empty")
        first_line += 1
        if not header_text.strip():
            continue
        sep = _SEP_LINE.match(header_text.strip())
        if sep and delimiter is None:
            delimiter = sep.group(1)
            continue
        break
    delimiter = delimiter or sniff_delimiter(header_text)
    stream.seek(0)
    for _ in range(first_line - 1):
        stream.readline()
    report.delimiter = delimiter
    reader = csv.reader(stream, delimiter=delimiter, quotechar='"', doublequote=True,
                        strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise UserError(f"{path}:{first_line}: the header line cannot be read: {exc}") from None
    keys = [_header_key(h) for h in header]
    if layout_name is None:
        layout = choose_layout(keys)
    else:
        layout = LAYOUTS.get(layout_name)
        if layout is None:
            raise UserError(f"--format {layout_name!r}: one of {', '.join(LAYOUTS)}")
    report.format = layout.name
    settings = get_settings()
    rows_reader = RowReader(layout, header, region=settings.default_region, local_tz=local_tz,
                            now=now, registrations=registrations)
    # header notes carry line 1 of the data; shift them to the header's real line
    report.notes += [replace(n, line=first_line) for n in rows_reader.notes]
    if rows_reader.missing_addresses():
        wanted = sorted({n for f in ADDRESS_KINDS for n in layout.columns.get(f, ())})
        raise UserError(
            f"{path}:{first_line}: no address column for the {layout.name} format: expected "
            f"one of {', '.join(wanted)}; the header has {', '.join(map(repr, header))}"
            + ("" if layout_name else " (is the first line a header? --format picks a layout)"))

    offset = first_line - 1  # the reader counts lines from where it started
    rows: list[Row] = []
    last_end = reader.line_num
    while True:
        start = last_end + 1 + offset
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.rows += 1
            report.problems.append(Problem(start, ROW, f"broken quoting: {exc}"))
            last_end = reader.line_num
            continue
        last_end = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        report.rows += 1
        row, problems = rows_reader.read(start, cells)
        if problems:
            report.problems += problems
        elif row is not None:
            rows.append(row)
        if progress is not None and report.rows % PROGRESS_FROM == 0:
            progress(f"checked {report.rows:,} rows")
    return rows


# -- matching and merging ----------------------------------------------------------------------


_NONE: frozenset[str] = frozenset()


class Person:
    """One contact the file speaks about: a stored one (with what is stored) or a new one."""

    __slots__ = (
        "changed_consents",
        "consents",
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

    FIELDS = ("name", "language", "timezone", "email", "phone", "vk_id", "telegram_chat_id")

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


def _chunks(items: Sequence, size: int = CHUNK) -> Iterable[Sequence]:
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
            Contact.phone, Contact.vk_id, Contact.telegram_chat_id, Contact.opted_out_at)
    for k, values in wanted.items():
        for part in _chunks(sorted(values)):
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
    for part in _chunks(ids):
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


def _match(session: Session, path: Path, rows: list[Row], report: ImportReport,
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
        if current is None:
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


# -- writing -----------------------------------------------------------------------------------


def _write(session: Session, people: list[Person], event: Event | None, path: Path,
           layout: str, now: datetime, report: ImportReport,
           progress: Callable[[str], None] | None) -> None:
    new = [p for p in people if p.id is None]
    if progress and new:
        progress(f"writing {len(new):,} new contacts")
    contacts = Contact.__table__
    for part in _chunks(new):
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
    for part in _chunks(changed):
        session.execute(update(Contact), [
            {"id": p.id, **dict(zip(Person.FIELDS, p.values(), strict=True)), "updated_at": now}
            for p in part])
    topics = [{"contact_id": p.id, "topic": t} for p in people for t in p.new_topics or ()]
    for part in _chunks(topics):
        session.execute(insert(ContactTopic.__table__), part)
    fresh, stale = [], []
    for p in people:
        for channel in sorted(p.changed_consents or ()):
            s = p.consents[channel]
            row = {"contact_id": p.id, "channel": channel, "granted_at": s.granted_at,
                   "granted_source": s.granted_source}
            (stale if channel in p.stored_channels else fresh).append(row)
    for part in _chunks(fresh):
        session.execute(insert(Consent.__table__), part)
    for part in _chunks(stale):
        session.execute(update(Consent), part)
    if event is not None:
        _registrations(session, people, event, path, layout, report, write=True)
    session.flush()


def _registrations(session: Session, people: list[Person], event: Event, path: Path,
                   layout: str, report: ImportReport, *, write: bool) -> None:
    """Count (and with `write`, store) the new registrations and the changed ones."""
    if not write:  # a dry run: new people have no id yet, and all their registrations are new
        report.registrations_new = sum(1 for p in people
                                       if p.id is None and p.registration is not None)
        people = [p for p in people if p.id is not None]
    regs = {p.id: p.registration for p in people if p.registration is not None}
    stored: dict[int, tuple[int, datetime, bool | None, bool]] = {}
    for part in _chunks(sorted(regs)):
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
    for part in _chunks(fresh):
        session.execute(insert(Registration), part)
    for row in changed:  # attendance marks after an event: few, and of different shapes
        session.execute(update(Registration).where(Registration.id == row.pop("id"))
                        .values(**row))


# -- the entry points --------------------------------------------------------------------------


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
    people = _match(session, path, rows, report, opts, now)
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
            _registrations(session, people, event, path, report.format, report, write=False)
        return report
    try:
        _write(session, people, event, path, report.format, now, report, progress)
    except IntegrityError:
        raise UserError(f"{path}: the store changed while importing (another import at the "
                        f"same time?); nothing was imported: run it again") from None
    report.applied = True
    return report
