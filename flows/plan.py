"""The campaign plan: which waves run, when, and which a late campaign drops and why.

Plain functions, no Prefect: the flows, the preview and the tests all call these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from promo.domain.event import EventSpec
from promo.domain.names import PROMOTIONAL_WAVES, WaveStatus
from promo.domain.waves import MAX_DAYS_BEFORE, WaveSpec
from promo.errors import PlanError

# A late promotional wave is still sent at once when the next promotional wave is at
# least this far away; closer than that, the next wave carries the message instead.
LATE_WAVE_MIN_GAP = timedelta(days=2)
# ... and the last promotional wave is still sent late when the event is at least this far away.
LATE_LAST_WAVE_MIN_LEAD = timedelta(hours=12)
# A wave whose run starts this soon after its time is on time, not late: a scheduled wave
# run starts a moment after its time (a worker's poll, a process start), and the late rules
# above would drop it whenever the next wave is less than LATE_WAVE_MIN_GAP away.
ON_TIME_GRACE = timedelta(minutes=5)


@dataclass
class WavePlan:
    name: str
    spec: WaveSpec
    scheduled_at: datetime  # when the campaign asks for it
    send_at: datetime | None  # when it goes: scheduled_at, or now for a late wave; None if dropped
    status: WaveStatus  # scheduled | late (sent at once) | dropped
    note: str = ""

    @property
    def promotional(self) -> bool:
        return self.name in PROMOTIONAL_WAVES


@dataclass
class CampaignPlan:
    event: EventSpec
    now: datetime
    waves: list[WavePlan] = field(default_factory=list)

    def wave(self, name: str) -> WavePlan:
        for wave in self.waves:
            if wave.name == name:
                return wave
        raise PlanError(f"{self.event.slug}: the campaign has no {name!r} wave")

    @property
    def active(self) -> list[WavePlan]:
        return [w for w in self.waves if w.send_at is not None]


def earliest_promotion(event: EventSpec) -> datetime:
    return event.starts_at - timedelta(days=MAX_DAYS_BEFORE)


def check_rules(event: EventSpec) -> None:
    """Refuse a campaign that breaks the rules, whatever the clock says."""
    waves = event.campaign.waves()
    promotional = [n for n in waves if n in PROMOTIONAL_WAVES]
    if len(promotional) > 2:  # the YAML shape allows no more; guard the invariant anyway
        raise PlanError(f"{event.slug}: more than two promotional waves ({', '.join(promotional)})")
    limit = earliest_promotion(event)
    for name in promotional:
        at = event.wave_time(waves[name])
        if at < limit:
            raise PlanError(
                f"{event.slug}: {name} at {at:%Y-%m-%d %H:%M %Z} is more than {MAX_DAYS_BEFORE} "
                f"days before the start ({event.local_start:%Y-%m-%d %H:%M %Z}); promotion "
                f"starts no earlier than {limit.astimezone(event.zone):%Y-%m-%d %H:%M %Z}"
            )
        if at >= event.starts_at:
            raise PlanError(f"{event.slug}: {name} at {at:%Y-%m-%d %H:%M %Z} is not before the start")
    if "announce" in waves and "last_call" in waves:
        announce, last_call = (event.wave_time(waves[n]) for n in ("announce", "last_call"))
        if announce >= last_call:
            raise PlanError(
                f"{event.slug}: the announce ({announce:%Y-%m-%d %H:%M}) must come before the "
                f"last call ({last_call:%Y-%m-%d %H:%M})")
    if "reminder" in waves:
        at = event.wave_time(waves["reminder"])
        if at >= event.starts_at:
            raise PlanError(f"{event.slug}: the reminder at {at:%Y-%m-%d %H:%M %Z} is not before the start")


def plan_campaign(event: EventSpec, now: datetime) -> CampaignPlan:
    """Plan the campaign's waves as of `now`.

    Refuses (PlanError) what breaks the rules or an event already started. A wave whose
    time has passed is sent at once if that still makes sense, otherwise dropped with a note.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    check_rules(event)
    if now >= event.starts_at:
        raise PlanError(
            f"{event.slug}: the event started at {event.local_start:%Y-%m-%d %H:%M %Z}; "
            f"it is in the past, nothing to promote"
        )
    plan = CampaignPlan(event=event, now=now)
    waves = event.campaign.waves()
    promo_times = {n: event.wave_time(waves[n]) for n in waves if n in PROMOTIONAL_WAVES}
    for name, spec in waves.items():
        at = event.wave_time(spec)
        if at >= now - ON_TIME_GRACE:
            plan.waves.append(WavePlan(name, spec, at, at, WaveStatus.scheduled))
            continue
        missed = f"its time {at.astimezone(event.zone):%Y-%m-%d %H:%M} has passed"
        if name == "reminder":
            if now.astimezone(event.zone).date() == at.astimezone(event.zone).date():
                plan.waves.append(WavePlan(name, spec, at, now, WaveStatus.late, f"{missed}; sent at once"))
            else:
                plan.waves.append(WavePlan(
                    name, spec, at, None, WaveStatus.dropped,
                    f"{missed} and it is no longer the day before the event"))
            continue
        later = [t for n, t in promo_times.items() if t > at]
        if later:
            gap = later[0] - now
            if gap >= LATE_WAVE_MIN_GAP:
                plan.waves.append(WavePlan(name, spec, at, now, WaveStatus.late, f"{missed}; sent at once"))
            else:
                plan.waves.append(WavePlan(
                    name, spec, at, None, WaveStatus.dropped,
                    f"{missed} and the next wave follows in {_human(gap)}"))
        else:
            lead = event.starts_at - now
            if lead >= LATE_LAST_WAVE_MIN_LEAD:
                plan.waves.append(WavePlan(name, spec, at, now, WaveStatus.late, f"{missed}; sent at once"))
            else:
                plan.waves.append(WavePlan(
                    name, spec, at, None, WaveStatus.dropped,
                    f"{missed} and the event starts in {_human(lead)}"))
    return plan


def _human(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    if hours >= 48:
        return f"{hours // 24} days"
    if hours >= 1:
        return f"{hours} h"
    return f"{max(int(delta.total_seconds() // 60), 0)} min"
