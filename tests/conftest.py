"""Shared fixtures: a real Prefect API, a throwaway store, a throwaway PostgreSQL server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Prefect reads its settings at import: keep its home and database out of ~/.prefect.
_PREFECT_HOME = tempfile.mkdtemp(prefix="promo-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_SERVER_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
for _name in list(os.environ):
    # a developer's own settings must not leak into the tests, nor a Prefect server or
    # profile of someone else's on the machine take the tests' runs
    if _name.startswith("PROMO_") or _name in (
            "PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        del os.environ[_name]

from promo.db import dispose_engines
from promo.settings import reset_settings


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real Prefect API for the whole session (the test harness's temporary server)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh SQLite store and outbox in a temporary folder, set as the settings."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROMO_DATABASE_URL", f"sqlite:///{tmp_path / 'promo.db'}")
    monkeypatch.setenv("PROMO_OUTBOX_DIR", str(tmp_path / "outbox"))
    dispose_engines()
    reset_settings()
    yield tmp_path
    dispose_engines()
    reset_settings()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server from the installed binaries, stopped after the session.

    Skipped, saying why, where PostgreSQL is not installed (`.ci/run` installs it).
    """
    from tests.pgserver import NoPostgres, throwaway_postgres

    try:
        with throwaway_postgres() as url:
            yield url
    except NoPostgres as exc:  # raised before the server starts, never by a test
        pytest.skip(str(exc))


@pytest.fixture
def pg_store(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The throwaway PostgreSQL server as the store, emptied before each test."""
    from tests.pgserver import empty

    empty(postgres_url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROMO_DATABASE_URL", postgres_url)
    monkeypatch.setenv("PROMO_OUTBOX_DIR", str(tmp_path / "outbox"))
    dispose_engines()
    reset_settings()
    yield postgres_url
    dispose_engines()
    reset_settings()
