"""Bulk inserts for the ledger's big writes (a wave of a million contacts records a million
rows or more): the fastest path each database offers, inside the caller's transaction.

- PostgreSQL: `COPY` into a temporary table (psycopg 3's `cursor.copy`), then one
  `INSERT ... SELECT ... ON CONFLICT DO NOTHING`: no statement per row from the client
  (executemany was one each). The server's own work per row remains (the unique key, four
  more indexes, two foreign keys: docs/performance.md).
- SQLite: the driver's executemany of one prepared statement, in chunks (SQLite runs in
  process: a statement per row costs no round trip).

Times go in as naive UTC (`UTCDateTime`'s storage): the caller converts them, with
`naive_utc` or `sqlite_time`, which remember the few distinct send times of a wave.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import islice

from sqlalchemy import Connection


@lru_cache(maxsize=4096)
def naive_utc(t: datetime | None) -> datetime | None:
    return None if t is None else t.astimezone(UTC).replace(tzinfo=None)


@lru_cache(maxsize=4096)
def sqlite_time(t: datetime | None) -> str | None:
    # SQLite keeps times as text: written the way SQLAlchemy does (always with microseconds),
    # or text comparisons in queries would misorder equal instants
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def time_writer(conn: Connection) -> Callable[[datetime | None], datetime | str | None]:
    """How this connection's database stores an aware time."""
    return naive_utc if conn.dialect.name == "postgresql" else sqlite_time


def insert_new(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[tuple],
               unique: str, chunk: int = 20_000) -> None:
    """Insert `rows` (tuples in `columns` order); a row whose `unique` column's value is in
    the table already is left out, the stored row left as it is."""
    cols = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        _copy_new(conn, table, cols, rows, unique)
        return
    sql = (f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(columns))})"
           f" ON CONFLICT ({unique}) DO NOTHING")
    it = iter(rows)
    while batch := list(islice(it, chunk)):
        conn.exec_driver_sql(sql, batch)


def _copy_new(conn: Connection, table: str, cols: str, rows: Iterable[tuple], unique: str) -> None:
    staging = f"_incoming_{table}"
    cursor = conn.connection.cursor()  # the session's own connection: its transaction
    try:
        cursor.execute(f"CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS"
                       f" SELECT {cols} FROM {table} WITH NO DATA")
        with cursor.copy(f"COPY {staging} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        # in the unique column's order: its index grows page by page instead of all over
        # (1,000,000 ledger rows: 14-16 s against 20-23 s unsorted, on the shared machine)
        cursor.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {staging}"
                       f" ORDER BY {unique} ON CONFLICT ({unique}) DO NOTHING")
        cursor.execute(f"DROP TABLE {staging}")
    finally:
        cursor.close()
