"""Who gets a wave, on which channel, when, and why not: one decision per contact and channel.

Plain functions over plain data so that a million contacts plan in seconds and the
rules can be tested without a database. Every decision is `promo.domain.rules.judge`'s,
the rule sequence the send-time claim (`flows.send`) calls again, inside a transaction,
before anything goes out; this module adds only the choice between channels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from promo.domain.names import BROADCAST_CHANNELS, Status
from promo.domain.rules import (
    Cap,
    Recipient,
    SendWindow,
    Verdict,
    add_to_history,
    cap_violation,
    judge,
    next_send_time,
)

__all__ = ["Decision", "Recipient", "WaveRules", "decide_wave", "summarize"]


class Decision(NamedTuple):
    contact_id: int | None
    channel: str
    status: Status  # planned | deferred | capped | suppressed | dropped
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
    # the digest: kept this far from the promotional waves of the events it lists
    # (`promo.domain.rules.spacing_violation`; each recipient's `near`)
    spacing: timedelta | None = None

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
    # quiet hours depend only on the zone: each zone's next send time per channel, once
    opens_by_zone: dict[str, dict[str, datetime]] = {}
    channel_windows = [(c, windows.get(c)) for c in channels]
    promotional = rules.promotional
    spacing = rules.spacing
    planned, deferred = Status.planned, Status.deferred
    # a wave of public posts only decides nothing per contact
    for r in recipients if channels else ():
        registered = promotional and r.registered
        tz = r.timezone or rules.event_timezone
        opens = opens_by_zone.get(tz)
        if opens is None:
            opens = opens_by_zone[tz] = {c: next_send_time(send_at, tz, w)
                                         for c, w in channel_windows}
        blocked = r.blocked
        history = histories.get(r.id) if counts else None
        best: tuple[tuple[int, int], str, Verdict] | None = None
        kept: list[tuple[str, str]] = []
        for channel, window in channel_windows:
            verdict = judge(channel, send_at, opens[channel], starts_at, registered,
                            blocked.get(channel, "no address"), window, history, caps, True,
                            r.near, spacing)
            status = verdict[0]
            if status is not planned and status is not deferred:
                append(Decision(r.id, channel, status, verdict[1], None))
                if registered:
                    break  # a registrant's promotion is suppressed once, on the first channel
                continue
            if not fallback:
                _plan(out, histories, r.id, channel, verdict, counts)
                history = histories.get(r.id) if counts else None
                continue
            reserve = (_reserve_reason(rules, history or {}, channel, verdict.at)
                       if counts else None)
            if reserve:
                kept.append((channel, reserve))
            rank = (1 if reserve else 0, 1 if status is deferred else 0)
            if best is None or rank < best[0]:
                best = (rank, channel, verdict)
            if rank == (0, 0):
                break
        if fallback and best is not None:
            _, channel, verdict = best
            # a channel passed over to keep the reminder's slot: recorded as capped by that rule
            for skipped, why in kept:
                if skipped != channel:
                    append(Decision(r.id, skipped, Status.capped, why, None))
            _plan(out, histories, r.id, channel, verdict, counts)
    for channel in rules.broadcast_channels:
        append(Decision(None, channel, Status.planned, "public post, once per wave", send_at))
    return out


def _plan(
    out: list[Decision],
    histories: dict[int, dict[str, list[datetime]]],
    contact_id: int,
    channel: str,
    verdict: Verdict,
    counts: bool,
) -> None:
    out.append(Decision(contact_id, channel, *verdict))  # status, reason, send_at
    if counts:
        add_to_history(histories.setdefault(contact_id, {}), channel, verdict[2])


def summarize(decisions: Iterable[Decision]) -> dict[str, dict[str, int]]:
    """channel -> outcome -> count."""
    table: dict[str, dict[str, int]] = {}
    for d in decisions:
        row = table.setdefault(d.channel, {})
        row[d.status] = row.get(d.status, 0) + 1
    return table
