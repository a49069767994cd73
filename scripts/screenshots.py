"""Screenshots of what an organizer sees in the Prefect UI, taken from a real server.

    .venv/bin/python scripts/screenshots.py            # writes docs/img/*.png (about 3 min)

Starts what tests/test_deploy.py starts (a `prefect server` with a temporary PREFECT_HOME,
`prefect deploy --all`, a process worker, a SQLite store) plus a fake Telegram whose chats
have blocked the bot (tests/fakes), runs the campaign of an event a few minutes ahead with
waves a minute apart, waits for them, runs the campaign again, and takes with headless
Chromium (Debian's /usr/bin/chromium):

- campaign-run.png: the second campaign run (after the waves ran): its tags and log;
- campaign-plan.png: its plan artifact (the waves that ran, from the ledger);
- campaign-wave-runs.png: its wave-runs artifact (links to the runs);
- wave-with-failures.png: the announce run, "Completed with failures";
- wave-summary.png: the announce's summary artifact (people reached, got nothing and why);
- dashboard.png: the dashboard;
- campaign-with-subflow.png: a campaign run as `promo run` makes it, its late wave a subflow;
- wave-part.png: a part of the announce's sending, run by the pool's worker beside the wave
  run (`--send-workers`, default 2, with batches of 100 so that the 300 contacts' wave is
  split).

Everything started is stopped at the end; nothing outside a temporary folder is touched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.deploy_stack import (
    BOT,
    POOL,
    PREFECT,
    Stack,
    _free_port,
    _healthy,
    _seed_contacts,
    _start,
    _stop,
    _wait,
    _zone_at_midday,
    stack_env,
    write_event,
)
from tests.fakes import FakeTelegram

SLUG = "python-meetup-74"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def shoot(url: str, out: Path, home: Path, size: str = "1400,1000") -> None:
    profile = tempfile.mkdtemp(prefix="chromium-", dir=home)
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", f"--window-size={size}",
                    "--virtual-time-budget=15000", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=120)
    print(f"  {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")


# zones an organizer would recognise, for whichever one has about noon now (the waves go on
# the event's own date: `days_before: 0`); Etc/GMT-N (tests/test_deploy.py) if none does
NAMED_ZONES = ("Europe/London", "Europe/Berlin", "Europe/Helsinki", "Europe/Moscow",
               "Asia/Dubai", "Asia/Tashkent", "Asia/Dhaka", "Asia/Bangkok", "Asia/Singapore",
               "Asia/Tokyo", "Australia/Brisbane", "Pacific/Noumea", "Pacific/Auckland",
               "America/Sao_Paulo", "America/Caracas", "America/Bogota",
               "America/Mexico_City", "America/Phoenix", "Pacific/Honolulu")


def zone_at_midday(now: datetime) -> str:
    for name in NAMED_ZONES:
        if 10 <= now.astimezone(ZoneInfo(name)).hour <= 13:
            return name
    return _zone_at_midday(now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--send-workers", type=int, default=2,
                        help="parts a wave's sending is split into (send_workers)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="promo-screenshots-"))
    telegram = FakeTelegram(BOT).start()
    (folder / "promo.toml").write_text("", encoding="utf-8")
    env = stack_env(folder, telegram.url)
    env["PROMO_SEND_WORKERS"] = str(args.send_workers)
    env["PROMO_SEND_BATCH_SIZE"] = "100"
    for name in ("PROMO_CONFIG", "PROMO_DATABASE_URL", "PROMO_OUTBOX_DIR"):
        os.environ[name] = env[name]
    logs = {name: folder / f"{name}.log" for name in ("server", "deploy", "worker")}
    st = Stack("", env, folder, logs, telegram)
    procs: list[subprocess.Popen] = []
    try:
        print("starting the Prefect server, deploying, starting a worker ...")
        port = _free_port()
        st.api_url = env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        env["PREFECT_UI_API_URL"] = st.api_url  # where the UI in the browser finds the API
        procs.append(_start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env, logs["server"], folder))
        _wait(lambda: procs[0].poll() is not None or _healthy(st.api_url), 120,
              "the Prefect server to start", st)
        assert procs[0].poll() is None, st.tail()
        for cmd in (["work-pool", "create", POOL, "--type", "process"], ["deploy", "--all"]):
            subprocess.run([PREFECT, *cmd], env=env, cwd=REPO, check=True, capture_output=True,
                           timeout=180)
        procs.append(_start([PREFECT, "worker", "start", "--pool", POOL], env,
                            logs["worker"], folder))
        os.environ["PREFECT_API_URL"] = st.api_url
        telegram.blocked.update(_seed_contacts(300, blocked_telegram=12))
        t0 = datetime.now(UTC).replace(microsecond=0)
        zone = zone_at_midday(t0)
        starts_at = (t0 + timedelta(minutes=6)).astimezone(ZoneInfo(zone))
        event = write_event(folder, SLUG, starts_at, zone, t0 + timedelta(seconds=45),
                            t0 + timedelta(seconds=100))
        run(st, event)
        print("waiting for the waves to run ...")
        waves = _wait(lambda: _waves_done(st), 240, "the wave runs", st)
        second = run(st, event)  # after the waves ran: the plan shows the ledger
        announce = next(r for r in waves if r.name.endswith("announce"))
        local = run_here(folder, t0, zone)
        ui = st.api_url.removesuffix("/api")
        time.sleep(3)
        print("screenshots:")
        # (the run page opens on its Logs tab whatever `?tab=` says: the other tabs are
        # hidden until the run has loaded, so each artifact is taken on its own page)
        shoot(f"{ui}/runs/flow-run/{second}", args.out / "campaign-run.png", folder)
        shoot(f"{ui}/artifacts/artifact/{_artifact_id(f'{SLUG}-plan')}",
              args.out / "campaign-plan.png", folder)
        shoot(f"{ui}/artifacts/artifact/{_artifact_id(f'{SLUG}-wave-runs')}",
              args.out / "campaign-wave-runs.png", folder, "1400,700")
        shoot(f"{ui}/runs/flow-run/{announce.id}", args.out / "wave-with-failures.png", folder)
        shoot(f"{ui}/artifacts/artifact/{_artifact_id(f'{SLUG}-announce-summary')}",
              args.out / "wave-summary.png", folder, "1400,1600")
        shoot(f"{ui}/dashboard", args.out / "dashboard.png", folder)
        # the other way to link a campaign to its waves: `promo run` runs a late wave as a
        # subflow of the campaign (a deployed campaign's waves run days later, on their own)
        shoot(f"{ui}/runs/flow-run/{local}", args.out / "campaign-with-subflow.png", folder)
        part = _part_run()
        if part is not None:
            shoot(f"{ui}/runs/flow-run/{part}", args.out / "wave-part.png", folder)
        else:
            print("no part of a wave ran (send_workers 1, or a wave of one batch)")
    finally:
        for proc in reversed(procs):
            _stop(proc)
        telegram.stop()
        shutil.rmtree(folder, ignore_errors=True)


def run(st: Stack, event: Path) -> str:
    from prefect import get_client
    from prefect.deployments import run_deployment

    flow_run = run_deployment("campaign/campaign", parameters={"event_file": str(event)},
                              timeout=0, as_subflow=False)
    with get_client(sync_client=True) as client:
        _wait(lambda: (r := client.read_flow_run(flow_run.id)).state.is_final() and r, 120,
              "the campaign run", st)
    return str(flow_run.id)


def run_here(folder: Path, t0: datetime, zone: str) -> str:
    """What `promo run` does against a server: the campaign in this process, its late
    announce run at once as a subflow. Returns the campaign run's id."""
    from flows.campaign import campaign_flow
    from tests.helpers import EVENT_TEMPLATE

    local = t0.astimezone(ZoneInfo(zone))
    starts_at = (local + timedelta(days=1)).replace(hour=23, minute=0, second=0)
    path = folder / "late-meetup.yaml"
    path.write_text(EVENT_TEMPLATE.format(slug="late-meetup", starts_at=starts_at.isoformat())
                    .replace("timezone: Europe/Moscow", f"timezone: {zone}")
                    + "campaign:\n"
                    + f"  announce: {{days_before: 1, at: \"{local - timedelta(minutes=10):%H:%M}\","
                    + " channels: [email, telegram]}\n  last_call: null\n  reminder: null\n",
                    encoding="utf-8")
    state = campaign_flow(str(path), return_state=True)
    return str(state.state_details.flow_run_id)


def _waves_done(st: Stack) -> list | None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[f"event:{SLUG}"])))
    waves = [r for r in runs if any(t.startswith("wave:") for t in r.tags)
             and "part" not in r.tags]  # a part of a wave (flows.parts) is no run of it
    return waves if len(waves) >= 2 and all(r.state.is_final() for r in waves) else None


def _part_run() -> str | None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[f"event:{SLUG}", "part"])))
    done = [r for r in runs if r.state is not None and r.state.is_completed()]
    return str(done[0].id) if done else None


def _artifact_id(key: str) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        # the latest version of the key (a collection's own id is not an artifact's)
        return str(next(a for a in client.read_latest_artifacts() if a.key == key).latest_id)


if __name__ == "__main__":
    main()
