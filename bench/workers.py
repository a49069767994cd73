"""Benchmark: one wave sent by one worker process, then by two (flows/parts.py).

    .venv/bin/python bench/workers.py [--messages 20000] [--workers 1,2] [--waves 1]
                                      [--limits high|provider] [--postgres] [--py-spy DIR]

The provider fakes run in their own process as in bench/send_wave.py (80 ms a reply, the
same mix of channels). Each wave is decided once, in this process; then, for each number of
workers N, the wave's messages are set back to `planned` and N processes each run one part
of it (`flows.parts.wave_part`, what a worker of the pool runs for a deployed wave's part;
part 1 is the wave run's own), all at once, against one Prefect API (the test harness's
server) and one store (SQLite, or a throwaway PostgreSQL with --postgres).

- `--limits high` (the default): limits far above what is reached, in the fakes and in our
  settings: what more workers add when nothing but the machine binds.
- `--limits provider`: bench/send_wave.py's provider-shaped limits (SendGrid 100/s, Twilio SMS
  30/s, calls 1/s, VK 20/s, Telegram 30/s), each account's limit in our settings as it is.
- `--waves 2`: two events' waves at once (separate audiences), each on N workers.

Prints per run the time from the first part's start to the last part's end (and with the
processes' start-up), messages per second, each account's achieved rate and the rate-limit
replies the fakes gave; and where the CPU went: each process's CPU seconds (the parts, the
fakes, the Prefect server, PostgreSQL) against the machine's cores. `--py-spy DIR` samples
each part's thread that holds the GIL (py-spy must be installed: `.venv/bin/pip install
py-spy`) and prints how long the GIL was held and by what (the store, the HTTP clients,
Prefect, rendering, our code); the parts' own CPU seconds are then not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.send_wave import (
    ADDRESS,
    BOT,
    CHANNEL,
    LIMITS,
    SENDGRID_KEY,
    TWILIO_SID,
    TWILIO_TOKEN,
    VK_GROUP,
    VK_GROUP_ID,
    VK_USER,
    clear,
    control,
    fake_account,
    fakes_environment,
    mix,
)

MSK = ZoneInfo("Europe/Moscow")
STARTS_AT = datetime(2027, 4, 22, 19, 0, tzinfo=MSK)
ANNOUNCE = STARTS_AT - timedelta(days=14, hours=8)
HIGH = 100_000.0  # calls per second: no limit binds
CAMPAIGN = """\
campaign:
  announce: {channels: [email, sms, voice, vk, telegram, vk_wall, telegram_channel]}
  last_call: null
  reminder: null
"""
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def descendants(pid: int) -> set[int]:
    """The processes started by `pid`, at any depth."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def helpers_cpu(me: int, fakes: int) -> dict[str, float]:
    """CPU seconds so far of the processes beside the parts: the fakes, the Prefect server,
    PostgreSQL (its live processes, and the ended ones its postmaster has waited for)."""
    out = {"fakes": 0.0, "Prefect server": 0.0, "PostgreSQL": 0.0}
    for pid in descendants(me) | {fakes}:
        fields = _stat(pid)
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if not fields:
            continue
        own = (int(fields[11]) + int(fields[12])) / TICK
        waited = (int(fields[13]) + int(fields[14])) / TICK
        if pid == fakes:
            out["fakes"] += own
        elif cmd.startswith(b"postgres") or b"bin/postgres" in cmd:
            out["PostgreSQL"] += own + waited
        elif b"uvicorn" in cmd or b"prefect" in cmd:
            out["Prefect server"] += own
    return out


CATEGORIES = [  # where a sampled stack's time goes: the first match from the innermost frame
    ("the store (SQLAlchemy, driver)", ("sqlalchemy/", "psycopg", "sqlite3")),
    ("rendering (Jinja2, templates)", ("jinja2/", "channels/render", "channels/sandbox",
                                       "channels/context", "channels/mail", "markupsafe")),
    ("HTTP clients (SDKs, requests)", ("http/client", "urllib3/", "requests/", "httpx/",
                                       "httpcore/", "ssl.py", "sendgrid/", "twilio/",
                                       "telegram/", "vk_api/", "python_http_client")),
    ("Prefect (tasks, API client)", ("prefect/",)),
    ("our code", ("flows/", "channels/", "promo/", "audiences/")),
]


def profile_summary(path: Path) -> str:
    """py-spy's raw stacks (the thread holding the GIL) by what it was doing."""
    totals: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";")[::-1] if f]
        where = next((name for f in frames for name, keys in CATEGORIES
                      if any(k in f for k in keys)), "other (threads, event loop, imports)")
        totals[where] = totals.get(where, 0) + int(count)
    every = sum(totals.values()) or 1
    return f"GIL held {every / SPY_RATE:.1f} s (start-up included): " + ", ".join(
        f"{k} {v / every:.0%}" for k, v in sorted(totals.items(), key=lambda kv: -kv[1]))


SPY_RATE = 100  # py-spy's samples per second


# --- one part, in a process of its own ------------------------------------------------------

def child(slug: str, part: int, parts: int, now: str) -> None:
    from flows.parts import wave_part

    started = time.time()
    result = wave_part(slug, "announce", part, parts, now)
    print(json.dumps({"start": started, "end": time.time(), "sent": result["sent"]}),
          flush=True)


# --- the benchmark ---------------------------------------------------------------------------

def seed(folder: Path, waves: int, shares: dict[str, int]) -> list[str]:
    """One event per wave, each with an audience of its own (a topic of its own, so that no
    cap between the waves decides anything): the direct messages split as in send_wave."""
    from sqlalchemy import insert

    from flows.store import save_event
    from promo.db import session_scope
    from promo.db.models import Consent, Contact, ContactTopic
    from promo.domain.event import load_event
    from tests.helpers import write_event

    slugs = []
    cid = 0
    for w in range(waves):
        slug = f"bench-wave-{w + 1}"
        path = write_event(folder, STARTS_AT, slug=slug, extra=CAMPAIGN)
        path.write_text(path.read_text().replace("topic: python", f"topic: bench{w + 1}"))
        contacts, consents = [], []
        for channel, n in shares.items():
            for _ in range(n):
                cid += 1
                field = ADDRESS[channel]
                value: Any = {"email": f"guest{cid}@example.org", "phone": f"+7916{cid:07d}",
                              "vk_id": 10_000_000 + cid,
                              "telegram_chat_id": 50_000_000 + cid}[field]
                contacts.append({"id": cid, "name": f"Гость {cid}", "language": "ru",
                                 "timezone": "Europe/Moscow", field: value})
                consents.append({"contact_id": cid, "channel": channel,
                                 "granted_at": STARTS_AT - timedelta(days=100),
                                 "granted_source": "bench"})
        with session_scope() as s:
            save_event(s, load_event(path), path)
            s.execute(insert(Contact), contacts)
            s.execute(insert(ContactTopic), [{"contact_id": c["id"], "topic": f"bench{w + 1}"}
                                             for c in contacts])
            s.execute(insert(Consent), consents)
        slugs.append(slug)
    return slugs


def reset_wave() -> int:
    """Every message the last run sent back to `planned`, and no worker registered: the same
    wave again. Returns how many messages are due."""
    from sqlalchemy import delete, func, select, update

    from promo.db import session_scope
    from promo.db.models import Message, SendWorker

    with session_scope() as s:
        s.execute(update(Message).where(Message.status.in_(
            ("sent", "failed", "uncertain", "sending"))).values(
            status="planned", reason=None, sent_at=None, provider_message_id=None,
            delivery_status=None, attempts=0, claimed_by=None, claimed_at=None))
        s.execute(delete(SendWorker))
        return s.scalar(select(func.count()).select_from(Message)
                        .where(Message.status == "planned")) or 0


def run_parts(slugs: list[str], workers: int, env: dict[str, str], py_spy: Path | None,
              tag: str) -> dict[str, Any]:
    """Every wave in `workers` parts, each part a process; waits for all of them."""
    procs = []
    t0 = time.time()
    for slug in slugs:
        for k in range(workers):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child",
                   f"{slug}:{k}:{workers}:{ANNOUNCE.isoformat()}"]
            if py_spy is not None:
                out = py_spy / f"{tag}-{slug}-part{k + 1}of{workers}.txt"
                spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                # --gil: only the thread holding the GIL, i.e. where the process's Python
                # time goes; --nonblocking: sampled without pausing the part
                cmd = [spy, "record", "--gil", "--nonblocking", "--rate", str(SPY_RATE), "--format",
                       "raw", "-o", str(out), "--", *cmd]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    reports = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a part failed ({p.returncode}):\n{err[-3000:]}")
        reports.append(json.loads([x for x in out.splitlines() if x.startswith("{")][-1]))
    return {"wall": time.time() - t0, "start": min(r["start"] for r in reports),
            "end": max(r["end"] for r in reports), "parts": reports}


def children_cpu() -> float:
    """The CPU time of this process's children that have ended (the parts)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def report(urls: dict[str, str], run: dict[str, Any], limits: dict[str, float],
           title: str, others: dict[str, float], parts_cpu: float) -> float:
    stats = {name: control(url, "/_fake/stats") for name, url in urls.items()}
    limited = sum(s["rate_limited"] for s in stats.values())
    accounts: dict[str, Any] = {}
    for s in stats.values():
        accounts.update(s["accounts"])
    sent = sum(r["sent"].get("sent", 0) for r in run["parts"])
    seconds = run["end"] - run["start"]
    print(f"\n== {title}")
    print(f"   {sent} messages in {seconds:.1f} s (with the processes' start-up "
          f"{run['wall']:.1f} s): {sent / seconds:.1f} messages/s; rate-limit replies "
          f"{limited} ({', '.join(n + ' ' + str(s['rate_limited']) for n, s in stats.items())})")
    print("   per part: " + "; ".join(
        f"{r['end'] - r['start']:.1f} s, sent {r['sent'].get('sent', 0)}" for r in run["parts"]))
    for account, limit in limits.items():
        got = accounts.get(fake_account(account))
        if not got or got["calls"] < 2 or not got["span"]:
            continue
        rate = (got["calls"] - 1) / got["span"]
        shown = f"= {rate / limit:6.1%} of {limit:g}/s" if limit < HIGH else "(no limit)"
        print(f"   {account:<13} {got['calls']:>6} calls at {rate:8.2f}/s {shown}")
    cores = os.cpu_count() or 1
    print(f"   CPU: parts {parts_cpu:.1f} s, " + ", ".join(
        f"{k} {v:.1f} s" for k, v in others.items())
        + f"; {parts_cpu + sum(others.values()):.1f} s of the {cores} cores' "
          f"{cores * run['wall']:.1f} s; load average {os.getloadavg()[0]:.2f}")
    return sent / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000, help="direct messages per wave")
    parser.add_argument("--latency", type=float, default=0.08)
    parser.add_argument("--workers", default="1,2", help="numbers of workers to try, in order")
    parser.add_argument("--waves", type=int, default=1, help="waves sent at once")
    parser.add_argument("--limits", choices=("high", "provider"), default="high")
    parser.add_argument("--postgres", action="store_true",
                        help="the store on a throwaway PostgreSQL server (else SQLite)")
    parser.add_argument("--py-spy", type=Path, help="a flame graph per part into this folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        slug, part, parts, now = args.child.split(":", 3)
        child(slug, int(part), int(parts), now)
        return

    work = Path(tempfile.mkdtemp(prefix="promo-bench-workers-"))
    os.environ.update({
        "PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_LOGGING_SERVER_LEVEL": "CRITICAL",
        "PTB_TIMEDELTA": "1",
    })
    for name in [n for n in os.environ if n.startswith(("PROMO_", "PREFECT_API"))]:
        del os.environ[name]
    limits = LIMITS if args.limits == "provider" else {a: HIGH for a in LIMITS}
    fake_limits = {fake_account(a): r for a, r in limits.items()}
    with ExitStack() as stack:
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.serve", "--latency", str(args.latency),
             "--limits", json.dumps(fake_limits), "--sendgrid-key", SENDGRID_KEY,
             "--twilio", f"{TWILIO_SID}:{TWILIO_TOKEN}",
             "--vk", f"{VK_GROUP}:{VK_USER}:{VK_GROUP_ID}", "--telegram", BOT,
             "--telegram-channel", CHANNEL],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        stack.callback(server.wait, 30)
        stack.callback(server.stdin.close)
        urls = json.loads(server.stdout.readline())
        if args.postgres:
            from tests.pgserver import throwaway_postgres

            database_url = stack.enter_context(throwaway_postgres("promo_bench"))
        else:
            database_url = f"sqlite:///{work / 'promo.db'}"
        os.environ.update(fakes_environment(urls, database_url, work / "outbox", limits))
        run(args, work, urls, server.pid, limits)
    shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, urls: dict[str, str], fakes_pid: int,
        limits: dict[str, float]) -> None:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from flows.wave import prepare_wave
    from promo.db import dispose_engines
    from promo.settings import get_settings, reset_settings

    reset_settings()
    shares = mix(args.messages)
    slugs = seed(work, args.waves, shares)
    t0 = time.perf_counter()
    for slug in slugs:
        prepare_wave(slug, "announce", ANNOUNCE, get_settings())
    print(f"{args.waves} wave(s) of {args.messages} direct messages + 2 posts each "
          f"({shares}), decided in {time.perf_counter() - t0:.1f} s; latency "
          f"{args.latency * 1000:.0f} ms; limits: {args.limits}; store: "
          f"{'PostgreSQL' if args.postgres else 'SQLite'}; {os.cpu_count()} cores")
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    with prefect_test_harness(server_startup_timeout=120):
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
        me = os.getpid()
        rates = {}
        for workers in [int(n) for n in args.workers.split(",")]:
            due = reset_wave()
            dispose_engines()  # the parts write; this process only reads, afterwards
            clear(urls)
            before, children_before = helpers_cpu(me, fakes_pid), children_cpu()
            result = run_parts(slugs, workers, env, args.py_spy, f"{workers}w")
            after = helpers_cpu(me, fakes_pid)
            others = {k: after[k] - before[k] for k in after if after[k] - before[k] > 0}
            parts_cpu = children_cpu() - children_before
            title = (f"{args.waves} wave(s) x {workers} worker process(es): {due} messages "
                     f"due")
            rates[workers] = report(urls, result, limits, title, others, parts_cpu)
            if args.py_spy:
                for f in sorted(args.py_spy.glob(f"{workers}w-*.txt")):
                    print(f"   py-spy {f.stem}: {profile_summary(f)}")
        if len(rates) > 1:
            base = rates[min(rates)]
            print("\nspeed-up over " + f"{min(rates)} worker(s): " + ", ".join(
                f"{n} workers {r / base:.2f}x" for n, r in rates.items() if n != min(rates)))


if __name__ == "__main__":
    main()
