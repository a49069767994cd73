"""The report's picture (PNG): registrations over time by wave and channel, the wave times
marked; and the series' registered-vs-came history, with the forecast for an event to come.
Drawn with matplotlib's Agg backend: no display needed, same picture everywhere."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: a worker or CI has no display
import matplotlib.dates as mdates
import matplotlib.pyplot as plt


def picture(session: Any, row: Any, current: dict[str, Any], history: list[dict[str, Any]],
            dpi: int = 100) -> bytes:
    """The PNG of an event's report (`row`, an Event; `current`, its event_report) with its
    series' history (the event_reports of `promo.report.series.series_reports`)."""
    from zoneinfo import ZoneInfo

    from promo.report.series import registration_timeline

    return render(current, registration_timeline(session, row), history, ZoneInfo(row.timezone),
                  row.starts_at, dpi)


COLORS = {"announce": "#1f77b4", "last_call": "#d62728", "reminder": "#2ca02c"}


def render(event: dict[str, Any], timeline: list[tuple[datetime, str | None, str | None]],
           series: list[dict[str, Any]], zone: Any, starts_at: datetime,
           dpi: int = 100) -> bytes:
    """The PNG: `event` is an event_report, `timeline` its registration_timeline, `series` the
    event_reports of its series in start order."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8.5), dpi=dpi,
                                      gridspec_kw={"height_ratios": [1.15, 1]})
    _registrations(top, event, timeline, zone, starts_at)
    _history(bottom, series, event["event"])
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def _registrations(ax, event: dict[str, Any], timeline, zone, starts_at: datetime) -> None:
    ax.set_title(f"{event['event']}: registrations over time, by the wave and channel that "
                 f"brought them", fontsize=11)
    lines: dict[tuple[str | None, str | None], list[datetime]] = {}
    for at, wave, channel in sorted(timeline, key=lambda t: t[0]):
        lines.setdefault((wave, channel), []).append(at.astimezone(zone))
    order = sorted(lines, key=lambda k: (-len(lines[k]), str(k)))
    start = starts_at.astimezone(zone)
    first = min([start - timedelta(days=21)] + [t[0] for t in lines.values() if t])
    styles = ("-", "--", ":", "-.")
    for i, key in enumerate(order):
        times = lines[key]
        wave, channel = key
        label = f"{wave} · {channel}" if wave else (f"? · {channel}" if channel
                                                     else "unattributed")
        color = COLORS.get(wave or "", "#7f7f7f")
        # each line runs on to the start: a flat end says nobody more came by it
        ax.step([first, *times, start], [0, *range(1, len(times) + 1), len(times)], where="post",
                label=f"{label} ({len(times)})",
                color=color, linestyle=styles[i % len(styles)], linewidth=1.8)
    for w in event.get("wave_times", []):
        at = datetime.strptime(w["at"].rsplit(" ", 1)[0], "%Y-%m-%d %H:%M").replace(tzinfo=zone)
        ax.axvline(at, color=COLORS.get(w["wave"], "black"), alpha=0.5, linewidth=1)
        ax.annotate(w["wave"], (at, 1), xycoords=("data", "axes fraction"), rotation=90,
                    va="top", ha="right", fontsize=8, color=COLORS.get(w["wave"], "black"))
    ax.axvline(start, color="black", linewidth=1.5)
    ax.annotate("start", (start, 1), xycoords=("data", "axes fraction"), rotation=90,
                va="top", ha="right", fontsize=8)
    ax.set_xlim(first - timedelta(hours=12), start + timedelta(hours=12))
    ax.set_ylabel("registrations (cumulative)")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b", tz=zone))
    ax.set_xlabel(f"date ({event['timezone']})")
    if lines:
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no registrations yet", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)


def _history(ax, series: list[dict[str, Any]], current: str) -> None:
    name = series[0]["series"] if series else ""
    ax.set_title(f"series {name}: registered and came, event after event", fontsize=11)
    xs = list(range(len(series)))
    registered = [e["registered"] for e in series]
    came = [e["attended"] or 0 for e in series]
    ax.bar([x - 0.2 for x in xs], registered, width=0.4, label="registered", color="#9ecae1")
    ax.bar([x + 0.2 for x in xs], came, width=0.4, label="came", color="#3182bd")
    for x, e in zip(xs, series, strict=True):
        if e["show_up_rate"] is not None:
            ax.annotate(f"{e['show_up_rate']:.0%}", (x + 0.2, came[x]), ha="center",
                        va="bottom", fontsize=8)
        f = e.get("forecast")
        if f is not None:
            ax.errorbar([x + 0.2], [f["expected"]], yerr=[[f["expected"] - f["low"]],
                                                        [f["high"] - f["expected"]]],
                        fmt="o", color="#e6550d", capsize=6,
                        label="forecast, 80% range")
            ax.annotate(f"{f['expected']} ({f['low']}-{f['high']})", (x + 0.2, f["high"]),
                        ha="center", va="bottom", fontsize=8, color="#e6550d")
    ax.set_xticks(xs, [e["event"] + (" ◀" if e["event"] == current else "") for e in series],
                  rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("people")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
