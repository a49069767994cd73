"""The series report as a Prefect artifact: a markdown artifact with the per-wave table, the
attendance, the forecast and the picture (a PNG embedded as a `data:` URI, so that the
artifact needs no file server). The campaign run and the daily run publish it; the
reminder wave's summary carries the forecast line."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from promo.db import session_scope
from promo.report.series import event_report, series_of
from promo.settings import get_settings

# the picture in the artifact: small enough for the API (about 60-90 kB of base64)
ARTIFACT_DPI = 70


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())


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
    from flows.store import find_event
    from promo.report.plot import picture as draw

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
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=f"{_slug(slug)}-report", markdown=report_markdown(slug, now),
                             description=f"{slug}: what the waves did, who came, the forecast")


def reminder_forecast(slug: str, now: datetime) -> str:
    """The forecast line for the reminder wave's summary."""
    from flows.store import find_event
    from promo.report.series import event_forecast

    with session_scope(get_settings().database_url) as s:
        f = event_forecast(s, find_event(s, slug), now)
        s.rollback()
    return forecast_line(f)
