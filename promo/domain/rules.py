"""The rules every message follows, each computed in one function: frequency caps, quiet
hours, and `judge`, the one rule sequence that the planner (`flows.decide`), the send-time
claim (`flows.send`) and `promo why` (`flows.preview`) all call."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from promo.domain.names import BROADCAST_CHANNELS, DIRECT, Status

# a contact's messages that count for caps: channel (and DIRECT) -> sorted times
History = Mapping[str, Sequence[datetime]]


@dataclass(frozen=True)
class Cap:
    """At most `limit` messages in any rolling window of `window`."""

    limit: int
    window: timedelta

    def __str__(self) -> str:
        return f"{self.limit} per {self.window.days} days"


@dataclass(frozen=True)
class SendWindow:
    """The local times of day a channel may deliver in (start inclusive, end exclusive)."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


_CAP_RE = re.compile(r"^\s*([0-9]{1,7})\s*/\s*([0-9]{1,7})\s*d\s*$")
# a window longer than ten years caps nothing a campaign could notice, and a much longer one
# is past what a date can hold
MAX_CAP_DAYS = 3660
_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_cap(text: str) -> Cap:
    m = _CAP_RE.match(text) if isinstance(text, str) else None
    if not m or int(m.group(2)) == 0:
        raise ValueError(f"{text!r} is not a cap like '3/7d' (3 messages per 7 days)")
    if int(m.group(2)) > MAX_CAP_DAYS:
        raise ValueError(f"{text!r}: a cap's window is at most {MAX_CAP_DAYS} days")
    return Cap(int(m.group(1)), timedelta(days=int(m.group(2))))


def parse_window(text: str) -> SendWindow:
    m = _WINDOW_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"{text!r} is not a time window like '09:00-21:00'")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    try:
        start, end = time(h1, m1), time(h2, m2)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    if start >= end:
        raise ValueError(f"{text!r}: the window must start before it ends")
    return SendWindow(start, end)


# -- frequency caps ------------------------------------------------------------------------

def _fits(times: Sequence[datetime], at: datetime, cap: Cap) -> bool:
    """Would one more message at `at` keep every rolling window of `cap.window` within the limit?

    `times` is sorted. Windows are half-open, [s, s + window): a message exactly one
    window after another fits. Usually all times are in the past and only the window
    ending at `at` matters; messages planned after `at` are handled too.
    """
    w = cap.window
    lo = bisect_right(times, at - w)
    hi = bisect_left(times, at + w)
    near = times[lo:hi]
    if len(near) < cap.limit:
        return True
    # the fullest window containing `at` starts at `at` or at one of the earlier messages
    starts = [t for t in near if t <= at] + [at]
    for s in starts:
        end = s + w
        if end <= at:
            continue
        count = 1 + sum(1 for t in near if s <= t < end)
        if count > cap.limit:
            return False
    return True


def cap_violation(
    history: History,
    channel: str,
    at: datetime,
    caps: Mapping[str, Cap],
) -> str | None:
    """The cap a message on `channel` at `at` would break, as an organizer reads it, or None.

    `history` maps each direct channel to the sorted times of the contact's messages that
    count for caps (and `direct` to all of them together).
    """
    cap = caps.get(channel)
    if cap is not None and not _fits(history.get(channel, ()), at, cap):
        return f"{channel}: {cap}"
    cap = caps.get(DIRECT)
    if cap is not None and not _fits(history.get(DIRECT, ()), at, cap):
        return f"all channels: {cap}"
    return None


def add_to_history(history: dict[str, list[datetime]], channel: str, at: datetime) -> None:
    for name in (channel, DIRECT):
        times = history.setdefault(name, [])
        if not times or times[-1] <= at:
            times.append(at)
        else:
            times.insert(bisect_right(times, at), at)


# -- quiet hours ---------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def next_send_time(at: datetime, tz: str, window: SendWindow | None) -> datetime:
    """`at` itself when it falls inside the channel's send window in the contact's zone,
    otherwise the moment the window next opens there."""
    if window is None:
        return at
    z = zone(tz)
    local = at.astimezone(z)
    t = local.time()
    if window.start <= t < window.end:
        return at
    day = local.date() if t < window.start else local.date() + timedelta(days=1)
    opens = datetime.combine(day, window.start, tzinfo=z)
    return opens


# -- the rule sequence -----------------------------------------------------------------------

class Recipient(NamedTuple):
    """A contact as the planner sees them.

    `blocked` maps each direct channel to why it cannot carry a message to this contact
    (no address, no consent, opted out, unreachable), or to None when it can.
    """

    id: int
    timezone: str | None
    blocked: Mapping[str, str | None]
    registered: bool = False
    # the digest only: the promotional waves the contact got or will get for the events it
    # lists, as (when, what) (`spacing_violation`)
    near: Sequence[tuple[datetime, str]] = ()


REGISTERED = "registered"
EVENT_STARTED = "the event has started"


def spacing_violation(near: Sequence[tuple[datetime, str]], at: datetime,
                      spacing: timedelta) -> str | None:
    """The digest keeps room for the campaign waves: the promotional wave (of an event it
    lists) that a digest at `at` would come too close to, as an organizer reads it, or None."""
    for when, what in near:
        if abs(when - at) < spacing:
            return f"within {spacing.days} days of {what}"
    return None


class Verdict(NamedTuple):
    """What the rules say about one message: `planned` (it may go at `at`), `deferred`
    (held by quiet hours until `at`), or `capped`, `suppressed`, `dropped` with the reason."""

    status: Status
    reason: str | None
    at: datetime | None


# a wave judges millions of messages: the statuses as plain names (an enum member's lookup
# costs more than the rest of a check), and the verdicts that carry no time made once
_PLANNED, _DEFERRED, _CAPPED = Status.planned, Status.deferred, Status.capped
_SUPPRESSED, _DROPPED = Status.suppressed, Status.dropped
_new = tuple.__new__  # a NamedTuple's own constructor is a Python function: twice the cost
_FIXED: dict[tuple[Status, str], Verdict] = {}


def _fixed(status: Status, reason: str) -> Verdict:
    verdict = _FIXED.get((status, reason))
    if verdict is None:
        verdict = _FIXED[status, reason] = Verdict(status, reason, None)
    return verdict


def judge(
    channel: str,
    due: datetime,
    opens: datetime,
    starts_at: datetime,
    registered: bool,
    blocked: str | None,
    window: SendWindow | None,
    history: History | None,
    caps: Mapping[str, Cap],
    predict: bool,
    near: Sequence[tuple[datetime, str]] = (),
    spacing: timedelta | None = None,
) -> Verdict:
    """The rules for one message, in order: the event's start, registration, the channel's
    standing (address, consent, opt-out), quiet hours, the caps.

    `due`: when the message would go; `opens`: `next_send_time(due, ...)` in the contact's
    zone (callers compute it once per zone). `registered`: the contact registered and the
    wave is promotional. `blocked`: why the channel cannot reach the contact, or None.
    `history`: the contact's messages that count for caps, or None when this one does not.
    `predict`: the planner and `why` judge a message held by quiet hours at the time it
    will go, caps included; the send-time claim only holds it and judges the caps when it
    is due (the history may have changed by then).
    `near`, `spacing`: the digest's room for the campaign waves (`spacing_violation`),
    judged like a cap.
    """
    if due >= starts_at:
        return _fixed(_DROPPED, EVENT_STARTED)
    if channel in BROADCAST_CHANNELS:  # a public post: no contact, no cap, no quiet hours
        return _new(Verdict, (_PLANNED, None, due))
    if registered:
        return _fixed(_SUPPRESSED, REGISTERED)
    if blocked is not None:
        return _fixed(_SUPPRESSED, blocked)
    if opens >= starts_at:
        return Verdict(_DROPPED, f"quiet hours ({window}): opens only after the start", None)
    held = opens > due
    if spacing is not None and near:
        violation = spacing_violation(near, opens, spacing)
        if violation:
            return Verdict(_CAPPED, violation, None)
    if history is not None and (predict or not held):
        violation = cap_violation(history, channel, opens, caps)
        if violation:
            return Verdict(_CAPPED, violation, None)
    if held:
        return _new(Verdict, (_DEFERRED, f"quiet hours ({window})", opens))
    return _new(Verdict, (_PLANNED, None, due))
