"""Fallback after a permanent failure: in a `fallback` wave, a contact whose message failed
for good on one channel (a blocked bot, an invalid number) gets the wave on their next
eligible channel, in the same wave, under the same caps: decided by `decide_wave` (so by
`judge`) over the channels after the failed one, and recorded like any decision, due now.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.segments import load_recipients
from flows.decide import WaveRules, decide_wave
from flows.ledger import load_histories, record_decisions
from flows.plan import plan_campaign
from flows.store import event_spec
from flows.wave import wave_rules
from promo.db.models import Event, Message
from promo.domain.names import Status
from promo.errors import UserError
from promo.settings import Settings

# the reason a fallback decision carries until it is sent ("fallback: telegram failed: ...")
FALLBACK = "fallback: "


def fall_back(session: Session, failures: list[tuple[int, str, int, str, str]], now: datetime,
              settings: Settings) -> int:
    """For each (event id, wave, contact id, failed channel, why) of a fallback wave, decide
    the contact's next channel; returns how many new decisions were recorded."""
    added = 0
    # a group's failures share their event and wave: its rules are read once
    waves: dict[tuple[int, str], tuple[Event, WaveRules] | None] = {}
    for event_id, wave, contact_id, failed, why in failures:
        if (event_id, wave) not in waves:
            waves[(event_id, wave)] = _fallback_wave(session, event_id, wave, now, settings)
        found = waves[(event_id, wave)]
        if found is None:
            continue
        row, rules = found
        tried = set(session.scalars(select(Message.channel).where(
            Message.event_id == event_id, Message.wave == wave,
            Message.contact_id == contact_id)))
        channels = list(rules.direct_channels)
        after = channels[channels.index(failed) + 1:] if failed in channels else []
        remaining = [c for c in after if c not in tried]
        if not remaining:
            continue
        rules = replace(rules, channels=remaining)
        me = load_recipients(session, row, remaining, registrants_only=not rules.promotional,
                             only=contact_id)
        span = max((c.window for c in rules.caps.values()), default=None)
        histories = load_histories(session, now, span, [contact_id]) if span else {}
        story = f"{FALLBACK}{failed} failed: {why}"[:300]
        decisions = [d._replace(reason=story) if d.status is Status.planned else d
                     for d in decide_wave(rules, me, histories) if d.contact_id is not None]
        record_decisions(session, row, wave, decisions, counts_for_caps=rules.counts_for_caps)
        added += len(decisions)
    return added


def _fallback_wave(session: Session, event_id: int, wave: str, now: datetime,
                   settings: Settings) -> tuple[Event, WaveRules] | None:
    """The event and the wave's rules, or None when nothing more falls back there (the event
    is gone, cancelled or started, or the wave is not a fallback wave)."""
    row = session.get(Event, event_id)
    if row is None or row.cancelled_at is not None:
        return None
    spec = event_spec(row)
    try:
        plan = plan_campaign(spec, now)
    except UserError:
        return None  # the event started: nothing more goes
    if plan.wave(wave).spec.mode != "fallback":
        return None
    return row, wave_rules(spec, plan, wave, now, settings)
