"""After a crash: the messages a dead worker left `sending`, resolved where the provider can
tell, `uncertain` (with the reason) where it cannot.

- **VK** drops a repeated `random_id`, derived from the keys of one call's recipients: the
  dead worker's group is sent again as it was claimed (the same rows, in the same order,
  so the same calls and ids), and VK delivers each message at most once.
- **Twilio** (SMS, voice): the account's messages or calls to the number since the claim are
  looked up through Twilio's list API: found, the row is `sent` with its SID; not found, the
  request never arrived, and the row goes back to `planned` to be sent.
- **Email, Telegram, the outbox, posts**: nothing to ask; `uncertain`, never sent again
  silently (`promo uncertain` lets an operator settle them).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta
from itertools import groupby

from sqlalchemy import select

from audiences.segments import ADDRESS_FIELD
from channels import get_channel, live_channel
from channels.base import ChannelError
from flows import ledger
from flows.lease import current_lease, dead_workers, forget_workers
from flows.ledger import Interrupted, Outcome
from flows.send import send_batch
from promo.db import session_scope
from promo.db.models import Contact, Message, utcnow
from promo.domain.names import ChannelName, Status
from promo.settings import Settings

log = logging.getLogger(__name__)

# rows left `sending` by a version without leases (no `claimed_by`) are taken over after this
UNCLAIMED_AFTER = timedelta(minutes=15)
TWILIO = (ChannelName.sms, ChannelName.voice)


def take_over(event_id: int, wave: str, settings: Settings) -> list[Interrupted]:
    """The wave's messages held by workers that are gone, now ours to resolve."""
    me = current_lease(settings.database_url, settings.send_lease_seconds).id
    with session_scope(settings.database_url) as s:
        dead, _ = dead_workers(s)
        taken = ledger.take_over(s, event_id, wave, dead, me, utcnow() - UNCLAIMED_AFTER)
        holding = set(s.scalars(select(Message.claimed_by).where(
            Message.status == Status.sending, Message.claimed_by.in_(dead)).distinct()))
        forget_workers(s, dead - holding)
    return taken


def resolve(taken: list[Interrupted], now: datetime, settings: Settings,
            logger: logging.Logger | None = None) -> Counter:
    """Settle what `take_over` returned; returns outcome -> count (`planned`: to be sent)."""
    logger = logger or log
    outcome: Counter = Counter()
    results: list[Outcome] = []
    resend: list[list[int]] = []
    lookups: list[Interrupted] = []
    live = {ch: _is_live(ch, settings) for ch in {m.channel for m in taken}}
    vk: list[Interrupted] = []
    for m in taken:
        if m.channel == ChannelName.vk and live[m.channel]:
            vk.append(m)  # below, by the group it was claimed in
        elif m.channel in TWILIO and m.contact_id is not None and live[m.channel]:
            lookups.append(m)
        else:
            results.append(Outcome(m.id, Status.uncertain,
                                   f"the worker stopped while sending; {m.channel} cannot "
                                   "tell whether it went: not sent again"))
    vk.sort(key=lambda m: (str(m.claimed_by), str(m.claimed_at), m.id))
    for _, group in groupby(vk, key=lambda m: (m.claimed_by, m.claimed_at)):
        resend.append([m.id for m in group])
    results += _look_up(lookups, settings)
    # back to planned first: the VK groups are claimed again below, the Twilio ones that never
    # arrived by the wave's stream
    back = [Outcome(i, Status.planned, None) for ids in resend for i in ids]
    with session_scope(settings.database_url) as s:
        ledger.record_outcomes(s, results + back, utcnow())
    for r in results:
        outcome[r.status] += 1
    if resend:
        for ids in resend:  # the send step sends each group as it was claimed
            outcome.update(send_batch(ids, now, settings, logger))
    if taken:
        logger.info("taken over from stopped workers: %d messages (%s)", len(taken),
                    ", ".join(f"{k} {v}" for k, v in sorted(outcome.items())))
    return outcome


def _is_live(channel: str, settings: Settings) -> bool:
    """Whether the channel sends through its provider (not the outbox)."""
    adapter = live_channel(channel, settings)
    if adapter is None:
        return False
    adapter.close()
    return True


def _look_up(rows: list[Interrupted], settings: Settings) -> list[Outcome]:
    """Ask Twilio about each message (or call) that was in flight."""
    if not rows:
        return []
    with session_scope(settings.database_url) as s:
        phones = dict(s.execute(select(Contact.id, getattr(Contact, ADDRESS_FIELD["sms"]))
                                .where(Contact.id.in_({m.contact_id for m in rows}))).all())
    out: list[Outcome] = []
    for channel_name in TWILIO:
        mine = [m for m in rows if m.channel == channel_name]
        if not mine:
            continue
        channel = get_channel(channel_name, settings)
        try:
            for m in mine:
                phone = phones.get(m.contact_id)
                since = m.claimed_at or utcnow() - UNCLAIMED_AFTER
                try:
                    sid = channel.lookup(phone, since) if phone else None
                except ChannelError as exc:
                    out.append(Outcome(m.id, Status.uncertain,
                                       f"the worker stopped while sending; Twilio could not "
                                       f"say whether it went ({exc})"[:300]))
                    continue
                if sid:
                    out.append(Outcome(m.id, Status.sent,
                                       "the worker stopped while sending; Twilio has it",
                                       provider_id=sid))
                else:
                    out.append(Outcome(m.id, Status.planned, None))
        finally:
            channel.close()
    return out
