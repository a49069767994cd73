"""What the command line prints: the consoles, tables, JSON, and the `--now` clock."""

from __future__ import annotations

import json
import sys
from datetime import datetime

from rich.console import Console
from rich.table import Table

from promo.domain.names import OUTCOME_COLUMNS, Status
from promo.errors import UserError

# piped output (CI logs, `| less`) gets room for the outcome tables instead of 80 columns
console = Console() if sys.stdout.isatty() else Console(width=120)
# errors name files and lines: never wrapped, a path must stay whole to be copied
err = Console(stderr=True, soft_wrap=True)

# what a run did: the outcome columns without `planned` (`promo plan` shows what is to come)
RUN_COLUMNS = tuple(c for c in OUTCOME_COLUMNS if c != Status.planned)


def parse_time(value: str | None, option: str = "--now") -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option} {value!r}: not an ISO time like 2026-11-26T11:00:00+03:00") from None
    if parsed.tzinfo is None:
        raise UserError(f"{option} {value!r}: add a UTC offset, like +03:00")
    return parsed


def outcome_table(title: str, outcomes: dict[str, dict[str, dict[str, int]]],
                  columns: tuple[str, ...] = RUN_COLUMNS) -> Table:
    table = Table(title=title)
    table.add_column("wave")
    table.add_column("channel")
    for c in columns:
        table.add_column(c, justify="right")
    for wave, per_channel in outcomes.items():
        for channel, row in sorted(per_channel.items()):
            table.add_row(wave, channel, *(str(row.get(c, 0)) for c in columns))
    return table


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
