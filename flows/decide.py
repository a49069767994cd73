"""Who gets a wave, on which channel, when, and why not: one decision per contact and channel.

Plain functions over plain data so that a million contacts plan in seconds and the
rules can be tested without a database. The same rule functions (`channels.rules`)
are called again at send time, inside a transaction, before anything goes out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from channels.rules import add_to_history, cap_violation, next_send_time
from flows.events import BROADCAST_CHANNELS
from promo.settings import Cap, SendWindow

# the outcomes of a decision and of its sending, in the order the plan shows them
OUTCOMES = ("planned", "deferred", "sent", "delivered", "capped", "suppressed", "dropped",
            "failed", "uncertain")


class Recipient(NamedTuple):
    """A contact as the planner sees them.

    `blocked` maps each direct channel to why it cannot carry a message to this contact
    (no address, no consent, opted out, unreachable), or to None when it can.
    """

    id: int
    timezone: str | None
    blocked: Mapping[str, str | None]
    registered: bool = False


class Decision(NamedTuple):
    contact_id: int | None
    channel: str
    status: str  # planned | deferred | capped | suppressed | dropped
    reason: str | None
    send_at: datetime | None


@dataclass
class WaveRules:
    """Everything the decisions of one wave depend on, besides the contacts."""

    event_slug: str
    wave: str
    channels: Sequence[str]
    mode: str  # fallback | all
    send_at: datetime
    starts_at: datetime
    event_timezone: str
    caps: Mapping[str, Cap]
    windows: Mapping[str, SendWindow]
    promotional: bool = True
    counts_for_caps: bool = True
    # the campaign's reminder, so that a promotional wave keeps a registrant-to-be's slot free
    reminder_at: datetime | None = None
    reminder_channels: Sequence[str] = field(default_factory=tuple)

    @property
    def direct_channels(self) -> list[str]:
        return [c for c in self.channels if c not in BROADCAST_CHANNELS]

    @property
    def broadcast_channels(self) -> list[str]:
        return [c for c in self.channels if c in BROADCAST_CHANNELS]


def _reserve_reason(
    rules: WaveRules, history: dict[str, list[datetime]], channel: str, at: datetime
) -> str | None:
    """The cap a message now would leave too full for the reminder on the same channel."""
    if (
        rules.reminder_at is None
        or not rules.promotional
        or channel not in rules.reminder_channels
        or channel not in rules.caps
    ):
        return None
    cap = rules.caps[channel]
    if rules.reminder_at - at >= cap.window:
        return None
    trial = {channel: list(history.get(channel, ()))}
    add_to_history(trial, channel, at)
    # only the channel's own cap: the cross-channel cap binds every channel alike
    if cap_violation(trial, channel, rules.reminder_at, {channel: cap}):
        return f"kept for the reminder ({channel}: {cap})"
    return None


def decide_wave(
    rules: WaveRules,
    recipients: Iterable[Recipient],
    histories: dict[int, dict[str, list[datetime]]],
) -> list[Decision]:
    """Decide the wave for every recipient; `histories` gains what is planned here.

    Fallback mode: one channel per contact, the first in the wave's list that can carry
    the message now, preferring one that is inside its send window and leaves the
    reminder room; all mode: every channel that can.
    """
    out: list[Decision] = []
    append = out.append
    channels = rules.direct_channels
    send_at, starts_at = rules.send_at, rules.starts_at
    caps, windows = rules.caps, rules.windows
    fallback = rules.mode == "fallback"
    counts = rules.counts_for_caps
    # quiet hours depend only on the zone: compute each zone's next send time once
    when_cache: dict[tuple[str, str], datetime] = {}

    def when(channel: str, tz: str) -> datetime:
        key = (channel, tz)
        t = when_cache.get(key)
        if t is None:
            t = when_cache[key] = next_send_time(send_at, tz, windows.get(channel))
        return t

    # a wave of public posts only decides nothing per contact
    for r in recipients if channels else ():
        if rules.promotional and r.registered:
            append(Decision(r.id, channels[0], "suppressed", "registered", None))
            continue
        tz = r.timezone or rules.event_timezone
        history = histories.get(r.id)
        best: tuple[tuple[int, int], str, datetime, str | None] | None = None
        kept: list[tuple[str, str]] = []
        for channel in channels:
            why = r.blocked.get(channel, "no address")
            if why is not None:
                append(Decision(r.id, channel, "suppressed", why, None))
                continue
            at = when(channel, tz)
            if at >= starts_at:
                window = windows.get(channel)
                append(Decision(r.id, channel, "dropped",
                                f"quiet hours ({window}): opens only after the start", None))
                continue
            if counts and history is not None:
                violation = cap_violation(history, channel, at, caps)
                if violation:
                    append(Decision(r.id, channel, "capped", violation, None))
                    continue
            deferred = at > send_at
            if not fallback:
                _plan(out, histories, r.id, channel, at, deferred, rules, counts)
                history = histories.get(r.id)
                continue
            reserve = _reserve_reason(rules, history or {}, channel, at) if counts else None
            if reserve:
                kept.append((channel, reserve))
            rank = (1 if reserve else 0, 1 if deferred else 0)
            if best is None or rank < best[0]:
                best = (rank, channel, at, reserve)
            if rank == (0, 0):
                break
        if fallback and best is not None:
            rank, channel, at, reserve = best
            # a channel passed over to keep the reminder's slot: recorded as capped by that rule
            for skipped, why in kept:
                if skipped != channel:
                    append(Decision(r.id, skipped, "capped", why, None))
            _plan(out, histories, r.id, channel, at, rank[1] == 1, rules, counts)
    for channel in rules.broadcast_channels:
        append(Decision(None, channel, "planned", "public post, once per wave", send_at))
    return out


def _plan(
    out: list[Decision],
    histories: dict[int, dict[str, list[datetime]]],
    contact_id: int,
    channel: str,
    at: datetime,
    deferred: bool,
    rules: WaveRules,
    counts: bool,
) -> None:
    if deferred:
        window = rules.windows.get(channel)
        out.append(Decision(contact_id, channel, "deferred", f"quiet hours ({window})", at))
    else:
        out.append(Decision(contact_id, channel, "planned", None, at))
    if counts:
        add_to_history(histories.setdefault(contact_id, {}), channel, at)


def summarize(decisions: Iterable[Decision]) -> dict[str, dict[str, int]]:
    """channel -> outcome -> count."""
    table: dict[str, dict[str, int]] = {}
    for d in decisions:
        row = table.setdefault(d.channel, {})
        row[d.status] = row.get(d.status, 0) + 1
    return table
