"""What a run shows in the Prefect UI: the plan as a table, a wave's outcome per channel,
what happened and why (addresses masked), the wave runs a campaign scheduled, and the series
report (promo/report: the per-wave table, attendance, the forecast and the picture, a PNG
embedded as a `data:` URI so that the artifact needs no file server).

Every figure comes from the ledger (or the preview, for waves to come); this module only
lays them out.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.account import Account, Reason
from flows.schedule import WaveRunAction
from flows.store import find_event
from promo.db import session_scope
from promo.domain.event import EventSpec
from promo.domain.names import EXPLAINED, OUTCOME_COLUMNS, Status
from promo.domain.times import shown
from promo.report.series import event_forecast, event_report, series_history
from promo.settings import get_settings


def dashed(name: str) -> str:
    """A name as it reads in an artifact key (keys take no underscores)."""
    return name.replace("_", "-")


def publish_outcomes(event_slug: str, wave: str, outcomes: dict[str, dict[str, int]]) -> None:
    """The wave's outcome per channel, as a table artifact."""
    table = [{"channel": ch, **{c: row.get(c, 0) for c in OUTCOME_COLUMNS}}
             for ch, row in sorted(outcomes.items())]
    create_table_artifact(
        key=f"{dashed(event_slug)}-{dashed(wave)}-outcomes",
        table=table,
        description=f"{event_slug}, {wave}: outcome per channel",
    )


def account_lines(account: Account) -> list[str]:
    """The per-person account as markdown: who was reached and on which channels, who got
    nothing and why (every grouped reason, with `promo why` ids as examples)."""
    by = ", ".join(f"{c} {n}" for c, n in sorted(account.reached_by.items(),
                                                 key=lambda kv: (-kv[1], kv[0])))
    lines = [f"**Reached {account.reached} of {account.people} people**"
             + (f" ({by})" if by else "") + "."]
    if account.uncertain:
        lines.append(f"**{account.uncertain} uncertain**: the worker stopped mid-request; they "
                     "may have got it and are never sent it again.")
    if account.waiting:
        lines.append(f"**{account.waiting} still waiting** for their time (planned, or held by "
                     "quiet hours).")
    lines.append(f"**{account.nothing} got nothing**" + (":" if account.nothing else "."))
    if account.why:
        lines += ["", "| why they got nothing | people | for example (`promo why ID`) |",
                  "|---|---:|---|"]
        lines += [f"| {w.reason.replace('|', '/')} | {w.people} | "
                  f"{', '.join(f'contact {i}' for i in w.examples)} |" for w in account.why]
    if account.posts:
        lines += ["", "Public posts: " + ", ".join(f"{c} {st}" for c, st in
                                                    sorted(account.posts.items())) + "."]
    return lines


def publish_summary(event_slug: str, wave: str, outcomes: dict[str, dict[str, int]],
                    explained: list[Reason], later: datetime | None,
                    follow_up: str | None, account: Account | None = None,
                    zone: str | None = None, footer: str = "") -> None:
    """What the wave did: per person first, then per channel the attempts and the reasons
    for each outcome (rows cut at REASONS_PER_OUTCOME say how many more there are), and a
    footer (the reminder's forecast)."""
    totals: Counter = Counter()
    for row in outcomes.values():
        totals.update(row)
    lines = [f"# {event_slug} · {wave}", ""]
    if account is not None:
        if account.first_sent_at:
            lines += [f"Sent {shown(account.first_sent_at, zone)}"
                      + (f" to {shown(account.last_sent_at, zone)}"
                         if account.last_sent_at != account.first_sent_at else "") + ".", ""]
        lines += [*account_lines(account), "", "## Per channel (attempts)", ""]
    lines.append(", ".join(f"**{c}** {totals[c]}" for c in OUTCOME_COLUMNS if totals.get(c))
                 or "No decisions: nobody in the audience.")
    lines.append("")
    for status in EXPLAINED:
        rows = [r for r in explained if r.status == status]
        if not rows:
            continue
        lines += [f"### {status.capitalize()} ({totals[status]} messages)", "",
                  "| channel | why | how many | for example |", "|---|---|---:|---|"]
        for r in rows:
            lines.append(f"| {r.channel} | {r.reason.replace('|', '/')} | {r.count} "
                         f"| {', '.join(r.examples) or '-'} |")
        lines.append("")
    if later is not None:
        if follow_up:
            lines.append(f"Held messages are due from {shown(later, zone)}: a follow-up run "
                         f"of this wave is scheduled then ({run_link(follow_up)}).")
        else:
            lines.append(f"Held messages are due from {shown(later, zone)}: run the wave "
                         f"again then (deployed waves schedule it themselves).")
    if footer:
        lines += ["", footer]
    create_markdown_artifact(
        key=f"{dashed(event_slug)}-{dashed(wave)}-summary",
        markdown="\n".join(lines) + "\n",
        description=f"{event_slug}, {wave}: what happened and why (addresses masked)",
    )


def run_url(flow_run_id: str) -> str:
    """The run's page in the Prefect UI: under PREFECT_UI_URL when it is known, else the
    UI's own path (a link in an artifact is opened from the UI itself)."""
    from prefect.utilities.urls import url_for

    try:
        url = url_for("flow-run", obj_id=flow_run_id)
    except Exception:  # noqa: BLE001 - an unknown UI address is not an error: fall back
        url = None
    return url or f"/runs/flow-run/{flow_run_id}"


def run_link(flow_run_id: str | None, text: str = "flow run") -> str:
    return f"[{text}]({run_url(flow_run_id)})" if flow_run_id else "-"


def publish_plan(spec: EventSpec, clock: datetime) -> dict[str, Any]:
    """The plan as a table: per wave and channel, when, and how many contacts each outcome
    has. A wave that ran shows the ledger (`shows: ledger`, its status `ran`, when it sent);
    a wave to come shows the prediction (`shows: prediction`). Returns the preview."""
    from flows.preview import preview_campaign

    settings = get_settings()
    with session_scope(settings.database_url) as s:
        preview = preview_campaign(s, spec, clock, settings)
    rows: list[dict[str, Any]] = []
    for w in preview["waves"]:
        ran = w["status"] == "ran"
        at = w.get("first_sent_at") or w["send_at"] if ran else w["send_at"]
        per_channel = w["outcomes"] or {c: {} for c in w["channels"]}
        people = w.get("people") or {}
        for channel in w["channels"]:
            counts = per_channel.get(channel, {})
            # what an organizer looks for first on the left: which wave, did it run, what went
            rows.append({"wave": w["name"], "status": w["status"],
                         "shows": "ledger" if ran else "prediction",
                         "time": shown(at, spec.zone, ""), "channel": channel,
                         "people reached": (people.get("reached_by") or {}).get(channel, 0)
                         if ran else "",
                         **{c: counts.get(c, 0) for c in OUTCOME_COLUMNS},
                         "mode": w["mode"], "note": w["note"]})
    create_table_artifact(
        key=f"{spec.slug}-plan",
        table=rows,
        description=(f"Campaign plan for {spec.title} as of {shown(clock, spec.zone)}: per wave "
                     f"and channel, contacts per outcome. Waves that ran (status `ran`) show "
                     f"the ledger: what was sent, failed, ... and when; waves to come show the "
                     f"prediction from today's contacts, registrations and caps."),
    )
    return preview


def publish_schedule(spec: EventSpec, actions: list[WaveRunAction], *, cancelled: bool) -> None:
    """The wave runs, each linked to its page in the UI, times in the event's zone."""
    lines = [f"# {spec.slug}: wave runs", ""]
    if cancelled:
        lines += [("The event is **cancelled** (`cancelled: true`): its pending wave runs are "
                   "cancelled and nothing more is sent."), ""]
    if actions:
        lines += [f"| wave | send at ({spec.timezone}) | what the campaign did | run |",
                  "|---|---|---|---|"]
        lines += [f"| {a.wave} | {shown(a.send_at, spec.zone)} | {a.action} | "
                  f"{run_link(a.flow_run_id, f'{spec.slug} · {a.wave}')} |" for a in actions]
    else:
        lines.append("No wave runs.")
    create_markdown_artifact(key=f"{spec.slug}-wave-runs", markdown="\n".join(lines) + "\n",
                             description=f"{spec.slug}: the wave runs the campaign scheduled")


# what a wave run that had failed or uncertain messages ends as: Completed (it did its work,
# and a campaign run again must not schedule a second one), but not plain "Completed"
WITH_FAILURES = "Completed with failures"


def wave_finished(event_slug: str, title: str, wave: str, outcomes: dict[str, dict[str, int]],
                  account: Account, zone: str | None) -> str | None:
    """Say how the wave ended: a log line per person (a WARNING when messages failed or
    are uncertain) and a Prefect event, `promo.wave.finished`, that an Automation can turn
    into a notification. Returns the state name for a wave with failures, else None."""
    from prefect import get_run_logger
    from prefect.events import emit_event
    from prefect.runtime import flow_run

    totals: Counter = Counter()
    for row in outcomes.values():
        totals.update(row)
    failed, uncertain = totals.get(Status.failed, 0), totals.get(Status.uncertain, 0)
    trouble = failed + uncertain > 0
    logger = get_run_logger()
    line = f"{event_slug} {wave}: {account.line()}"
    if trouble:
        logger.warning("%s; failed %d, uncertain %d (per channel: %s)", line, failed, uncertain,
                       "; ".join(f"{ch} failed {r.get(Status.failed, 0)}, uncertain "
                                 f"{r.get(Status.uncertain, 0)}" for ch, r in
                                 sorted(outcomes.items())
                                 if r.get(Status.failed) or r.get(Status.uncertain)))
    else:
        logger.info("%s", line)
    run_id = flow_run.id
    resource = {"prefect.resource.id": f"prefect.flow-run.{run_id}" if run_id
                else f"promo.wave-run.{event_slug}.{wave}",
                "prefect.resource.name": flow_run.name or f"{event_slug} · {wave}",
                # an Automation matches on labels, not on the payload: this one says which
                "promo.outcome": "with-failures" if trouble else "ok"}
    emit_event(
        event="promo.wave.finished",
        resource=resource,
        related=[
            {"prefect.resource.id": f"promo.event.{event_slug}", "prefect.resource.role": "event",
             "prefect.resource.name": title},
            {"prefect.resource.id": f"promo.wave.{event_slug}.{wave}",
             "prefect.resource.role": "wave", "prefect.resource.name": f"{event_slug} · {wave}"},
        ],
        payload={"event": event_slug, "wave": wave, "failed": failed, "uncertain": uncertain,
                 "sent": totals.get(Status.sent, 0), "reached": account.reached,
                 "reached_by": account.reached_by, "got_nothing": account.nothing,
                 "waiting": account.waiting, "people": account.people,
                 "summary": line, "outcomes": outcomes},
    )
    return WITH_FAILURES if trouble else None


def publish_nothing_sent(event_slug: str, wave: str, note: str) -> None:
    create_markdown_artifact(
        key=f"{dashed(event_slug)}-{dashed(wave)}-summary",
        markdown=f"# {event_slug} · {wave}\n\nNothing sent: {note}.\n",
        description=f"{event_slug}, {wave}: nothing sent",
    )


# the picture in the artifact: small enough for the API (about 60-90 kB of base64)
ARTIFACT_DPI = 70


def forecast_line(f: dict[str, Any] | None) -> str:
    if f is None:
        return "The event has started: no forecast."
    if f["registered"] == 0:
        return "**Forecast:** nobody has registered yet."
    line = (f"**Forecast:** {f['expected']} of the {f['registered']} registered so far will come "
            f"(80% range {f['low']}-{f['high']}); {f['note']}.")
    more = f.get("with_registrations_to_come")
    if more and more["registrations_to_come"]:
        line += (f" With about {more['registrations_to_come']} more registrations to come "
                 f"(as many as the series usually gets from now on): {more['expected']} "
                 f"(80% range {more['low']}-{more['high']}).")
    return line


def report_markdown(slug: str, now: datetime, picture: bool = True) -> str:
    """The event's report as markdown (addresses never appear: counts only)."""
    from promo.report.plot import picture as draw  # matplotlib: only when a report is made

    settings = get_settings()
    with session_scope(settings.database_url) as s:
        row = find_event(s, slug)
        zone = row.timezone
        r = event_report(s, row, now, settings)
        png = (draw(s, row, r, series_history(s, row, r, now, settings), ARTIFACT_DPI)
               if picture else None)
        s.rollback()
    came = ("attendance not known yet" if r["attended"] is None else
            f"{r['attended']} came ({r['show_up_rate']:.0%}), {r['walk_ins']} walk-ins; "
            f"{r['new_attendees']} new, {r['returning_attendees']} returning")
    lines = [f"# {r['title']} · report", "",
             (f"{r['event']}, series **{r['series']}**, {r['starts_at']} ({r['status']}); "
             f"as of {shown(now, zone)}"), "",
             f"**Registered:** {r['registered']}; {came}.", ""]
    if r["forecast"] is not None:
        lines += [forecast_line(r["forecast"]), ""]
    lines += [("| wave | channel | reached | posts | clicks | registrations | opt-outs | "
              f"cost, {r['cost']['currency']} |"), "|---|---|---:|---:|---:|---:|---:|---:|"]
    for w in r["waves"]:
        lines.append(f"| {w['wave']} | {w['channel']} | {w['reached']} | {w['posts']} | "
                     f"{w['clicks']} | {w['registrations']} | {w['opt_outs']} | "
                     f"{w['cost']:.2f} |")
    for x in r["registrations_by"]:
        if x["wave"] is None:
            lines.append(f"| - | {x['channel'] or 'unattributed'} | | | | "
                         f"{x['registrations']} | | |")
    lines.append("")
    if png is not None:
        encoded = base64.b64encode(png).decode()
        lines += [(f"![registrations over time and the series' history]"
                  f"(data:image/png;base64,{encoded})"), ""]
    return "\n".join(lines)


def publish_report(slug: str, now: datetime) -> None:
    """The event's report as a markdown artifact of the current flow run."""
    create_markdown_artifact(key=f"{dashed(slug)}-report", markdown=report_markdown(slug, now),
                             description=f"{slug}: what the waves did, who came, the forecast")


def reminder_forecast(slug: str, now: datetime) -> str:
    """The forecast line for the reminder wave's summary."""
    with session_scope(get_settings().database_url) as s:
        f = event_forecast(s, find_event(s, slug), now)
        s.rollback()
    return forecast_line(f)


def report_hook(publish: Callable[[str, datetime], str | None], slug: str,
                clock: datetime) -> str:
    """The series report (promo/report) in the run's artifacts. A report is for reading: one
    that cannot be made is logged and never fails the run that sends the messages."""
    try:
        return publish(slug, clock) or ""
    except Exception as exc:  # noqa: BLE001 - see the docstring
        get_run_logger().warning("%s: the report could not be made: %s", slug, exc)
        return ""
