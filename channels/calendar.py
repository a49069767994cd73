"""The event as a calendar entry: an `.ics` file for emails, an "add to calendar" link for
the other channels. Built locally, nothing is fetched.

The `.ics` carries the start and end in the event's own time zone (with its VTIMEZONE), so
a calendar shows the right local time wherever the contact is. Its UID is fixed per event:
a second email (the last call, the reminder) updates the entry instead of adding another.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from icalendar import Calendar
from icalendar import Event as CalendarEvent

from promo.domain.event import EventSpec

# when the event file gives no `ends_at`: a meetup evening
DEFAULT_DURATION = timedelta(hours=2)
ICS_CONTENT_TYPE = "text/calendar"
_REGISTER = {"ru": "Регистрация", "en": "Registration"}
_ONLINE = {"ru": "Онлайн", "en": "Online"}


def event_end(event: EventSpec) -> datetime:
    return event.ends_at or event.starts_at + DEFAULT_DURATION


def _description(event: EventSpec, lang: str, registration_url: str) -> str:
    lines = [event.description] if event.description else []
    lines.append(f"{_REGISTER.get(lang, _REGISTER['en'])}: {registration_url}")
    return "\n\n".join(lines)


def _location(event: EventSpec, lang: str, url: str | None) -> str:
    if event.venue:
        return event.venue
    return f"{_ONLINE.get(lang, _ONLINE['en'])}: {url}"


def event_ics(event: EventSpec, lang: str, registration_url: str, url: str | None = None,
              ) -> bytes:
    """One VEVENT in the event's zone; `registration_url` and `url` as the message links them
    (with their UTM tags)."""
    zone = event.zone
    start = event.starts_at.astimezone(zone)
    end = event_end(event).astimezone(zone)
    cal = Calendar()
    cal.add("prodid", "-//event-promo//event-promo//EN")
    cal.add("version", "2.0")
    # PUBLISH: an entry to add, not a meeting request that asks for an RSVP to an organizer
    cal.add("method", "PUBLISH")
    entry = CalendarEvent()
    entry.add("uid", f"{event.slug}@event-promo")
    entry.add("dtstamp", datetime.now(UTC))
    entry.add("dtstart", start)
    entry.add("dtend", end)
    entry.add("summary", event.title)
    entry.add("location", _location(event, lang, url))
    entry.add("url", url or registration_url)
    entry.add("description", _description(event, lang, registration_url))
    cal.add_component(entry)
    # only the zone's rules around the event, not its whole history
    cal.add_missing_timezones(first_date=(start - timedelta(days=366)).date(),
                              last_date=(end + timedelta(days=366)).date())
    return cal.to_ical()


def ics_attachment(event: EventSpec, lang: str, registration_url: str,
                   url: str | None = None) -> tuple[str, str, bytes]:
    """(file name, content type, data), the shape of `OutgoingMessage.attachments`."""
    return f"{event.slug}.ics", ICS_CONTENT_TYPE, event_ics(event, lang, registration_url, url)


def google_calendar_url(event: EventSpec, lang: str, registration_url: str,
                        url: str | None = None) -> str:
    """A Google Calendar "add event" link (its public TEMPLATE action): one click, no account
    linking. Times in UTC; `ctz` shows them in the event's zone."""

    def stamp(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    query = {
        "action": "TEMPLATE",
        "text": event.title,
        "dates": f"{stamp(event.starts_at)}/{stamp(event_end(event))}",
        "details": _description(event, lang, registration_url),
        "location": _location(event, lang, url),
        "ctz": event.timezone,
    }
    return "https://calendar.google.com/calendar/render?" + urlencode(query)
