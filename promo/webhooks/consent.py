"""Consent changes the webhooks make, on top of `audiences.contacts`.

`audiences.contacts` owns the rule (the newer of consent and opt-out wins); this adds
what only the feedback loop needs: an opt-out that is already in force is left as it
is (its first time and reason are the informative ones), and an address a person has
just used to reach us (a /start, an SMS, "allow messages") is reachable again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from audiences.contacts import grant_consent, mark_unreachable, withdraw_consent
from audiences.segments import channel_block, contact_block
from promo.db.models import Consent, Contact

__all__ = ["mark_unreachable", "opt_in", "opt_out", "standing"]


def standing(session: Session, contact: Contact, channel: str) -> str | None:
    """Why the channel cannot carry a message to the contact now (None: it can)."""
    return contact_block(contact, session.get(Consent, (contact.id, channel)), channel)


def _opted_out(session: Session, contact: Contact, channel: str) -> bool:
    row = session.get(Consent, (contact.id, channel))
    return channel_block(
        True,
        row.granted_at if row else None,
        row.withdrawn_at if row else None,
        None,
        contact.opted_out_at,
    ) == "opted out"


def opt_out(session: Session, contact: Contact, channel: str, source: str, at: datetime) -> bool:
    """Withdraw consent on one channel unless an opt-out is already in force; True if changed."""
    if _opted_out(session, contact, channel):
        return False
    return withdraw_consent(session, contact.id, channel, source=source, at=at)


def opt_in(session: Session, contact: Contact, channel: str, source: str, at: datetime) -> bool:
    """Grant consent on one channel, and mark its address reachable; True if it could not
    carry a message before and can now (or the consent's time moved)."""
    changed = grant_consent(session, contact.id, channel, source=source, at=at)
    row = session.get(Consent, (contact.id, channel))
    if row is not None and row.unreachable_at is not None:
        row.unreachable_at = None
        row.unreachable_reason = None
        changed = True
    return changed
