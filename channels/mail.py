"""What every email carries besides its text, whichever way it goes (SendGrid or the outbox):
the one-click unsubscribe headers (RFC 8058) and the event as a calendar invitation."""

from __future__ import annotations

from channels.calendar import ics_attachment
from promo.domain.digest import DigestSpec
from promo.domain.event import EventSpec

Attachment = tuple[str, str, bytes]  # file name, content type, data


def unsubscribe_headers(unsubscribe_url: str | None) -> dict[str, str]:
    if not unsubscribe_url:
        return {}
    return {"List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


class Invitations:
    """The `.ics` invitation per event, language and links: every email of a batch in one
    language carries the same one, built once (about 10 ms each)."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, str, str, str | None], Attachment] = {}

    def get(self, event: EventSpec, lang: str, registration_url: str,
            url: str | None) -> Attachment:
        key = (event.slug, lang, registration_url, url)
        if key not in self._built:
            self._built[key] = ics_attachment(event, lang, registration_url, url)
        return self._built[key]


def email_extras(event: EventSpec, lang: str, ctx: dict, unsubscribe_url: str | None,
                 invitations: Invitations) -> tuple[dict[str, str], list[Attachment]]:
    """The headers and attachments of one email rendered with `ctx` (`channels.context.context`):
    one click unsubscribes, one click puts the event in the contact's calendar."""
    if isinstance(event, DigestSpec):  # lists several events: no one calendar entry
        return unsubscribe_headers(unsubscribe_url), []
    links = ctx["event"]
    invitation = invitations.get(event, lang, links["registration_url"], links["url"])
    return unsubscribe_headers(unsubscribe_url), [invitation]
