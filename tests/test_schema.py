"""The models and the migrations describe one schema: a store made by the migrations is what
`promo.db.models` says, on SQLite and on PostgreSQL (a change to one without the other fails
here, not on an operator's upgrade)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from promo.db import migrate
from promo.db.models import Base

# what the schema's comparison leaves out: a partial index's condition (migration 0006)
INDEX_SQL = {
    "sqlite": "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name",
    "postgresql": "SELECT indexdef FROM pg_indexes WHERE indexname = :name",
}


def check_store(url: str) -> None:
    engine = create_engine(url)
    migrate(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        sql = INDEX_SQL[engine.dialect.name]
        provider = conn.execute(text(sql), {"name": "ix_messages_provider_message_id"}).scalar()
        assert "provider_message_id IS NOT NULL" in provider
        # the caps index (contact first) serves every lookup by contact: no index of its own
        assert conn.execute(text(sql), {"name": "ix_messages_contact_id"}).scalar() is None
    engine.dispose()


def test_sqlite(tmp_path: Path) -> None:
    check_store(f"sqlite:///{tmp_path / 'store.db'}")


@pytest.mark.postgres
def test_postgres(postgres_url: str) -> None:
    from tests.pgserver import empty

    empty(postgres_url)
    check_store(postgres_url)
