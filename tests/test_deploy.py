"""event-promo deployed as the README says, against a real Prefect server and process worker.

Starts `prefect server start` on 127.0.0.1 with a temporary PREFECT_HOME, creates the process
work pool, runs `prefect deploy --all` from the checkout and `prefect worker start`, then runs
the campaign deployment for an event five minutes ahead whose two promotional waves go
seconds apart (`days_before: 0` and an `at` with seconds: the product's own rules, nothing
relaxed). Checked from the API: the waves are scheduled runs of wave/wave at their times; a
changed time reschedules the pending run; they run and complete and publish their
artifacts; running the campaign again adds no run; a cancelled event cancels its runs; no
full address reaches an artifact or a log line. Everything started is stopped at the end.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from tests.deploy_stack import (
    BOT,
    POOL,
    PREFECT,
    REPO,
    Stack,
    _seed_contacts,
    _start,
    _start_own_server,
    _stop,
    _wait,
    _zone_at_midday,
    stack_env,
    write_event,
)

SLUG = "deploy-test"
FULL_EMAIL = re.compile(r"guest\d+@example\.org")
FULL_PHONE = re.compile(r"\+7916\d{7}")
MASKED = re.compile(r"g\*\*\*@example\.org|id \*\*\*\d\d")


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """Prefect server + deployments + a process worker, with a SQLite store they share."""
    from promo.db import dispose_engines
    from promo.settings import reset_settings
    from tests.fakes import FakeTelegram

    (tmp_path / "promo.toml").write_text("", encoding="utf-8")  # no developer's settings
    telegram = FakeTelegram(BOT).start()  # chats that blocked the bot: `telegram.blocked`
    env = stack_env(tmp_path, telegram.url)
    for name in ("PROMO_CONFIG", "PROMO_DATABASE_URL", "PROMO_OUTBOX_DIR"):
        monkeypatch.setenv(name, env[name])
    dispose_engines()
    reset_settings()
    logs = {name: tmp_path / f"{name}.log" for name in ("server", "deploy", "worker")}
    st = Stack("", env, tmp_path, logs, telegram)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start_own_server(st))
        for cmd in (["work-pool", "create", POOL, "--type", "process"], ["deploy", "--all"]):
            out = subprocess.run([PREFECT, *cmd], env=env, cwd=REPO, capture_output=True,
                                 text=True, timeout=180, check=False)
            logs["deploy"].open("a").write(out.stdout + out.stderr)
            assert out.returncode == 0, f"prefect {' '.join(cmd)} failed:\n{st.tail()}"
        procs.append(_start([PREFECT, "worker", "start", "--pool", POOL], env, logs["worker"],
                            tmp_path))
        yield st
    finally:
        for proc in reversed(procs):
            _stop(proc)
        telegram.stop()
        dispose_engines()
        reset_settings()


def test_campaign_deployment_schedules_runs_and_publishes(stack: Stack) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterId,
        FlowRunFilterTags,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from promo.db import session_scope
    from promo.db.models import Event, Message, WaveRun

    stack.telegram.blocked.update(_seed_contacts(60, blocked_telegram=3))
    t0 = datetime.now(UTC).replace(microsecond=0)
    zone = _zone_at_midday(t0)
    starts_at = (t0 + timedelta(minutes=5)).astimezone(ZoneInfo(zone))
    announce_at, last_call_at = t0 + timedelta(seconds=50), t0 + timedelta(minutes=4)
    event = write_event(stack.folder, SLUG, starts_at, zone, announce_at, last_call_at)
    doomed = write_event(stack.folder, "deploy-test-cancelled", starts_at, zone,
                         t0 + timedelta(minutes=3), last_call_at)

    with temporary_settings({PREFECT_API_URL: stack.api_url}), \
            get_client(sync_client=True) as client:

        def run_campaign(path: Path) -> Any:
            return _run("campaign/campaign", {"event_file": str(path)}, client, stack)

        def runs_of(slug: str) -> dict[str, list[Any]]:
            found = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"event:{slug}"])))
            by_wave: dict[str, list[Any]] = {}
            for r in sorted(found, key=lambda r: r.created):
                # the campaign's own runs carry the event's tag too, and no wave's; a part
                # of a wave sent by several workers (tag `part`) is no run of the wave
                wave = next((t.removeprefix("wave:") for t in r.tags if t.startswith("wave:")),
                            None)
                if wave is not None and "part" not in r.tags:
                    by_wave.setdefault(wave, []).append(r)
            return by_wave

        # 1. the campaign schedules each wave as a run of wave/wave at its time
        first = run_campaign(event)
        assert first.state.type == StateType.COMPLETED, stack.tail()
        assert first.name == f"campaign · {SLUG}"
        assert f"event:{SLUG}" in client.read_flow_run(first.id).tags
        # the Run form asks only for the event file, and says what it is
        form = client.read_deployment_by_name("campaign/campaign").parameter_openapi_schema
        assert list(form["properties"]) == ["event_file"]
        assert "relative to the project folder" in form["properties"]["event_file"]["description"]
        waves = runs_of(SLUG)
        assert set(waves) == {"announce", "last_call"}
        for wave, at in (("announce", announce_at), ("last_call", last_call_at)):
            (run,) = waves[wave]
            assert run.state.type in (StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING)
            assert abs((run.expected_start_time - at).total_seconds()) < 1
            assert run.name == f"{SLUG} · {wave}"
            assert "channel:email" in run.tags and f"event:{SLUG}" in run.tags
            assert run.parameters == {"event_slug": SLUG, "wave": wave}
        old_last_call = waves["last_call"][0]

        # 2. the organizer moves the last call earlier: the pending run is replaced
        last_call_at = t0 + timedelta(seconds=75)
        write_event(stack.folder, SLUG, starts_at, zone, announce_at, last_call_at)
        assert run_campaign(event).state.type == StateType.COMPLETED, stack.tail()
        waves = runs_of(SLUG)
        assert len(waves["announce"]) == 1, "the unchanged wave keeps its run"
        old, new = waves["last_call"]
        assert old.id == old_last_call.id and old.state.type in (StateType.CANCELLED,
                                                                 StateType.CANCELLING)
        assert abs((new.expected_start_time - last_call_at).total_seconds()) < 1

        # 3. a cancelled event: its pending wave runs are cancelled
        assert run_campaign(doomed).state.type == StateType.COMPLETED, stack.tail()
        assert len(runs_of("deploy-test-cancelled")) == 2
        write_event(stack.folder, "deploy-test-cancelled", starts_at, zone,
                    t0 + timedelta(minutes=3), t0 + timedelta(minutes=4), cancelled=True)
        assert run_campaign(doomed).state.type == StateType.COMPLETED, stack.tail()
        for runs in runs_of("deploy-test-cancelled").values():
            assert [r.state.type for r in runs] == [StateType.CANCELLED], runs

        # 4. the daily run: on the server's schedule, in the configured time zone, and it runs
        daily = client.read_deployment_by_name("reminders/daily")
        wanted = yaml.safe_load((REPO / "prefect.yaml").read_text())["definitions"][
            "reminder_schedule"]
        assert [(x.schedule.cron, x.schedule.timezone) for x in daily.schedules] == \
            [(wanted["cron"], wanted["timezone"])]
        upcoming = _wait(lambda: client.read_flow_runs(flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[daily.id]))), 90,
            "the scheduler to schedule the daily runs", stack)
        hour = int(wanted["cron"].split()[1])
        assert {r.expected_start_time.astimezone(ZoneInfo(wanted["timezone"])).hour
                for r in upcoming} == {hour}
        # the digest: the first Monday of each month at 11:00 in its zone (days 1-7 AND
        # Monday: day_or false), as the real server's scheduler reads it
        digest = client.read_deployment_by_name("digest/monthly")
        monthly = yaml.safe_load((REPO / "prefect.yaml").read_text())["definitions"][
            "digest_schedule"]
        assert [(x.schedule.cron, x.schedule.timezone, x.schedule.day_or)
                for x in digest.schedules] == [(monthly["cron"], monthly["timezone"], False)]
        mondays = _wait(lambda: client.read_flow_runs(flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[digest.id]))), 90,
            "the scheduler to schedule the digest runs", stack)
        local = [r.expected_start_time.astimezone(ZoneInfo(monthly["timezone"]))
                 for r in mondays]
        assert {(t.weekday(), t.hour, t.minute) for t in local} == {(0, 11, 0)}, local
        assert all(t.day <= 7 for t in local) and len({(t.year, t.month) for t in local}) \
            == len(local), local
        before = datetime.now(UTC)
        today = _run("reminders/daily", {}, client, stack)
        assert today.state.is_completed(), stack.tail()
        # named after the day it ran (the run may cross midnight UTC)
        assert today.name in {f"daily · {t:%Y-%m-%d}" for t in (before, datetime.now(UTC))}
        assert client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[today.id])))

        # 5. the worker runs both waves at their times, and they complete
        wave_ids = [waves["announce"][0].id, new.id]

        def completed() -> list[Any] | None:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=wave_ids)))
            bad = [r for r in runs if r.state.is_final() and not r.state.is_completed()]
            assert not bad, f"{bad}\n{stack.tail()}"
            return runs if all(r.state.is_completed() for r in runs) else None

        done = _wait(completed, 150, "the wave runs to complete", stack)
        for r in done:
            assert r.start_time >= r.expected_start_time - timedelta(seconds=1)
        assert {r.name for r in done} == {f"{SLUG} · announce", f"{SLUG} · last_call"}
        # the chats that blocked the bot: the announce is done, but not plain "Completed",
        # and it says so in an event an Automation can act on
        announce = next(r for r in done if r.id == wave_ids[0])
        assert announce.state.name == "Completed with failures", announce.state
        events = _wait(lambda: httpx.post(f"{stack.api_url}/events/filter", json={
            "filter": {"event": {"name": ["promo.wave.finished"]},
                       "resource": {"id": [f"prefect.flow-run.{announce.id}"]},
                       "occurred": {"since": t0.isoformat()}}}, timeout=10).json()["events"],
                       60, "the promo.wave.finished event", stack)
        assert events[0]["payload"]["failed"] >= 3, events
        assert events[0]["resource"]["promo.outcome"] == "with-failures"

        # 6. running the campaign again adds no wave run
        rerun = run_campaign(event)
        assert rerun.state.type == StateType.COMPLETED, stack.tail()
        again_id = rerun.id
        again = runs_of(SLUG)
        assert {w: [r.id for r in rs] for w, rs in again.items()} == \
            {w: [r.id for r in rs] for w, rs in waves.items()}

        # 7. what the UI shows: the plan, and per wave its outcomes, summary and progress
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[first.id, *wave_ids])))
        keys = {a.key for a in artifacts}
        assert {f"{SLUG}-plan", f"{SLUG}-wave-runs"} <= keys
        said = "\n".join(str(a.data) for a in artifacts if a.type == "markdown")
        for wave in ("announce", "last-call"):
            assert {f"{SLUG}-{wave}-outcomes", f"{SLUG}-{wave}-summary",
                    f"{SLUG}-{wave}-progress"} <= keys, f"{keys}\n{said}\n{stack.tail()}"
        progress = [a for a in artifacts if a.type == "progress"]
        assert progress and all(float(a.data) == 100.0 for a in progress)
        plan = next(a for a in artifacts if a.key == f"{SLUG}-plan")
        plan_rows = json.loads(plan.data) if isinstance(plan.data, str) else plan.data
        assert {r["wave"] for r in plan_rows} == {"announce", "last_call"}
        assert sum(r["planned"] for r in plan_rows if r["wave"] == "announce") > 0
        summary = next(a for a in artifacts if a.key == f"{SLUG}-announce-summary")
        assert "Suppressed" in summary.data and MASKED.search(summary.data), summary.data
        assert "bot was blocked" in summary.data and "people" in summary.data
        # the wave runs are links to their pages in the UI, not raw ids
        links = next(a for a in artifacts if a.key == f"{SLUG}-wave-runs")
        ui = stack.api_url.removesuffix("/api")
        assert f"]({ui}/runs/flow-run/{wave_ids[0]})" in links.data, links.data
        # run again after the waves ran: the plan shows what they did, not "dropped"
        replan = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[again_id])))
        rows = next(json.loads(a.data) if isinstance(a.data, str) else a.data
                    for a in replan if a.key == f"{SLUG}-plan")
        assert {r["status"] for r in rows} == {"ran"}, rows
        everything = " ".join(str(a.data) + str(a.description) for a in artifacts)
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[first.id, *wave_ids])))
        assert logs
        everything += " ".join(log.message for log in logs)
        everything += " ".join(json.dumps(r.parameters) for rs in again.values() for r in rs)
        assert not FULL_EMAIL.search(everything) and not FULL_PHONE.search(everything)

    # 8. the ledger and the outbox agree with what the runs said
    with session_scope() as s:
        row = s.scalar(select(Event).where(Event.slug == SLUG))
        sent = dict(s.execute(select(Message.wave, func.count()).where(
            Message.event_id == row.id, Message.status == "sent").group_by(Message.wave)).all())
        recorded = {r.wave: r.flow_run_id for r in s.scalars(
            select(WaveRun).where(WaveRun.event_id == row.id))}
        cancelled = s.scalar(select(Event.cancelled_at).where(
            Event.slug == "deploy-test-cancelled"))
        sent_emails = s.scalar(select(func.count()).where(
            Message.event_id == row.id, Message.status == "sent", Message.channel == "email"))
    assert sent.get("announce", 0) > 0 and sent.get("last_call", 0) > 0, sent
    assert recorded == {"announce": str(wave_ids[0]), "last_call": str(wave_ids[1])}
    assert cancelled is not None
    assert len(list((stack.folder / "outbox" / "email").glob(f"{SLUG}_*.eml"))) == sent_emails


def _run(deployment: str, parameters: dict[str, Any], client: Any, st: Stack) -> Any:
    """Run a deployment now, as `prefect deployment run` does, and wait for its end."""
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False)
    return _wait(lambda: _final(client.read_flow_run(run.id)), 90, f"the {deployment} run", st)


def _final(run: Any) -> Any:
    return run if run.state is not None and run.state.is_final() else None
