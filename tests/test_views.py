"""What an organizer sees is true: a wave with failures is not plain green, says so in a
WARNING and a Prefect event; counts are per person; reason tables say when they are cut.

Through the real wave flow, the SDKs against the fake providers, and the Prefect API."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import insert

from flows.campaign import wave_flow
from promo.db import session_scope
from promo.db.models import ContactTopic, Message
from tests.test_channels_wave import ANNOUNCE, fakes, seed  # noqa: F401 - the fixture

SLUG = "python-meetup-74"


def _api() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value()).rstrip("/")


def _events(name: str, run_id: str) -> list[dict]:
    """The events of that name about that flow run, read back from the API."""
    body = {"filter": {"event": {"name": [name]},
                       "resource": {"id": [f"prefect.flow-run.{run_id}"]},
                       "occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 50}
    deadline = time.monotonic() + 30  # the server stores events a moment after they arrive
    while True:
        found = httpx.post(f"{_api()}/events/filter", json=body, timeout=10).json()["events"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_a_wave_with_failures_is_not_plain_green_and_says_so(prefect_api: None, fakes: dict,  # noqa: F811
                                                             store: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    seed(store)
    state = wave_flow(SLUG, "announce", ANNOUNCE.isoformat(), return_state=True)
    # done, so that nothing retries or reschedules it, but not plain "Completed"
    assert state.is_completed() and state.name == "Completed with failures", state
    result = state.result()
    people = result["people"]
    # 14 contacts, one address each: 10 reached, 4 refused by their provider (each person
    # once, though each has a row per channel of the wave)
    assert people["people"] == 14
    assert people["reached"] == 10
    assert people["reached_by"] == {"email": 2, "sms": 2, "voice": 2, "vk": 2, "telegram": 2}
    assert people["nothing"] == 4
    assert sum(w["people"] for w in people["why"]) == 4
    assert "failed (telegram): Telegram: Forbidden: bot was blocked by the user" in {
        w["reason"] for w in people["why"]}, people["why"]

    run_id = str(state.state_details.flow_run_id)
    with get_client(sync_client=True) as client:
        def warnings() -> list[str]:
            logs = client.read_logs(log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            return [x.message for x in logs if x.level == 30]

        deadline = time.monotonic() + 20  # logs reach the API in batches
        while not warnings() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert any("failed 4" in m and "reached 10 people" in m for m in warnings()), warnings()
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    summary = next(a.data for a in artifacts if a.key == f"{SLUG}-announce-summary")
    assert "Reached 10 of 14 people" in summary and "4 got nothing" in summary, summary
    assert "bot was blocked" in summary
    # a contact without an address on a channel reads as a contact, not as a dash
    assert "-, -, -" not in summary and "contact " in summary

    (event,) = _events("promo.wave.finished", run_id)
    assert event["resource"]["promo.outcome"] == "with-failures"
    assert event["payload"]["failed"] == 4 and event["payload"]["reached"] == 10
    roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event["related"]}
    assert roles["event"] == f"promo.event.{SLUG}"
    assert roles["wave"] == f"promo.wave.{SLUG}.announce"


def test_registered_people_count_once_and_cut_reason_tables_say_so(prefect_api: None,
                                                                   store: Path) -> None:
    from datetime import timedelta

    from flows.account import REASONS_PER_OUTCOME, reasons, wave_account
    from flows.store import save_event
    from promo.db.models import Contact, Registration
    from promo.domain.event import load_event
    from tests.helpers import write_event
    from tests.test_channels_wave import START

    path = write_event(store, START, extra="""\
campaign:
  announce: {channels: [telegram, email, sms, voice, vk]}
  last_call: null
  reminder: null
""")
    with session_scope() as s:
        event = save_event(s, load_event(path), path)
        # 70 people without any address: 30 of them get 5 "no address" rows, one per
        # channel; 40 registered, one row each (under the first channel)
        s.execute(insert(Contact), [{"id": i, "language": "ru"} for i in range(1, 71)])
        s.execute(insert(ContactTopic), [{"contact_id": i, "topic": "python"}
                                         for i in range(1, 71)])
        s.execute(insert(Registration), [{"contact_id": i, "event_id": event.id,
                                          "registered_at": START - timedelta(days=20),
                                          "source": "test"} for i in range(31, 71)])
        event_id = event.id
    result = wave_flow(SLUG, "announce", ANNOUNCE.isoformat())
    people = result["people"]
    assert people["people"] == 70 and people["reached"] == 0 and people["nothing"] == 70
    assert {w["reason"]: w["people"] for w in people["why"]} == {
        "registered": 40, "suppressed (every channel): no address": 30}
    with session_scope() as s:
        rows = reasons(s, event_id, "announce")
        total = s.query(Message).filter(Message.status == "suppressed").count()
        account = wave_account(s, event_id, "announce")
    suppressed = [r for r in rows if r.status == "suppressed"]
    # every row of the outcome is accounted for: the rows shown plus "+k more"
    assert sum(r.count for r in suppressed) == total == 30 * 5 + 40
    assert len(suppressed) == REASONS_PER_OUTCOME + 1
    assert suppressed[-1].reason.startswith("+1 more reason")
    registered = next(r for r in suppressed if r.reason == "registered")
    assert registered.channel == "any" and registered.count == 40
    assert all(e.startswith("contact ") for r in suppressed[:-1] for e in r.examples)
    assert "70 got nothing (registered: 40; suppressed (every channel): no address: 30)" \
        in account.line()


def test_plan_shows_the_ledger_for_a_wave_that_ran_and_says_which_is_which(store: Path) -> None:
    import json

    from typer.testing import CliRunner

    from flows.ledger import wave_outcomes
    from promo.cli import app
    from tests import test_wave_ledger as tw

    path, spec, event_id = tw.seed(store)
    sent = tw.run(spec.slug, "announce", datetime(2027, 2, 10, 7, 0, tzinfo=tw.MSK))
    assert sent  # something went out
    runner = CliRunner()
    # five days later the plan would call the announce "dropped" (its time passed): it ran
    now = "2027-02-15T12:00:00+03:00"
    result = runner.invoke(app, ["plan", str(path), "--now", now, "--json"])
    assert result.exit_code == 0, result.output
    waves = {w["name"]: w for w in json.loads(result.output)["waves"]}
    announce, reminder = waves["announce"], waves["reminder"]
    with session_scope() as s:
        ledger = wave_outcomes(s, event_id, "announce")
    assert announce["status"] == "ran" and announce["predicted"] is False
    assert announce["outcomes"] == ledger
    assert announce["people"]["reached"] == 4 and announce["people"]["nothing"] == 1  # registered
    assert announce["first_sent_at"] is not None
    assert reminder["status"] == "scheduled" and reminder["predicted"] is True
    assert reminder["people"]["waiting"] == 1  # the one registrant would get it
    text = runner.invoke(app, ["plan", str(path), "--now", now]).output
    assert "announce: ran sent 2027-02-10 07:00 MSK" in text and "from the ledger" in text
    assert "reminder: scheduled 2027-02-19 11:00 MSK" in text and "· predicted" in text
    assert "reached 4 people" in text

    # called off: what ran stays as it ran, the rest is cancelled, in plan and events check
    path.write_text(path.read_text() + "cancelled: true\n", encoding="utf-8")
    data = json.loads(runner.invoke(app, ["plan", str(path), "--now", now, "--json"]).output)
    assert {w["name"]: w["status"] for w in data["waves"]} == {"announce": "ran",
                                                               "reminder": "cancelled"}
    checked = runner.invoke(app, ["events", "check", str(path), "--now", now])
    assert checked.exit_code == 0, checked.output
    assert "reminder: cancelled" in checked.output and "announce: ran" in checked.output


def test_events_check_lists_every_problem_plan_would_refuse_and_events_list_shows_waves(
        store: Path) -> None:
    import json

    from typer.testing import CliRunner

    from promo.cli import app
    from tests import test_wave_ledger as tw
    from tests.helpers import write_event

    runner = CliRunner()
    now = "2027-02-01T12:00:00+03:00"
    bad = write_event(store, tw.START, slug="broken-meetup", extra="""\
campaign:
  announce: {days_before: 10, at: "07:00", channels: [vk, telegram]}
  last_call: null
  reminder: {channels: [email]}
texts:
  announce:
    vk:
      en: "{{ event.titel }}"
    telegram:
      ru: "{{ speaker }}"
""")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "promo.cli", "events", "check", str(bad),
                           "--now", now], capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "2 problems" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    # every problem at once: the misspelt variable and the unknown one
    assert "titel" in proc.stderr and "speaker" in proc.stderr
    assert runner.invoke(app, ["plan", str(bad), "--now", now]).exit_code != 0  # plan agrees

    _, spec, _ = tw.seed(store)
    tw.run(spec.slug, "announce", datetime(2027, 2, 10, 7, 0, tzinfo=tw.MSK))
    listed = runner.invoke(app, ["events", "list", "--now", "2027-02-15T12:00:00+03:00",
                                 "--json"])
    assert listed.exit_code == 0, listed.output
    (event,) = json.loads(listed.output)  # the broken file was never stored
    assert event["slug"] == spec.slug and event["start"] == "2027-02-20 19:00 MSK"
    waves = {w["wave"]: w for w in event["waves"]}
    assert waves["announce"]["state"] == "ran" and waves["announce"]["reached"] == 4
    assert waves["reminder"]["state"] == "scheduled"
    assert waves["reminder"]["detail"] == "2027-02-19 11:00 MSK"
    text = runner.invoke(app, ["events", "list", "--now", "2027-02-15T12:00:00+03:00"]).output
    assert spec.slug in text and "announce: ran" in text and "reminder: scheduled" in text


def test_running_the_campaign_again_keeps_what_a_wave_did(prefect_api: None, store: Path) -> None:
    """The campaign run carries event:<slug>; after its wave ran, a second campaign run (when
    the plan would drop that wave) shows it `ran`, with the ledger's counts, not `dropped`."""
    import json

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.campaign import campaign_flow
    from tests import test_wave_ledger as tw

    path, spec, _ = tw.seed(store)
    # the announce is late but goes at once (the reminder is 9 days away)
    late = datetime(2027, 2, 10, 12, 0, tzinfo=tw.MSK)
    first = campaign_flow(str(path), late.isoformat(), return_state=True)
    assert first.is_completed(), first
    # three days before the start: a late announce would now be dropped
    again = campaign_flow(str(path), datetime(2027, 2, 17, 12, 0, tzinfo=tw.MSK).isoformat(),
                          return_state=True)
    waves = {w["name"]: w for w in again.result()["waves"]}
    assert waves["announce"]["status"] == "ran"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(again.state_details.flow_run_id)
        assert f"event:{spec.slug}" in run.tags and run.name == f"campaign · {path.stem}"
        plans = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"{spec.slug}-plan"])))
    latest = max(plans, key=lambda a: a.created)
    rows = json.loads(latest.data) if isinstance(latest.data, str) else latest.data
    announce = [r for r in rows if r["wave"] == "announce"]
    assert {r["status"] for r in announce} == {"ran"} and {r["shows"] for r in announce} == {
        "ledger"}
    assert sum(r["sent"] for r in announce) == 4
    assert "2027-02-10 12:00 MSK" in {r["time"] for r in announce}
    reminder = [r for r in rows if r["wave"] == "reminder"]
    assert {r["shows"] for r in reminder} == {"prediction"}


def test_the_readme_automation_is_one_the_server_takes(prefect_api: None) -> None:
    """docs/automations/wave-with-failures.yaml, with a real notification block, is accepted
    by `prefect automation create`'s API, and matches the label the wave's event carries."""
    import yaml
    from prefect import get_client
    from prefect.blocks.notifications import SlackWebhook
    from prefect.events.schemas.automations import AutomationCore

    block_id = SlackWebhook(url="https://hooks.slack.com/services/T000/B000/XXXX").save("promo-test-hook",
                                                                 overwrite=True)
    data = yaml.safe_load((Path(__file__).parents[1] / "docs" / "automations" /
                           "wave-with-failures.yaml").read_text(encoding="utf-8"))
    data["actions"][0]["block_document_id"] = str(block_id)
    automation = AutomationCore.model_validate(data)
    assert automation.trigger.expect == {"promo.wave.finished"}
    assert automation.trigger.match.root == {"promo.outcome": "with-failures"}
    with get_client(sync_client=True) as client:
        created = client.create_automation(automation)
        assert client.read_automation(created).name == "promo wave with failures"
        client.delete_automation(created)


def test_promo_run_says_what_it_will_do_first_and_ends_per_person(prefect_api: None,
                                                                  store: Path) -> None:
    from typer.testing import CliRunner

    from promo.cli import app
    from tests import test_wave_ledger as tw

    path, _, _ = tw.seed(store)
    now = "2027-02-10T12:00:00+03:00"  # the announce (07:00) is late: it goes at once
    out = CliRunner().invoke(app, ["run", str(path), "--now", now]).output
    checked = out.index("the event file, its rules and templates are fine")
    assert checked < out.index("announce: late, due now: sending") < out.index(
        "running the flows") < out.index("messages so far")
    assert "reminder: scheduled, goes 2027-02-19 11:00 MSK" in out
    assert "announce: reached 4 people (email 2, sms 2), 1 got nothing (registered: 1)" in out
    again = CliRunner().invoke(app, ["run", str(path), "--now", now]).output
    assert "announce: ran already" in again
