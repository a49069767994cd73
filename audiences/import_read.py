"""Import, reading the file: the encoding, the delimiter, the header and its layout, then
each record handed to `import_rows.RowReader` (stages 1-2; the checks of one row live there).
Split from `import_rows` so that each stays short."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from audiences.contacts import ADDRESS_KINDS
from audiences.import_layouts import LAYOUTS, Layout
from audiences.import_report import ROW, ImportReport, Problem
from audiences.import_rows import _CONTROL, Row, RowReader, _header_key
from promo.errors import UserError
from promo.settings import get_settings

PROGRESS_FROM = 20_000  # rows: smaller files import too fast to need progress lines

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
        try:
            n = len(next(csv.reader([header], delimiter=candidate), []))
        except csv.Error:  # a cell over the field size limit: the header's reader says so
            continue
        if n > best_n:
            best, best_n = candidate, n
    return best


def choose_layout(keys: Sequence[str]) -> Layout:
    """The layout whose column names the header matches best (generic on a tie)."""
    def score(layout: Layout) -> int:
        names = {n for names in layout.columns.values() for n in names}
        return sum(1 for k in keys if k in names)

    return max(LAYOUTS.values(), key=score)


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
    # the lines of the record being read: the csv module takes `ab"c` as a value, and only
    # the raw text tells a stray quote from a quoted one
    raw_lines: list[str] = []

    def lines() -> Iterable[str]:
        for line in stream:
            raw_lines.append(line)
            yield line

    reader = csv.reader(lines(), delimiter=delimiter, quotechar='"', doublequote=True,
                        strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise UserError(f"{path}:{first_line}: the header line cannot be read: {exc}") from None
    for cell in header:
        if _CONTROL.search(cell):
            raise UserError(f"{path}:{first_line}: the header contains control characters "
                            f"(a binary file, or the wrong --encoding?)")
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
        raw_lines.clear()
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
        if any('"' in c for c in cells):
            stray = _stray_quote("".join(raw_lines), delimiter)
            if stray is not None:
                column = header[stray].strip() if stray < len(header) else ROW
                report.problems.append(Problem(start, column or ROW, _STRAY_QUOTE))
                continue
        row, problems = rows_reader.read(start, cells)
        if problems:
            report.problems += problems
        elif row is not None:
            rows.append(row)
        if progress is not None and report.rows % PROGRESS_FROM == 0:
            progress(f"checked {report.rows:,} rows")
    return rows


_STRAY_QUOTE = ('a quote (") inside a value that does not start with one: quote the whole '
                'value and double the quotes in it ("say ""hi""")')


def _stray_quote(raw: str, delimiter: str) -> int | None:
    """The column of the first value with a quote that is not quoting (`ab"c`), if any."""
    column, quoted, at_start, i = 0, False, True, 0
    while i < len(raw):
        c = raw[i]
        if at_start:
            at_start = False
            if c == '"':
                quoted = True
                i += 1
                continue
        if quoted:
            if c == '"':
                if raw[i + 1:i + 2] == '"':
                    i += 1  # a doubled quote inside a quoted value
                else:
                    quoted = False
        elif c == delimiter:
            column += 1
            at_start = True
        elif c == '"':
            return column
        i += 1
    return None
