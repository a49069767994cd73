"""The names the ledger, the plan and every view share: statuses, channels and waves.

String enums whose member names equal their values: they compare equal to the strings
stored in the database and in event files, and a driver that writes an Enum by its name
(psycopg does) writes the same text.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args


class Name(StrEnum):
    """A name that is its own string everywhere: compared, hashed, formatted, stored, and
    shown (a dict of counts printed in a log or a flow's result reads as before)."""

    __repr__ = str.__repr__


class Status(Name):
    """What happened (or will) to one message of one wave to one contact on one channel."""

    planned = "planned"  # decided; goes at its send time
    deferred = "deferred"  # held by quiet hours until its send time
    sending = "sending"  # claimed: the request may be in flight
    sent = "sent"  # the provider took it
    delivered = "delivered"  # the provider says it arrived
    capped = "capped"  # a frequency cap (or the reminder's kept slot) stopped it
    suppressed = "suppressed"  # no consent, opted out, registered, no address, forgotten
    dropped = "dropped"  # its time came too late (the event started, the window opens after)
    failed = "failed"  # the provider refused it, or its template broke
    uncertain = "uncertain"  # the process died mid-request: may have gone, never re-sent


# the order the plan and the artifacts show outcomes in
OUTCOMES = (Status.planned, Status.deferred, Status.sent, Status.delivered, Status.capped,
            Status.suppressed, Status.dropped, Status.failed, Status.uncertain, Status.sending)
# waiting for their send time: what a run sends when due, and what a cancelled wave drops
WAITING = (Status.planned, Status.deferred)
# went (or may have gone) out: they count for caps and for the cost
SENT_STATUSES = (Status.sending, Status.sent, Status.delivered, Status.uncertain)
GOING = (*WAITING, *SENT_STATUSES)
# the columns of a wave's outcome table (the artifacts, `promo run`), in this order
OUTCOME_COLUMNS = (Status.sent, Status.planned, Status.deferred, Status.capped,
                   Status.suppressed, Status.dropped, Status.failed, Status.uncertain,
                   Status.sending)
# outcomes whose reasons the wave summary explains, with examples
EXPLAINED = (Status.capped, Status.suppressed, Status.deferred, Status.dropped, Status.failed,
             Status.uncertain)


class ChannelName(Name):
    email = "email"
    sms = "sms"
    voice = "voice"
    vk = "vk"
    telegram = "telegram"
    vk_wall = "vk_wall"  # a post on the community wall
    telegram_channel = "telegram_channel"  # a post in a Telegram channel


DIRECT_CHANNELS = (ChannelName.email, ChannelName.sms, ChannelName.voice, ChannelName.vk,
                   ChannelName.telegram)
# posted once per wave to a community wall / a Telegram channel; they count against no contact
BROADCAST_CHANNELS = (ChannelName.vk_wall, ChannelName.telegram_channel)
# the event file's type for a channel (pydantic's messages list the names as written)
ChannelLiteral = Literal["email", "sms", "voice", "vk", "telegram", "vk_wall", "telegram_channel"]
assert set(get_args(ChannelLiteral)) == set(ChannelName)

# the key in a contact's cap history that counts all direct channels together
DIRECT = "direct"


class WaveName(Name):
    announce = "announce"
    last_call = "last_call"
    reminder = "reminder"


class WaveStatus(Name):
    """Where a wave stands in the plan, or in a run of it."""

    scheduled = "scheduled"  # goes at its time
    late = "late"  # its time passed; sent at once
    dropped = "dropped"  # its time passed and it no longer makes sense (the plan says why)
    early = "early"  # a run that started before the wave's time: nothing done
    held = "held"  # its time is over, but it still sends what quiet hours held


PROMOTIONAL_WAVES = (WaveName.announce, WaveName.last_call)
# the monthly digest's wave: its ledger rows hang on a `digest` events row (flows/digest.py);
# not a campaign's wave
DIGEST = "digest"
WAVES = (*PROMOTIONAL_WAVES, WaveName.reminder)
WaveLiteral = Literal["announce", "last_call", "reminder"]
assert set(get_args(WaveLiteral)) == set(WaveName)


class Delivery(Name):
    """What a provider's delivery event says happened to a message (one vocabulary for all)."""

    queued = "queued"
    sent = "sent"
    delivered = "delivered"
    failed = "failed"
    bounced = "bounced"
    opened = "opened"
    clicked = "clicked"
    unsubscribed = "unsubscribed"
    complained = "complained"
    unknown = "unknown"
