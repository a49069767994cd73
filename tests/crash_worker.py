"""A wave run in its own process, for the crash tests and bench/crash_resume.py: the real
`wave_flow` on the settings of the environment (the fakes' URLs, the store), against the
Prefect API in PREFECT_API_URL.

    python -m tests.crash_worker SLUG WAVE NOW [PART/PARTS]

With PART/PARTS (e.g. 1/2) it runs one part of a wave already decided, the `wave_part` flow
a wave run starts on other workers (flows/parts.py), instead of the whole wave run.

CRASH_WORKER_START_AT (seconds since the epoch) makes it wait until then to begin, after its
imports. CRASH_WORKER_KILL makes the process SIGKILL itself at a chosen point (the parent
can also kill it from outside at any moment):
- `deciding`: inside the transaction that records the wave's decisions;
- `between:N`: right after the N-th group's results were recorded, before the next claim.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    import flows.ledger
    import flows.send
    import flows.wave

    if point == "deciding":
        real_record = flows.ledger.record_decisions

        def record_decisions(*args, **kwargs):
            real_record(*args, **kwargs)
            _die()  # the rows are written, the transaction is not committed

        flows.wave.record_decisions = record_decisions
    elif point.startswith("between:"):
        after = int(point.split(":", 1)[1])
        real = flows.send._record
        lock = threading.Lock()
        count = [0]

        def _record(*args, **kwargs):
            real(*args, **kwargs)
            with lock:
                count[0] += 1
                if count[0] >= after:
                    _die()

        flows.send._record = _record


def main() -> None:
    slug, wave, now = sys.argv[1:4]
    point = os.environ.get("CRASH_WORKER_KILL")
    if point:
        arm(point)
    from flows.campaign import wave_flow
    from flows.parts import wave_part

    # several processes begin together, once each has imported everything
    time.sleep(max(0.0, float(os.environ.get("CRASH_WORKER_START_AT", "0")) - time.time()))
    if len(sys.argv) > 4:
        part, parts = (int(x) for x in sys.argv[4].split("/"))
        result = wave_part(slug, wave, part, parts, now)
    else:
        result = wave_flow(slug, wave, now)
    print(json.dumps(result.get("sent")), flush=True)


if __name__ == "__main__":
    main()
