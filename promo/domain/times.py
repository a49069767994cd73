"""How every view shows a time: in the event's zone (or the contact's, where that is the
point), to the minute, with the zone named. One function, so the plan, the artifacts, the
logs, `promo why` and `promo run` never disagree about what "11:00" means."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def check_zone(value: str) -> str:
    """The IANA zone name itself, or a ValueError that says what is wrong (for validators)."""
    try:
        ZoneInfo(value)
    # a name too long for a file name is an OSError
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{value[:100]!r} is not an IANA time zone (like Europe/Moscow)"
                         ) from None
    return value


def shown(t: datetime | str | None, zone: str | ZoneInfo | None, empty: str = "-") -> str:
    """`2026-12-01 11:00 MSK`: the time in `zone` (UTC when None), to the minute.

    The zone is named by its abbreviation when it has one of letters (MSK, CET, UTC), else
    by its IANA name (`Asia/Yekaterinburg`, whose abbreviation is only `+05`). A string is
    read as ISO 8601; a naive time is taken as UTC (the store keeps UTC)."""
    if t is None or t == "":
        return empty
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    tz = ZoneInfo(zone) if isinstance(zone, str) else (zone or UTC)
    local = t.astimezone(tz)
    abbr = local.strftime("%Z")
    if not abbr.isalpha():
        abbr = getattr(tz, "key", None) or abbr
    return f"{local:%Y-%m-%d %H:%M} {abbr}"
