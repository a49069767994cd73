"""The series report: per event, what the waves did (reached, clicks, registrations, opt-outs,
money) and who came; per series, the same for its events in time order; for an event to
come, the show-up forecast. Everything is computed from the store (the ledger, the
registrations, the clicks), never kept: the report of a past event is the same every time.

`event_report(...)` returns the object `promo report EVENT --json` prints; its keys `event`,
`series`, `registered`, `attended`, `show_up_rate`, `registrations_by` and `forecast` are a
contract for scripts (issue 16): add keys, never rename them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flows.store import series_events
from promo.db.models import Consent, Contact, Event, LinkClick, Message, Registration
from promo.domain.event import EventSpec
from promo.domain.names import WAVES
from promo.report.attribution import REACHED, Attribution, attribute
from promo.report.forecast import PastEvent, Registrant, forecast
from promo.settings import Settings

_WAVE_ORDER = {w: i for i, w in enumerate(WAVES)}
DAY = 86400.0


def _key(wave: str | None, channel: str | None) -> tuple[int, str]:
    return (_WAVE_ORDER.get(wave or "", 99), channel or "~")


def _spec(row: Event) -> EventSpec | None:
    """The stored event file, when it is a whole one (history added by hand may not be)."""
    try:
        return EventSpec.model_validate({k: v for k, v in row.definition.items()
                                         if not k.startswith("_")})
    except ValidationError:
        return None


def series_of(row: Event) -> str:
    return row.series or row.topic or row.slug


def attendance_known(session: Session, event_id: int) -> bool:
    return session.scalar(select(func.count()).select_from(Registration).where(
        Registration.event_id == event_id, Registration.attended.is_not(None))) > 0


def history(session: Session, row: Event) -> list[PastEvent]:
    """The series' events before this one whose attendance is known, oldest first, as the
    forecast reads them."""
    past = session.scalars(select(Event).where(
        Event.series == series_of(row), Event.starts_at < row.starts_at, Event.id != row.id,
        Event.cancelled_at.is_(None)).order_by(Event.starts_at, Event.id)).all()
    out = []
    for e in past:
        regs = session.execute(select(Registration.contact_id, Registration.registered_at,
                                      Registration.attended)
                               .where(Registration.event_id == e.id,
                                      Registration.walk_in.is_(False))).all()
        if not any(a is not None for _, _, a in regs):
            continue
        out.append(PastEvent(tuple(
            (cid, (e.starts_at - at).total_seconds() / DAY, bool(a)) for cid, at, a in regs)))
    return out


def event_forecast(session: Session, row: Event, now: datetime) -> dict[str, Any] | None:
    """The show-up forecast for an event that has not started; None after."""
    if now >= row.starts_at:
        return None
    regs = session.execute(select(Registration.contact_id, Registration.registered_at)
                           .where(Registration.event_id == row.id,
                                  Registration.walk_in.is_(False),
                                  Registration.registered_at <= now)).all()
    f = forecast(history(session, row), [
        Registrant(cid, (row.starts_at - at).total_seconds() / DAY) for cid, at in regs],
        days_left=(row.starts_at - now).total_seconds() / DAY)
    return {**f.as_dict(), "as_of": now.isoformat(),
            "counts": "those registered so far; registrations still to come add to it"}


def attributions(session: Session, row: Event) -> list[tuple[Registration, Attribution]]:
    """Every registration of the event (walk-ins too) with what brought it."""
    regs = session.scalars(select(Registration).where(Registration.event_id == row.id)
                           .order_by(Registration.registered_at, Registration.id)).all()
    sent: dict[int, list[tuple[datetime, str, str]]] = defaultdict(list)
    for cid, at, wave, channel in session.execute(
            select(Message.contact_id, Message.sent_at, Message.wave, Message.channel)
            .where(Message.event_id == row.id, Message.contact_id.is_not(None),
                   Message.status.in_(REACHED), Message.sent_at.is_not(None))
            .order_by(Message.sent_at, Message.id)):
        sent[cid].append((at, wave, channel))
    return [(r, Attribution(None, None, "walk_in") if r.walk_in else attribute(
        row.slug, registered_at=r.registered_at, utm_source=r.utm_source,
        utm_campaign=r.utm_campaign, utm_content=r.utm_content, short_link=r.short_link,
        messages=sent.get(r.contact_id, ()))) for r in regs]


def _opt_outs(session: Session, row: Event) -> Counter:
    """Opt-outs per (wave, channel): a consent withdrawn (or everything opted out of) right
    after a message of this event: the last message the person got on that channel (any
    channel, for opting out of everything) before it, from any event, was this event's."""
    reached = select(Message.contact_id).where(
        Message.event_id == row.id, Message.status.in_(REACHED),
        Message.contact_id.is_not(None)).distinct()
    withdrawn = session.execute(select(Consent.contact_id, Consent.channel, Consent.withdrawn_at)
                                .where(Consent.contact_id.in_(reached),
                                       Consent.withdrawn_at.is_not(None))).all()
    everything = session.execute(select(Contact.id, Contact.opted_out_at).where(
        Contact.id.in_(reached), Contact.opted_out_at.is_not(None))).all()
    people = {cid for cid, *_ in withdrawn} | {cid for cid, _ in everything}
    if not people:
        return Counter()
    messages: dict[int, list[tuple[datetime, int, str, str]]] = defaultdict(list)
    for cid, at, event_id, wave, channel in session.execute(
            select(Message.contact_id, Message.sent_at, Message.event_id, Message.wave,
                   Message.channel)
            .where(Message.contact_id.in_(people), Message.status.in_(REACHED),
                   Message.sent_at.is_not(None)).order_by(Message.sent_at)):
        messages[cid].append((at, event_id, wave, channel))
    out: Counter = Counter()

    def blame(cid: int, at: datetime, channel: str | None) -> None:
        before = [m for m in messages[cid] if m[0] <= at and (channel is None or m[3] == channel)]
        if before and before[-1][1] == row.id:
            out[(before[-1][2], before[-1][3])] += 1

    for cid, channel, at in withdrawn:
        blame(cid, at, channel)
    for cid, at in everything:
        blame(cid, at, None)
    return out


def event_report(session: Session, row: Event, now: datetime,
                 settings: Settings) -> dict[str, Any]:
    """The report of one event (the `promo report EVENT --json` object)."""
    zone = ZoneInfo(row.timezone)
    spec = _spec(row)
    regs = attributions(session, row)
    registered = [r for r, _ in regs if not r.walk_in]
    walk_ins = [r for r, _ in regs if r.walk_in]
    known = any(r.attended is not None for r, _ in regs)
    attended = sum(1 for r in registered if r.attended) if known else None

    by: dict[tuple[str | None, str | None], Counter] = defaultdict(Counter)
    for r, a in regs:
        if not r.walk_in:
            by[(a.wave, a.channel)][a.how] += 1
    registrations_by = [
        {"wave": w, "channel": c, "registrations": sum(n.values()),
         "by": dict(sorted(n.items()))}
        for (w, c), n in sorted(by.items(), key=lambda kv: _key(*kv[0]))]

    reached: dict[tuple[str, str], dict[str, int]] = {}
    for wave, channel, contact, n in session.execute(
            select(Message.wave, Message.channel, Message.contact_id.is_(None),
                   func.count(func.distinct(func.coalesce(Message.contact_id, Message.id))))
            .where(Message.event_id == row.id, Message.status.in_(REACHED))
            .group_by(Message.wave, Message.channel, Message.contact_id.is_(None))):
        entry = reached.setdefault((wave, channel), {"people": 0, "posts": 0})
        entry["posts" if contact else "people"] += n
    clicks = {(w, c): n for w, c, n in session.execute(
        select(LinkClick.wave, LinkClick.channel, func.count())
        .where(LinkClick.event_id == row.id).group_by(LinkClick.wave, LinkClick.channel))}
    opt_outs = _opt_outs(session, row)
    waves = sorted(set(reached) | set(clicks) | set(opt_outs)
                   | {(w, c) for w, c in by if w and c}, key=lambda k: _key(*k))
    prices = settings.prices
    per_wave = []
    spent: Counter = Counter()
    messages: Counter = Counter()
    for w, c in waves:
        sent = reached.get((w, c), {"people": 0, "posts": 0})
        n_messages = sent["people"] + sent["posts"]
        cost = round(n_messages * prices.get(c, 0.0), 4)
        spent[c] += cost
        messages[c] += n_messages
        per_wave.append({"wave": w, "channel": c, "reached": sent["people"],
                         "posts": sent["posts"], "clicks": clicks.get((w, c), 0),
                         "registrations": sum(by.get((w, c), Counter()).values()),
                         "opt_outs": opt_outs.get((w, c), 0), "cost": cost})

    new = returning = None
    if known:
        came = [r.contact_id for r in registered if r.attended] + [r.contact_id for r in walk_ins]
        before = set(session.scalars(select(Registration.contact_id).join(
            Event, Event.id == Registration.event_id).where(
            Event.series == series_of(row), Event.starts_at < row.starts_at,
            Registration.attended.is_(True))))
        returning = sum(1 for cid in came if cid in before)
        new = len(came) - returning

    wave_times = []
    if spec is not None:
        for name, w in spec.campaign.waves().items():
            wave_times.append({"wave": name,
                               "at": spec.wave_time(w).strftime("%Y-%m-%d %H:%M %Z")})
    return {
        "event": row.slug,
        "series": series_of(row),
        "title": row.title,
        "starts_at": row.starts_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
        "timezone": row.timezone,
        "status": "upcoming" if now < row.starts_at else "past",
        "registered": len(registered),
        "attended": attended,
        "show_up_rate": (round(attended / len(registered), 3)
                         if attended is not None and registered else None),
        "walk_ins": len(walk_ins) if known or walk_ins else None,
        "people_came": attended + len(walk_ins) if attended is not None else None,
        "new_attendees": new,
        "returning_attendees": returning,
        "registrations_by": [{k: v for k, v in r.items() if k != "by"} | {"how": r["by"]}
                             for r in registrations_by],
        "waves": per_wave,
        "wave_times": wave_times,
        "cost": {"currency": settings.currency,
                 "per_channel": [{"channel": c, "messages": messages[c],
                                  "cost": round(spent[c], 4)} for c in sorted(spent)],
                 "total": round(sum(spent.values()), 4),
                 "note": "the `prices` setting per message sent (an SMS of several segments "
                         "costs more: see the plan's estimate)"},
        "forecast": event_forecast(session, row, now),
    }


def series_history(session: Session, row: Event, report: dict[str, Any], now: datetime,
                   settings: Settings) -> list[dict[str, Any]]:
    """The event_reports of `row`'s series in start order, its own (`report`, made already)
    in its place: the picture's lower half."""
    return [report if e.id == row.id else event_report(session, e, now, settings)
            for e in series_events(session, series_of(row))]


def series_report(session: Session, series: str, now: datetime, settings: Settings,
                  rows: list[Event] | None = None) -> dict[str, Any]:
    """`promo report --series S --json`: the series' events, in start order, and the trend
    (`rows`: the series' events, when the caller has them already)."""
    if rows is None:
        rows = series_events(session, series)
    events = [event_report(session, e, now, settings) for e in rows]
    return {"series": series, "events": events, "trend": trend(events)}


def _slope(values: list[float]) -> float | None:
    """The least-squares slope of values at 0, 1, 2, ...: the change per event."""
    n = len(values)
    if n < 2:
        return None
    mx, my = (n - 1) / 2, sum(values) / n
    return sum((i - mx) * (v - my) for i, v in enumerate(values)) / sum(
        (i - mx) ** 2 for i in range(n))


def trend(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Are we growing? The change per event of the registered and of the show-up rate (a
    least-squares line through the past events), and the last event against the average of
    the ones before it."""
    past = [e for e in events if e["status"] == "past"]
    rates = [e["show_up_rate"] for e in past if e["show_up_rate"] is not None]
    registered = [e["registered"] for e in past]
    slope_rate = _slope(rates)
    slope_registered = _slope([float(n) for n in registered])
    return {
        "past_events": len(past),
        "events_with_attendance": len(rates),
        "registered_per_event": None if slope_registered is None else round(slope_registered, 2),
        "show_up_rate_per_event": None if slope_rate is None else round(slope_rate, 4),
        "last_show_up_rate_vs_before": (round(rates[-1] - sum(rates[:-1]) / len(rates[:-1]), 4)
                                        if len(rates) >= 2 else None),
    }


def registration_timeline(session: Session, row: Event) -> list[tuple[datetime, str | None,
                                                                        str | None]]:
    """When each registration came and what brought it (the picture's lines)."""
    return [(r.registered_at, a.wave, a.channel) for r, a in attributions(session, row)
            if not r.walk_in]


CSV_COLUMNS = ("event", "series", "starts_at", "wave", "channel", "measure", "value")


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One report as rows of a long table (event, wave, channel, measure, value): a
    spreadsheet pivots it any way; an empty wave and channel are the event's own figures."""
    base = {"event": report["event"], "series": report["series"],
            "starts_at": report["starts_at"]}
    rows = []
    for measure in ("registered", "attended", "show_up_rate", "walk_ins", "people_came",
                    "new_attendees", "returning_attendees"):
        rows.append({**base, "wave": "", "channel": "", "measure": measure,
                     "value": "" if report[measure] is None else report[measure]})
    for w in report["waves"]:
        for measure in ("reached", "posts", "clicks", "registrations", "opt_outs", "cost"):
            rows.append({**base, "wave": w["wave"], "channel": w["channel"], "measure": measure,
                         "value": w[measure]})
    for r in report["registrations_by"]:
        if r["wave"] is None:
            rows.append({**base, "wave": r["wave"] or "", "channel": r["channel"] or "",
                         "measure": "registrations", "value": r["registrations"]})
    if report["forecast"] is not None:
        for k in ("expected", "low", "high"):
            rows.append({**base, "wave": "", "channel": "", "measure": f"forecast_{k}",
                         "value": report["forecast"][k]})
    return rows
