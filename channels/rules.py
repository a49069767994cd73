"""Frequency caps and quiet hours: each rule computed in one function that the planner,
the send-time check and the preview all call."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from promo.settings import Cap, SendWindow

DIRECT = "direct"

# ledger statuses that mean "this message went (or may have gone) out": they count for caps
SENT_STATUSES = ("sending", "sent", "delivered", "uncertain")


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
    history: Mapping[str, Sequence[datetime]],
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
