"""Import, reading: the encoding, the delimiter, the layout, and every row checked into a
`Row` or problems."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
from audiences.import_layouts import LAYOUTS, Layout
from audiences.import_report import ROW, ImportReport, Problem
from promo.errors import UserError
from promo.settings import get_settings

PROGRESS_FROM = 20_000  # rows: smaller files import too fast to need progress lines

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


