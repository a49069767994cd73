"""What a campaign will do, without sending: the plan per wave with predicted outcomes, and
why one person did or did not get a message.

Waves already decided show the ledger; waves to come are predicted with the same
decision function the wave runs, each wave counting what the earlier ones will send.
Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.segments import load_recipients
from channels.context import LANGUAGES
from channels.samples import content_estimate
from flows.account import account_of, wave_account
from flows.decide import Decision, decide_wave, summarize
from flows.digest import decide_digest, digest_rules
from flows.ledger import load_histories, wave_outcomes
from flows.plan import CampaignPlan, plan_campaign
from flows.wave import decide, wave_rules
from promo.db.models import Contact, ContactTopic, Event, Message, Registration
from promo.domain.digest import DigestSpec
from promo.domain.event import EventSpec
from promo.domain.names import DIGEST, GOING, Status
from promo.errors import UserError
from promo.settings import Settings


def _event_row(session: Session, spec: EventSpec) -> Event:
    """The stored event, or an unsaved stand-in for one not stored yet (no registrations)."""
    row = session.scalar(select(Event).where(Event.slug == spec.slug))
    if row is None:
        row = Event(id=-1, slug=spec.slug, title=spec.title, starts_at=spec.starts_at,
                    timezone=spec.timezone, topic=spec.topic, language=spec.language,
                    definition={})
    return row


def _content(spec: EventSpec, wave: str, channels: list[str], outcomes: dict[str, dict[str, int]],
             settings: Settings, override: str | None) -> tuple[dict[str, Any], float]:
    """Per channel: the sample message's segments and price in each language, and the
    wave's estimated cost (messages that go, priced in the event's language)."""
    content: dict[str, Any] = {}
    total = 0.0
    for channel in channels:
        per_lang = {lang: content_estimate(spec, wave, channel, lang, override, settings=settings)
                    for lang in LANGUAGES}
        main = per_lang.get(spec.language) or next(iter(per_lang.values()))
        row = outcomes.get(channel, {})
        going = sum(row.get(k, 0) for k in GOING)
        cost = round(going * main["cost_per_message"], 4)
        total += cost
        content[channel] = {
            "segments": {lang: e["segments"] for lang, e in per_lang.items()},
            "cost_per_message": {lang: e["cost_per_message"] for lang, e in per_lang.items()},
            "estimated_cost": cost,
        }
    return content, round(total, 4)


def preview_campaign(session: Session, spec: EventSpec, now: datetime,
                     settings: Settings, override: str | None = None) -> dict[str, Any]:
    """The campaign as data: per wave, when, channels, mode, and outcome counts.

    A wave that ran (it has decisions in the ledger) has `"status": "ran"` and shows the
    ledger: `outcomes[channel][outcome]` are its counts, `people` its account per person,
    `first_sent_at`/`last_sent_at` when it sent. A wave to come shows the prediction, made
    with the same decisions the wave will make (`"predicted": true`); a cancelled event's
    waves that did not run are `cancelled`. `content[channel]` has the SMS segments and
    price of the sample message and the wave's estimated cost.
    """
    plan = plan_campaign(spec, now)
    row = _event_row(session, spec)
    caps = settings.cap_rules()
    span = max((c.window for c in caps.values()), default=None)
    histories: dict[int, dict[str, list[datetime]]] | None = None
    waves = []
    for w in plan.waves:
        entry: dict[str, Any] = {
            "name": w.name,
            "send_at": w.send_at.isoformat() if w.send_at else None,
            "scheduled_at": w.scheduled_at.isoformat(),
            "status": w.status,
            "note": w.note,
            "channels": list(w.spec.channels),
            "mode": w.spec.mode,
            "outcomes": {},
            "audience": 0,
        }
        account = wave_account(session, row.id, w.name) if row.id != -1 else None
        if account is not None and account.ran:
            # the ledger says what it did, whatever the plan would say about it today
            people = account.as_dict()
            entry.update(status="ran", note="", outcomes=wave_outcomes(session, row.id, w.name),
                         predicted=False, people=people, audience=account.people,
                         first_sent_at=people["first_sent_at"],
                         last_sent_at=people["last_sent_at"])
        elif spec.cancelled:
            entry.update(status="cancelled", send_at=None,
                         note="the event is cancelled (cancelled: true): nothing is sent")
            waves.append(entry)
            continue
        elif w.send_at is not None:
            at = max(w.send_at, now)
            rules = wave_rules(spec, plan, w.name, at, settings)
            if histories is None:  # once, around the first wave: the campaign spans < 22 days
                histories = load_histories(session, at, span * 2) if span else {}
            decisions, entry["audience"] = decide(session, row, rules, histories)
            entry["outcomes"] = summarize(decisions)
            entry["predicted"] = True
            entry["people"] = account_of(
                (d.contact_id, d.channel, d.status, d.reason) for d in decisions).as_dict()
        else:
            waves.append(entry)
            continue
        entry["content"], entry["estimated_cost"] = _content(
            spec, w.name, list(w.spec.channels), entry["outcomes"], settings, override)
        entry["currency"] = settings.currency
        waves.append(entry)
    return {"event": spec.slug, "title": spec.title, "starts_at": spec.starts_at.isoformat(),
            "now": now.isoformat(), "cancelled": spec.cancelled, "waves": waves}


@dataclass
class Explanation:
    wave: str
    channel: str | None
    status: str
    reason: str | None
    send_at: str | None
    sent_at: str | None
    source: str  # ledger | predicted | plan


def explain(session: Session, contact: Contact, spec: EventSpec, now: datetime,
            settings: Settings) -> list[Explanation]:
    """Every decision for this person and this event, with its reason: from the ledger for
    the waves that ran, predicted for those to come."""
    row = _event_row(session, spec)
    try:
        plan: CampaignPlan | None = plan_campaign(spec, now)
    except UserError:
        plan = None  # the event started: only the ledger can say
    out: list[Explanation] = []
    rows = session.execute(
        select(Message).where(Message.event_id == row.id, Message.contact_id == contact.id)
        .order_by(Message.id)
    ).scalars().all()
    decided = {m.wave for m in rows}
    for m in rows:
        out.append(Explanation(m.wave, m.channel, m.status, m.reason,
                               m.send_at.isoformat() if m.send_at else None,
                               m.sent_at.isoformat() if m.sent_at else None, "ledger"))
    if isinstance(spec, DigestSpec):  # a series' digest: its own audience and rules
        if DIGEST not in decided and now < spec.starts_at:
            decisions, _ = decide_digest(session, row, spec, digest_rules(spec, now, settings),
                                         only=contact.id)
            out.extend(_from_decision(DIGEST, d) for d in decisions)
            if not decisions:
                out.append(Explanation(DIGEST, None, "not in audience", (
                    f"follows no topic of {spec.digest_series} and registered for none of its "
                    f"events"), None, None, "predicted"))
        return out
    if plan is None:
        return out
    for w in plan.waves:
        if w.name in decided:
            continue
        if w.send_at is None:
            out.append(Explanation(w.name, None, Status.dropped, w.note, None, None, "plan"))
            continue
        at = max(w.send_at, now)
        rules = wave_rules(spec, plan, w.name, at, settings)
        me = load_recipients(session, row, list(rules.channels),
                             registrants_only=not rules.promotional, only=contact.id)
        if not me:
            out.append(Explanation(w.name, None, "not in audience",
                                   _why_not_in_audience(session, contact, row, w.name),
                                   None, None, "predicted"))
            continue
        span = max((c.window for c in rules.caps.values()), default=None)
        histories = load_histories(session, at, span, [contact.id]) if span else {}
        for d in decide_wave(rules, me, histories):
            if d.contact_id is None:
                continue
            out.append(_from_decision(w.name, d))
    return out


def _from_decision(wave: str, d: Decision) -> Explanation:
    return Explanation(wave, d.channel, d.status, d.reason,
                       d.send_at.isoformat() if d.send_at else None, None, "predicted")


def _why_not_in_audience(session: Session, contact: Contact, event: Event, wave: str) -> str:
    if wave == "reminder":
        return "not registered for the event: the reminder goes to registrants only"
    topics = set(session.scalars(select(ContactTopic.topic).where(
        ContactTopic.contact_id == contact.id)))
    attended = session.scalar(select(Registration.id).join(Event, Event.id == Registration.event_id)
                              .where(Registration.contact_id == contact.id,
                                     Registration.attended.is_(True), Event.topic == event.topic))
    if event.topic not in topics and attended is None:
        follows = ", ".join(sorted(topics)) or "no topics"
        return (f"does not follow {event.topic!r} (follows: {follows}) and attended no "
                f"{event.topic} event before")
    return "not in the wave's audience"
