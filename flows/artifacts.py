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
from dataclasses import asdict
from datetime import datetime
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.ledger import Reason
from flows.plan import CampaignPlan
from flows.schedule import WaveRunAction
from flows.store import find_event
from promo.db import session_scope
from promo.domain.event import EventSpec
from promo.domain.names import EXPLAINED, OUTCOME_COLUMNS
from promo.report.series import event_forecast, event_report, series_of
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


def publish_summary(event_slug: str, wave: str, outcomes: dict[str, dict[str, int]],
                     explained: list[Reason], later: datetime | None,
                     follow_up: str | None, footer: str = "") -> None:
    totals: Counter = Counter()
    for row in outcomes.values():
        totals.update(row)
    lines = [f"# {event_slug} · {wave}", ""]
    lines.append(", ".join(f"**{c}** {totals[c]}" for c in OUTCOME_COLUMNS if totals.get(c))
                 or "No decisions: nobody in the audience.")
    lines.append("")
    for status in EXPLAINED:
        rows = [r for r in explained if r.status == status]
        if not rows:
            continue
        lines += [f"## {status.capitalize()} ({totals[status]})", "",
                  "| channel | why | how many | for example |", "|---|---|---:|---|"]
        for r in rows:
            lines.append(f"| {r.channel} | {r.reason.replace('|', '/')} | {r.count} "
                         f"| {', '.join(r.examples) or '-'} |")
        lines.append("")
    if later is not None:
        if follow_up:
            lines.append(f"Held messages are due from {later:%Y-%m-%d %H:%M} UTC: a follow-up run "
                         f"of this wave is scheduled then (flow run `{follow_up}`).")
        else:
            lines.append(f"Held messages are due from {later:%Y-%m-%d %H:%M} UTC: run the wave "
                         f"again then (deployed waves schedule it themselves).")
    if footer:
        lines += ["", footer]
    create_markdown_artifact(
        key=f"{dashed(event_slug)}-{dashed(wave)}-summary",
        markdown="\n".join(lines) + "\n",
        description=f"{event_slug}, {wave}: what happened and why (addresses masked)",
    )


def publish_plan(spec: EventSpec, plan: CampaignPlan, clock: datetime) -> None:
    """The plan as a table: per wave and channel, when, and how many contacts each outcome
    would get (the preview: the ledger for what was decided, predicted for the rest)."""
    from flows.preview import preview_campaign

    settings = get_settings()
    with session_scope(settings.database_url) as s:
        preview = preview_campaign(s, spec, clock, settings)
    rows: list[dict[str, Any]] = []
    for w in preview["waves"]:
        at = datetime.fromisoformat(w["send_at"]).astimezone(spec.zone).strftime(
            "%Y-%m-%d %H:%M %Z") if w["send_at"] else ""
        per_channel = w["outcomes"] or {c: {} for c in w["channels"]}
        for channel in w["channels"]:
            counts = per_channel.get(channel, {})
            rows.append({"wave": w["name"], "time": at, "status": w["status"],
                         "channel": channel, "mode": w["mode"],
                         **{c: counts.get(c, 0) for c in OUTCOME_COLUMNS},
                         "note": w["note"]})
    create_table_artifact(
        key=f"{spec.slug}-plan",
        table=rows,
        description=(f"Campaign plan for {spec.title}: contacts per wave, channel and outcome "
                     f"as of {clock:%Y-%m-%d %H:%M} UTC (later waves predicted from today's "
                     f"contacts, registrations and caps)"),
    )


def publish_schedule(spec: EventSpec, actions: list[WaveRunAction], *, cancelled: bool) -> None:
    lines = [f"# {spec.slug}: wave runs", ""]
    if cancelled:
        lines += [("The event is **cancelled** (`cancelled: true`): its pending wave runs are "
                   "cancelled and nothing more is sent."), ""]
    if actions:
        lines += ["| wave | send at (UTC) | what the campaign did | flow run |", "|---|---|---|---|"]
        lines += [f"| {a['wave']} | {a['send_at'] or '-'} | {a['action']} | "
                  f"`{a['flow_run_id'] or '-'}` |" for a in map(asdict, actions)]
    else:
        lines.append("No wave runs.")
    create_markdown_artifact(key=f"{spec.slug}-wave-runs", markdown="\n".join(lines) + "\n",
                             description=f"{spec.slug}: the wave runs the campaign scheduled")


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
        r = event_report(s, row, now, settings)
        png = draw(s, row, now, settings, series_of(row), ARTIFACT_DPI) if picture else None
        s.rollback()
    came = ("attendance not known yet" if r["attended"] is None else
            f"{r['attended']} came ({r['show_up_rate']:.0%}), {r['walk_ins']} walk-ins; "
            f"{r['new_attendees']} new, {r['returning_attendees']} returning")
    lines = [f"# {r['title']} · report", "",
             (f"{r['event']}, series **{r['series']}**, {r['starts_at']} ({r['status']}); "
             f"as of {now:%Y-%m-%d %H:%M} UTC"), "",
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
