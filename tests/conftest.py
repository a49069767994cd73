"""Shared fixtures: a real Prefect API, a throwaway store, a throwaway PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
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


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True):
        return candidate.parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server from the installed binaries, stopped after the session.

    Skipped, saying why, where PostgreSQL is not installed (`.ci/run` installs it).
    """
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb): apt-get install postgresql")
    data = Path(tempfile.mkdtemp(prefix="promo-test-pg-"))
    user_args: list[str] = []
    run_as: dict = {}
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as an unprivileged user
        import pwd

        for name in ("postgres", "nobody"):
            try:
                pw = pwd.getpwnam(name)
                break
            except KeyError:
                continue
        else:
            pytest.skip("running as root and no unprivileged user to run PostgreSQL as")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid}
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    subprocess.run([str(bindir / "initdb"), "-D", str(data / "db"), "-U", "promo",
                    "--auth=trust", "-E", "UTF8", *user_args],
                   check=True, capture_output=True, env=env, **run_as)
    log = data / "server.log"
    proc = subprocess.Popen(
        [str(bindir / "postgres"), "-D", str(data / "db"), "-p", str(port), "-h", "127.0.0.1",
         "-k", str(data), "-c", "fsync=off", "-c", "max_connections=50"],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env, **run_as,  # noqa: SIM115
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        import psycopg

        for _ in range(50):
            try:
                with psycopg.connect(f"host=127.0.0.1 port={port} user=promo dbname=postgres",
                                     autocommit=True) as conn:
                    conn.execute("CREATE DATABASE promo_test")
                break
            except psycopg.OperationalError:
                time.sleep(0.2)
        yield f"postgresql+psycopg://promo@127.0.0.1:{port}/promo_test"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def pg_store(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The throwaway PostgreSQL server as the store, emptied before each test."""
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROMO_DATABASE_URL", postgres_url)
    monkeypatch.setenv("PROMO_OUTBOX_DIR", str(tmp_path / "outbox"))
    dispose_engines()
    reset_settings()
    yield postgres_url
    dispose_engines()
    reset_settings()
