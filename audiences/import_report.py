"""Import, what it says: every problem found (line, column, reason), what was added,
changed or kept, and the refusal that lists them."""

from __future__ import annotations

from dataclasses import dataclass, field

from promo.errors import UserError

ROW = "row"  # the column named in problems that concern a whole row


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


