"""What the bad-input tests and `bench/bad_inputs.py` share: the `promo` command run in this
process as a user runs it (through `promo.cli:main`, the one place that turns errors into
messages), a time bound, and a snapshot of everything a refused input must not change."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import func, select

# exit codes of `promo`: 0 done, 2 refused with a message, 1 an unexpected error (a bug that
# main turned into one line; with --debug it would be a traceback)
UNEXPECTED = 1


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def crashed(self) -> bool:
        """An error main did not expect: a traceback with --debug."""
        return self.code not in (0, 2) or "Traceback" in self.err


@contextlib.contextmanager
def environment(env: dict[str, str | None]) -> Iterator[None]:
    """Variables set (None: removed) for the block, and the settings read again."""
    from promo.settings import reset_settings

    saved = {k: os.environ.get(k) for k in env}
    try:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        with contextlib.suppress(Exception):
            reset_settings()


def run_promo(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """`promo ARGS` in this process, its exit code and output."""
    from promo.cli import main
    from promo.settings import get_settings

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    code = 0
    with environment(env or {}):
        get_settings.cache_clear()
        sys.argv = ["promo", *args]
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = argv
    return Result(code, out.getvalue(), err.getvalue())


class Hang(Exception):
    """A case that did not end within its time bound."""


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Raise Hang in this (main) thread if the block runs longer than `seconds`."""
    def stop(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot() -> tuple:
    """Counts and contents of what imports, events and webhooks write."""
    from promo.db import session_scope
    from promo.db.models import Consent, Contact, ContactTopic, Event, Registration, WebhookEvent

    with session_scope() as s:
        contacts = sorted(
            (c.id, c.email, c.phone, c.vk_id, c.telegram_chat_id, c.name, c.timezone,
             c.language, c.opted_out_at) for c in s.scalars(select(Contact)))
        consents = sorted((c.contact_id, c.channel, c.granted_at, c.withdrawn_at)
                          for c in s.scalars(select(Consent)))
        counts = tuple(s.scalar(select(func.count()).select_from(m))
                       for m in (ContactTopic, Event, Registration, WebhookEvent))
    return contacts, consents, counts
