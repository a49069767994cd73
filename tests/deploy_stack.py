"""A real Prefect stack for tests and scripts: `prefect server start` on a free port, the
process worker, and the helpers tests/test_deploy.py and scripts/screenshots.py share
(waiting on the API, seeding contacts, writing an event whose waves go seconds apart)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select

from tests.helpers import EVENT_TEMPLATE

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).parent / "prefect")
POOL = "event-promo"
BOT = "777000:deploy-bot"  # the fake Telegram's bot token


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    api_url: str
    env: dict[str, str]
    folder: Path
    logs: dict[str, Path]
    telegram: Any = None  # the fake Telegram the worker's runs send to

    def tail(self) -> str:
        return "\n".join(f"--- {name} ---\n" + p.read_text(errors="replace")[-4000:]
                         for name, p in self.logs.items() if p.exists())


def stack_env(folder: Path, telegram_url: str) -> dict[str, str]:
    """The environment of a server, deploy and worker of our own: no developer's Prefect or
    promo settings, a store and an outbox in `folder`, the fake Telegram."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PROMO_"))}
    env.update({
        "PREFECT_HOME": str(folder / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PROMO_CONFIG": str(folder / "promo.toml"),
        "PROMO_DATABASE_URL": f"sqlite:///{folder / 'promo.db'}",
        "PROMO_OUTBOX_DIR": str(folder / "outbox"),
        "PROMO_TELEGRAM_BOT_TOKEN": BOT,
        "PROMO_TELEGRAM_BASE_URL": telegram_url + "/bot",
        # the checkout pull step reads $PWD at deploy time, as in a shell in the project
        "PWD": str(REPO),
    })
    return env


def _start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    # a session of its own: stopping it stops the flow-run processes a worker started, too
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def _zone_at_midday(now: datetime) -> str:
    """A time zone where it is about noon now, so that `days_before: 0` waves a few
    minutes ahead stay on the event's own date whenever the test runs."""
    offset = (12 - now.hour) % 24
    if offset > 12:
        offset -= 24
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def _start_own_server(st: Stack) -> subprocess.Popen:
    """`prefect server start` on a free port, and only ever talk to that one.

    The port is free when chosen but may be taken before the server binds it (another test
    run, another Prefect server on the machine): then this server exits, and the health check
    would be answered by the other one, whose runs and workers are not ours. So a health
    answer counts only while our process lives, and a server that exited is started again
    on another port.
    """
    for _ in range(3):
        port = _free_port()
        st.api_url = f"http://127.0.0.1:{port}/api"
        st.env["PREFECT_API_URL"] = st.api_url
        proc = _start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                      st.env, st.logs["server"], st.folder)
        up = _wait(lambda p=proc: p.poll() is not None or _healthy(st.api_url), 120,
                   "the Prefect server to start", st)
        if up and proc.poll() is None:
            return proc
    raise AssertionError(f"the Prefect server did not start on a free port\n{st.tail()}")


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(check: Callable[[], Any], seconds: float, what: str, st: Stack) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}\n{st.tail()}")


def _seed_contacts(n: int, blocked_telegram: int = 0) -> list[int]:
    """n synthetic contacts, and `blocked_telegram` more reachable only on Telegram (their
    chat ids, returned, for a fake Telegram to refuse: "bot was blocked by the user")."""
    from sqlalchemy import insert

    from audiences import synthetic
    from promo.db import session_scope
    from promo.db.models import Consent, Contact, ContactTopic

    granted = datetime.now(UTC) - timedelta(days=400)
    with session_scope() as s:
        synthetic.store(s, list(synthetic.generate(n)), granted_at=granted)
        first = (s.scalar(select(func.max(Contact.id))) or 0) + 1
        ids = list(range(first, first + blocked_telegram))
        chats = [990000 + i for i in ids]
        if ids:
            s.execute(insert(Contact), [{"id": i, "language": "ru", "telegram_chat_id": c}
                                        for i, c in zip(ids, chats, strict=True)])
            s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"} for i in ids])
            s.execute(insert(Consent), [{"contact_id": i, "channel": "telegram",
                                         "granted_at": granted, "granted_source": "test"}
                                        for i in ids])
    return chats


def write_event(folder: Path, slug: str, starts_at: datetime, zone: str, announce: datetime,
                last_call: datetime, cancelled: bool = False) -> Path:
    """The event file: both promotional waves on the day of the event, at times to the second."""
    def at(t: datetime) -> str:
        return t.astimezone(ZoneInfo(zone)).strftime("%H:%M:%S")

    text = EVENT_TEMPLATE.format(slug=slug, starts_at=starts_at.isoformat()).replace(
        "timezone: Europe/Moscow", f"timezone: {zone}")
    path = folder / f"{slug}.yaml"
    path.write_text(
        text
        + f"cancelled: {'true' if cancelled else 'false'}\n"
        + "campaign:\n"
        + f"  announce: {{days_before: 0, at: \"{at(announce)}\", "
        + "channels: [email, vk, telegram, vk_wall]}\n"
        + f"  last_call: {{days_before: 0, at: \"{at(last_call)}\", channels: [email, telegram]}}\n"
        + "  reminder: null\n", encoding="utf-8")
    return path
