"""Bulk inserts for the ledger's big writes (a wave of a million contacts records a million
rows or more), inside the caller's transaction.

The rows are written a chunk at a time by a thread of its own while the caller's iterable
makes the next chunk (the wave's decisions are decided as they are recorded). Each chunk goes
in one `INSERT ... SELECT ... ON CONFLICT DO NOTHING`, during which the driver lets go of
Python's lock, so the database's work (the unique key, the indexes) runs on the other core:

- PostgreSQL: binary `COPY` into a temporary table, then the insert from it (in the unique
  column's order). PostgreSQL's own JSON reading (`json_array_elements`) measured twice as
  slow as the COPY.
- SQLite: the chunk as one JSON array (encoding it is one call in C), read by `json_each`.
  The driver's executemany takes Python's lock back after every row and so starves
  against the thread that decides.

Columns whose value is the same for every row (`same`: the event, the wave, the decision's
time) are written by the statement, not sent with each row. Times go in as naive UTC
(`time_writer`).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import islice
from typing import Any

from sqlalchemy import Connection


@lru_cache(maxsize=4096)
def naive_utc(t: datetime | None) -> datetime | None:
    return None if t is None else t.astimezone(UTC).replace(tzinfo=None)


@lru_cache(maxsize=4096)
def utc_text(t: datetime | None) -> str | None:
    # SQLite keeps times as text: written the way SQLAlchemy does (always with microseconds),
    # or text comparisons in queries would misorder equal instants
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def time_writer(conn: Connection) -> Callable[[datetime | None], datetime | str | None]:
    """How this connection's rows carry an aware time: naive UTC (`UTCDateTime`'s storage),
    as a datetime for PostgreSQL's binary COPY, as text in SQLite's JSON."""
    return naive_utc if conn.dialect.name == "postgresql" else utc_text


def insert_new(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[tuple],
               unique: str, *, same: Mapping[str, Any] | None = None,
               refers: Mapping[str, str] | None = None, fresh: bool = False,
               chunk: int = 50_000) -> None:
    """Insert `rows` (tuples in `columns` order of str, int, bool, None, and times as
    `time_writer` gives them), each with the `same` values too; a row whose `unique` column's
    value is in the table already is left out, the stored row left as it is. `refers`:
    column -> the table whose `id` it names (or NULL): a row naming one that is not there is
    left out (a foreign key's check, in the chunk's statement rather than a trigger per row).
    `fresh`: the caller knows that none of the rows' unique values is in the table and that
    what they refer to is there (and stays: its transaction holds it); PostgreSQL then
    copies them straight into the table (a million rows: 6.3-7.1 s against 8.7-9.8 s
    through the temporary table, side by side).
    The last chunk is written when this returns; an error in either thread is raised
    here, and the caller's transaction is then to be rolled back."""
    same = dict(same or {})
    refers = {} if fresh else refers  # there, and held by the caller's transaction
    cursor = conn.connection.cursor()  # the session's own connection: its transaction
    if conn.dialect.name == "postgresql" and fresh:
        write = _postgres_copy(cursor, table, list(columns), same)
    elif conn.dialect.name == "postgresql":
        write = _postgres_writer(cursor, table, list(columns), unique, same, refers or {})
    else:
        write = _sqlite_writer(cursor, table, list(columns), unique, same, refers or {})
    writer = _Writer(write)
    try:
        it = iter(rows)
        while batch := list(islice(it, chunk)):
            writer.put(batch)
    except BaseException:
        writer.close(raise_error=False)  # the first error is the one told
        cursor.close()
        raise
    try:
        writer.close()
    finally:
        cursor.close()


class _Writer:
    """A thread that writes the chunks handed to it, at most two waiting (bounded memory)."""

    def __init__(self, write: Callable[[list[tuple]], None]) -> None:
        self._write = write
        self._queue: queue.Queue[list[tuple] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bulk-insert", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:  # after an error, only drain: the caller stops soon
                try:
                    self._write(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    self._error = exc

    def put(self, batch: list[tuple]) -> None:
        if self._error is not None:
            raise self._error  # the caller closes the writer and rolls back
        self._queue.put(batch)

    def close(self, raise_error: bool = True) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if raise_error and self._error is not None:
            raise self._error


def _present(refers: Mapping[str, str], value: Callable[[str], str]) -> str:
    """The SQL condition that each of `refers`' columns is NULL or names a row that is there."""
    return " AND ".join(
        [f"({value(c)} IS NULL OR EXISTS (SELECT 1 FROM {t} WHERE {t}.id = {value(c)}))"
         for c, t in refers.items()] or ["true"])


def _sqlite_writer(cursor: Any, table: str, columns: list[str], unique: str,
                   same: dict[str, Any], refers: Mapping[str, str]) -> Callable[[list[tuple]], None]:
    fields = ", ".join([*(f"value->>{i}" for i in range(len(columns))), *("?" * len(same))])
    # a WHERE (`true` at least): SQLite's grammar needs one between a SELECT and ON CONFLICT
    where = _present(refers, lambda c: f"value->>{columns.index(c)}")
    sql = (f"INSERT INTO {table} ({', '.join((*columns, *same))}) SELECT {fields}"
           f" FROM json_each(?) WHERE {where} ON CONFLICT ({unique}) DO NOTHING")
    constants = tuple(same.values())

    def write(batch: list[tuple]) -> None:
        cursor.execute(sql, (*constants, json.dumps(batch, separators=(",", ":"))))

    return write


def _column_types(cursor: Any, table: str, columns: Sequence[str]) -> list[int]:
    cursor.execute("SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass",
                   (table,))
    oids = dict(cursor.fetchall())
    return [oids[c] for c in columns]


def _postgres_copy(cursor: Any, table: str, columns: list[str], same: dict[str, Any],
                   ) -> Callable[[list[tuple]], None]:
    names = [*columns, *same]
    types = _column_types(cursor, table, names)
    constants = tuple(same.values())

    def write(batch: list[tuple]) -> None:
        with cursor.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
                         ) as copy:
            copy.set_types(types)
            for row in batch:
                copy.write_row((*row, *constants))

    return write


def _postgres_writer(cursor: Any, table: str, columns: list[str], unique: str,
                     same: dict[str, Any], refers: Mapping[str, str],
                     ) -> Callable[[list[tuple]], None]:
    staging = f"_incoming_{table}"
    cols = ", ".join(columns)
    # a chunk's statement is planned and run once: compiling it (JIT, past the cost of a
    # few thousand rows) took longer than it saved (1,000,000 rows: 11.5 s against 13.4 s)
    cursor.execute("SET LOCAL jit = off")
    cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DROP AS"
                   f" SELECT {cols} FROM {table} WITH NO DATA")
    # binary COPY: the values go as the columns' types, nothing for the server to parse (a
    # million rows: 12-26 s against 28-32 s as text, measured side by side on the loaded machine)
    types = _column_types(cursor, staging, columns)
    # in the unique column's order: its index grows page by page instead of all over
    # (1,000,000 ledger rows: 14-16 s against 20-23 s unsorted, on the shared machine)
    insert = (f"INSERT INTO {table} ({', '.join((*columns, *same))})"
              f" SELECT {', '.join((*columns, *('%s' for _ in same)))} FROM {staging}"
              f" WHERE {_present(refers, lambda c: f'{staging}.{c}')}"
              f" ORDER BY {unique} ON CONFLICT ({unique}) DO NOTHING")
    constants = tuple(same.values())

    def write(batch: list[tuple]) -> None:
        with cursor.copy(f"COPY {staging} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in batch:
                copy.write_row(row)
        cursor.execute(insert, constants)
        cursor.execute(f"TRUNCATE {staging}")

    return write
