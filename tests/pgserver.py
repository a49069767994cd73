"""A throwaway PostgreSQL server from the installed binaries (Debian's `postgresql`), for the
tests' `postgres_url` fixture and the benchmarks' `--postgres` option."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class NoPostgres(RuntimeError):
    """PostgreSQL cannot be started here (not installed, or no user to run it as)."""


def pg_bin() -> Path | None:
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


@contextmanager
def throwaway_postgres(database: str = "promo_test", keep: Path | None = None) -> Iterator[str]:
    """Start a server in a temporary folder, yield a SQLAlchemy URL to a fresh database,
    stop the server and delete the folder afterwards.

    `keep`: a folder that holds the server's files across runs instead (a benchmark seeds a
    store once and reuses it); the server is made there the first time, the database
    created when it is not there yet, and nothing is deleted."""
    bindir = pg_bin()
    if bindir is None:
        raise NoPostgres("PostgreSQL is not installed (no initdb): apt-get install postgresql")
    data = keep or Path(tempfile.mkdtemp(prefix="promo-test-pg-"))
    data.mkdir(parents=True, exist_ok=True)
    fresh = not (data / "db").exists()
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
            raise NoPostgres("running as root and no unprivileged user to run PostgreSQL as")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid}
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    if fresh:
        subprocess.run([str(bindir / "initdb"), "-D", str(data / "db"), "-U", "promo",
                        "--auth=trust", "-E", "UTF8"],
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
                    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                        (database,)).fetchone():
                        conn.execute(f"CREATE DATABASE {database}")
                break
            except psycopg.OperationalError:
                time.sleep(0.2)
        yield f"postgresql+psycopg://promo@127.0.0.1:{port}/{database}"
    finally:
        # a fast shutdown (SIGINT): ends the clients' sessions instead of waiting for them, so
        # that a kept folder is left by a server that stopped cleanly
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if keep is None:
            shutil.rmtree(data, ignore_errors=True)


def empty(url: str) -> None:
    """Everything in the server's database dropped: each test starts from no schema."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
