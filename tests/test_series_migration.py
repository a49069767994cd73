"""Migration 0002 on a store made before the series existed, SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from promo.db import alembic_config, migrate

OLD_EVENT = (
    "INSERT INTO events (slug, title, starts_at, timezone, topic, language, definition, "
    "created_at, updated_at) VALUES ('python-meetup-60', 'Meetup #60', '2026-01-15 16:00:00', "
    "'Europe/Moscow', 'python', 'ru', '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
OLD_CONTACT = ("INSERT INTO contacts (email, created_at, updated_at) VALUES "
               "('anna@example.org', '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
OLD_REGISTRATION = (
    "INSERT INTO registrations (event_id, contact_id, registered_at, attended) "
    "SELECT e.id, c.id, '2026-01-10 10:00:00', true FROM events e, contacts c")


def upgrade_old_store(url: str) -> None:
    engine = create_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        for statement in (OLD_EVENT, OLD_CONTACT, OLD_REGISTRATION):
            conn.execute(text(statement))
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT series FROM events")).scalar_one() == "python"
        walk_in, source = conn.execute(text(
            "SELECT walk_in, utm_source FROM registrations")).one()
        assert walk_in in (False, 0) and source is None
        assert conn.execute(text("SELECT count(*) FROM link_clicks")).scalar_one() == 0
        # 0003: an old event is an event (not a digest), an old contact follows the consent
        assert conn.execute(text("SELECT kind FROM events")).scalar_one() == "event"
        assert conn.execute(text("SELECT digest FROM contacts")).scalar_one() is None
        # brought to the newest migration (0003 and what came after it)
        head = ScriptDirectory.from_config(cfg).get_current_head()
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head
    engine.dispose()


def test_sqlite(tmp_path: Path) -> None:
    upgrade_old_store(f"sqlite:///{tmp_path / 'old.db'}")


@pytest.mark.postgres
def test_postgres(postgres_url: str) -> None:
    from tests.pgserver import empty

    empty(postgres_url)
    upgrade_old_store(postgres_url)
