"""Who gets a wave, on which channel, when, and why not: one decision per contact and channel.

Plain functions over plain data so that a million contacts plan in seconds and the
rules can be tested without a database. Every decision is `promo.domain.rules.judge`'s,
the rule sequence the send-time claim (`flows.send`) calls again, inside a transaction,
before anything goes out; this module adds only the choice between channels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
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

__all__ = ["Decision", "Recipient", "WaveRules", "decide_parts", "decide_wave", "summarize"]


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
    for part in decide_parts(rules, recipients, histories, size=None):
        out += part
    return out


# the decisions of one contact without their id: (channel, status, reason, send_at) each
_Made = list[tuple[str, Status, str | None, datetime | None]]


def decide_parts(
    rules: WaveRules,
    recipients: Iterable[Recipient],
    histories: dict[int, dict[str, list[datetime]]],
    size: int | None = 50_000,
) -> Iterator[list[Decision]]:
    """`decide_wave` a part at a time: the decisions of each `size` recipients (the wave's
    public posts come with the last part), so that a part is recorded while the next is
    decided (`flows.wave`). `size` None: one part."""
    channels = rules.direct_channels
    channel_windows = [(c, rules.windows.get(c)) for c in channels]
    # quiet hours depend only on the zone: each zone's next send time per channel, once
    opens_by_zone: dict[str, dict[str, datetime]] = {}
    promotional = rules.promotional
    counts = rules.counts_for_caps
    # A contact with nothing that counts for caps yet (most of an audience) and no digest
    # spacing gets decisions that depend only on the zone, registration and standing: judged
    # once per such combination, then copied with the contact's id. Keyed by the standing
    # map's identity (contacts with one standing share one map, as `load_recipients` gives
    # them); the entry keeps the map, so that its id is never another's.
    alike: dict[tuple, tuple[Mapping[str, str | None], _Made,
                             dict[str, list[datetime]] | None]] = {}
    out: list[Decision] = []
    n = 0
    # a wave of public posts only decides nothing per contact
    for r in recipients if channels else ():
        registered = promotional and r.registered
        tz = r.timezone or rules.event_timezone
        opens = opens_by_zone.get(tz)
        if opens is None:
            opens = opens_by_zone[tz] = {c: next_send_time(rules.send_at, tz, w)
                                         for c, w in channel_windows}
        history = histories.get(r.id) if counts else None
        if history is None and not r.near:
            key = (tz, registered, id(r.blocked))
            seen = alike.get(key)
            if seen is None:
                scratch: dict[int, dict[str, list[datetime]]] = {}
                first: list[Decision] = []
                _decide_one(rules, channel_windows, opens, r, registered, None, scratch, first)
                seen = alike[key] = (r.blocked, [d[1:] for d in first], scratch.get(r.id))
            cid = r.id
            for made in seen[1]:
                out.append(Decision(cid, *made))
            if seen[2] is not None:
                histories[cid] = {c: times.copy() for c, times in seen[2].items()}
        else:
            _decide_one(rules, channel_windows, opens, r, registered, history, histories, out)
        n += 1
        if n == size:
            yield out
            out, n = [], 0
    for channel in rules.broadcast_channels:
        out.append(Decision(None, channel, Status.planned, "public post, once per wave",
                            rules.send_at))
    yield out


def _decide_one(
    rules: WaveRules,
    channel_windows: list[tuple[str, SendWindow | None]],
    opens: dict[str, datetime],
    r: Recipient,
    registered: bool,
    history: dict[str, list[datetime]] | None,
    histories: dict[int, dict[str, list[datetime]]],
    out: list[Decision],
) -> None:
    """One contact's decisions, appended to `out`."""
    append = out.append
    fallback = rules.mode == "fallback"
    counts = rules.counts_for_caps
    planned, deferred = Status.planned, Status.deferred
    blocked = r.blocked
    best: tuple[tuple[int, int], str, Verdict] | None = None
    kept: list[tuple[str, str]] = []
    for channel, window in channel_windows:
        verdict = judge(channel, rules.send_at, opens[channel], rules.starts_at, registered,
                        blocked.get(channel, "no address"), window, history, rules.caps, True,
                        r.near, rules.spacing)
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


def summarize(decisions: Iterable[Decision],
              table: dict[str, dict[str, int]] | None = None) -> dict[str, dict[str, int]]:
    """channel -> outcome -> count (added to `table` when given)."""
    table = {} if table is None else table
    for d in decisions:
        row = table.setdefault(d.channel, {})
        row[d.status] = row.get(d.status, 0) + 1
    return table
