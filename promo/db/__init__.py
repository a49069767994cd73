"""Engine and sessions. The schema is created or migrated (Alembic) on first use.

SQLite (the default) runs every transaction as `BEGIN IMMEDIATE`: one writer at a
time, which is what makes the send-time cap check atomic across processes. On
PostgreSQL the same check takes row locks (see `channels/caps.py`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.orm import Session, sessionmaker

from promo.errors import UserError

MIGRATIONS = Path(__file__).parent / "migrations"

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def _pool(url: str) -> dict[str, int]:
    """A pool that fits the work in flight: each batch task of a wave holds a connection
    while it claims or records, plus the flow itself and the sending lease's renewals."""
    if url.startswith("sqlite") and (":memory:" in url or url.rstrip("/") == "sqlite:"):
        return {}
    from promo.settings import get_settings

    return {"pool_size": get_settings().send_batches_in_flight + 3, "max_overflow": 4,
            "pool_timeout": 120}


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                               **_pool(url))

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):
            # Let SQLAlchemy's "begin" event issue the BEGIN itself (pysqlite would defer it).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    try:
        return create_engine(url, pool_pre_ping=True, **_pool(url))
    except Exception as exc:  # noqa: BLE001 - a malformed URL or a missing driver: told, not raised
        raise UserError(f"database_url {url!r}: {exc}") from None


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (no-op when it is there)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current == head:
        return
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def get_engine(url: str | None = None) -> Engine:
    """The engine for `url` (default: the settings' database), migrated on first use."""
    from promo.settings import get_settings

    url = url or get_settings().database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _make_engine(url)
            try:
                migrate(engine)
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure to open or migrate is told plainly
                engine.dispose()
                raise UserError(f"cannot open the database {url!r}: {exc}") from None
            _engines[url] = engine
        return engine


def has_engine(url: str) -> bool:
    """Whether this process has the store open (not disposed since)."""
    with _lock:
        return url in _engines


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    factory = sessionmaker(bind=get_engine(url), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


# an arbitrary number of PostgreSQL's advisory locks, this project's "contacts in use"
_CONTACTS_LOCK = 0x70726F6D6F


def hold_contacts(session: Session, *, forgetting: bool = False) -> None:
    """Keep forgetting a person and recording ledger rows that name people apart until the
    session's transaction ends (the ledger has no foreign keys: migration 0006).

    Recording takes the lock shared (several waves at once), forgetting alone: a contact
    forgotten before a wave's rows go in is seen gone by them (`flows.ledger`), and rows that
    went in before a forget are there for it to unlink. Take it before the transaction locks
    any row a forget may need (messages, consents, the contact): waiting here while holding
    one would deadlock with the forget waiting for it. SQLite's transactions take turns
    already (BEGIN IMMEDIATE): nothing to do.
    """
    if is_postgres(session.get_bind()):
        lock = "pg_advisory_xact_lock" if forgetting else "pg_advisory_xact_lock_shared"
        session.connection().exec_driver_sql(f"SELECT {lock}({_CONTACTS_LOCK})")


def table_names(engine: Engine) -> list[str]:
    return inspect(engine).get_table_names()
