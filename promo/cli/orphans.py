"""No orphans: Prefect's temporary API server dies with the command that started it.

`promo run` and `promo demo` without a configured Prefect server start a temporary one
(uvicorn, in a child process) and stop it at exit. A killed command (SIGKILL, OOM) never
reaches its exit handlers, and the server lived on as an orphan. On Linux the child is
started with PR_SET_PDEATHSIG: the kernel sends it SIGTERM the moment its parent dies,
whatever killed the parent, so nothing is left for a later run to clean up (a pid file
reaped by the next run would leave the orphan running until then, and could reap a reused
pid). Elsewhere the temporary server is left to Prefect's own exit handler.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import types
from functools import partial
from typing import Any

PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """In the child, before exec: SIGTERM when the parent dies (or at once if it already has)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def bind_temporary_server() -> None:
    """Make the temporary Prefect server that this process may start die with it."""
    if not sys.platform.startswith("linux"):
        return
    from prefect.server.api import server

    if getattr(server.subprocess, "_promo_bound", False):
        return
    parent = os.getpid()

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen:
        # the server is started from whichever thread first needs it; the signal follows
        # that thread's exit, so it must be this process's main thread or a long-lived one:
        # Prefect starts it from the flow engine in the calling (main) thread
        kwargs.setdefault("preexec_fn", partial(_die_with, parent))
        return subprocess.Popen(*args, **kwargs)

    shim = types.ModuleType("subprocess")
    shim.__dict__.update(subprocess.__dict__)
    shim.Popen = popen  # type: ignore[attr-defined]
    shim._promo_bound = True  # type: ignore[attr-defined]
    server.subprocess = shim  # type: ignore[attr-defined]
