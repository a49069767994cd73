"""What a wave did per person, from the ledger: how many people it reached and on which
channels, and how many got nothing and why (grouped reasons, all of them).

The ledger has one row per contact, wave and channel: counting rows counts channel
attempts ("suppressed 301" for 300 contacts). An organizer asks about people, so every
view (the wave summary, `promo run`, `promo plan --json`) shows this account next to the
per-channel table. Plain functions over the ledger; nothing is written.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audiences.segments import ADDRESS_FIELD
from promo.db.models import Contact, Message
from promo.domain.names import EXPLAINED, SENT_STATUSES, WAITING, Status
from promo.domain.rules import REGISTERED
from promo.masking import mask_address, scrub

# how many grouped reasons a one-line account names before `+k more`
REASONS_IN_LINE = 4
EXAMPLES_PER_REASON = 3
REASONS_PER_OUTCOME = 5
_REACHED = (Status.sent, Status.delivered)
_MAYBE = (Status.sending, Status.uncertain)


@dataclass
class Why:
    """One grouped reason why people got nothing, with a few contact ids (`promo why ID`)."""

    reason: str
    people: int
    examples: list[int] = field(default_factory=list)


@dataclass
class Account:
    """One wave's account per person. Every person of the wave's ledger is in exactly one
    of reached, uncertain, waiting and nothing."""

    people: int = 0  # contacts with a decision in this wave
    reached: int = 0  # a message was sent (or delivered) on at least one channel
    reached_by: dict[str, int] = field(default_factory=dict)  # channel -> people reached there
    uncertain: int = 0  # may have been reached: the process died mid-request (or is sending)
    waiting: int = 0  # a message still waits for its time (planned, or held by quiet hours)
    nothing: int = 0  # got nothing: capped, suppressed, dropped or failed on every channel
    why: list[Why] = field(default_factory=list)  # why they got nothing, most people first
    posts: dict[str, str] = field(default_factory=dict)  # public post channel -> its status
    first_sent_at: datetime | None = None
    last_sent_at: datetime | None = None

    @property
    def ran(self) -> bool:
        return self.people > 0 or bool(self.posts)

    def line(self, limit: int = REASONS_IN_LINE) -> str:
        """`reached 120 people (email 100, telegram 20), 30 got nothing: registered 12,
        ... +2 more`: the account in one line, for logs and the command line."""
        parts = [f"reached {self.reached} {_people(self.reached)}"
                 + (f" ({_by(self.reached_by)})" if self.reached_by else "")]
        if self.uncertain:
            parts.append(f"{self.uncertain} uncertain (may have got it; never re-sent)")
        if self.waiting:
            parts.append(f"{self.waiting} still waiting for their time")
        if self.nothing:
            shown = "; ".join(f"{w.reason}: {w.people}" for w in self.why[:limit])
            more = len(self.why) - limit
            parts.append(f"{self.nothing} got nothing ({shown}"
                         + (f"; +{more} more" if more > 0 else "") + ")")
        else:
            parts.append("0 got nothing")
        if self.posts:
            parts.append("posts: " + ", ".join(f"{c} {s}" for c, s in sorted(self.posts.items())))
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for k in ("first_sent_at", "last_sent_at"):
            data[k] = data[k].isoformat() if data[k] else None
        data["summary"] = self.line()
        return data


def _people(n: int) -> str:
    return "person" if n == 1 else "people"


def _by(counts: dict[str, int]) -> str:
    return ", ".join(f"{c} {n}" for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# which of a person's rows says why they got nothing: a channel that tried and failed
# says more than one that was capped, which says more than one without an address
_TELLING = (Status.failed, Status.capped, Status.dropped, Status.suppressed)


def _why(rows: list[tuple[str, str, str | None]]) -> str:
    """Why one person got nothing, from their rows (channel, status, reason): `registered`
    once (not per channel); else the most telling outcome's rows, one reason when they all
    say the same (`suppressed (every channel): no address`), else each channel's."""
    if any(reason == REGISTERED for _, _, reason in rows):
        return REGISTERED
    status = next((s for s in _TELLING if any(st == s for _, st, _ in rows)), rows[0][1])
    telling = [(ch, scrub(reason) or "-") for ch, st, reason in rows if st == status]
    said = {reason for _, reason in telling}
    if len(said) == 1:
        where = ("every channel" if len(telling) == len(rows) and len(rows) > 1
                 else ", ".join(ch for ch, _ in telling))
        return f"{status} ({where}): {said.pop()}"
    return f"{status}: " + "; ".join(f"{ch}: {reason}" for ch, reason in telling)


def account_of(rows: Iterable[tuple[int | None, str, str, str | None]]) -> Account:
    """The account of (contact id, channel, status, reason) rows, in the order the wave
    tried each person's channels: the ledger's, or a preview's predicted decisions."""
    acc = Account()
    per_person: dict[int, list[tuple[str, str, str | None]]] = defaultdict(list)
    for cid, channel, status, reason in rows:
        if cid is None:
            acc.posts[channel] = str(status)
        else:
            per_person[cid].append((channel, str(status), reason))
    reached_by: Counter = Counter()
    grouped: dict[str, list[int]] = defaultdict(list)
    for cid, rows_ in per_person.items():
        statuses = {s for _, s, _ in rows_}
        reached_on = [ch for ch, s, _ in rows_ if s in _REACHED]
        if reached_on:
            acc.reached += 1
            reached_by.update(set(reached_on))
        elif statuses & set(_MAYBE):
            acc.uncertain += 1
        elif statuses & set(WAITING):
            acc.waiting += 1
        else:
            acc.nothing += 1
            grouped[_why(rows_)].append(cid)
    acc.people = len(per_person)
    acc.reached_by = dict(reached_by)
    acc.why = sorted((Why(r, len(ids), ids[:EXAMPLES_PER_REASON]) for r, ids in grouped.items()),
                     key=lambda w: (-w.people, w.reason))
    return acc


def wave_account(session: Session, event_id: int, wave: str) -> Account:
    """The wave's account per person, from its ledger rows, and when it sent."""
    q = (select(Message.contact_id, Message.channel, Message.status, Message.reason)
         .where(Message.event_id == event_id, Message.wave == wave)
         .order_by(Message.contact_id, Message.id))
    acc = account_of(session.execute(q))
    acc.first_sent_at, acc.last_sent_at = session.execute(
        select(func.min(Message.sent_at), func.max(Message.sent_at))
        .where(Message.event_id == event_id, Message.wave == wave,
               Message.status.in_(SENT_STATUSES))).one()
    return acc


# -- the reasons per outcome and channel, for the wave summary ---------------------------------



@dataclass
class Reason:
    """One of the most common reasons for an outcome on a channel, with masked examples."""

    status: str
    channel: str
    reason: str
    count: int
    examples: list[str]


def reasons(session: Session, event_id: int, wave: str) -> list[Reason]:
    """The most common reasons per outcome and channel, each with a few masked examples.

    At most REASONS_PER_OUTCOME rows per outcome; the rest are summed in one last row,
    `+k more reasons`, so that an outcome's rows always add up to its total. "registered"
    is one reason for the person, not the channel it was recorded on: its channel reads
    `any`. A contact without an address on the channel is shown by id (`contact 123`,
    which `promo why` takes), not by a dash."""
    q = (select(Message.status, Message.channel, Message.reason, func.count())
         .where(Message.event_id == event_id, Message.wave == wave,
                Message.status.in_(EXPLAINED))
         .group_by(Message.status, Message.channel, Message.reason)
         .order_by(Message.status, func.count().desc(), Message.channel))
    out: list[Reason] = []
    shown: Counter = Counter()
    more: dict[str, list[int]] = {}
    for status, channel, reason, n in session.execute(q):
        if shown[status] >= REASONS_PER_OUTCOME:
            cut = more.setdefault(status, [0, 0])
            cut[0] += 1
            cut[1] += n
            continue
        shown[status] += 1
        examples: list[str] = []
        field_ = ADDRESS_FIELD.get(channel)
        if field_ is not None:
            where = [Message.event_id == event_id, Message.wave == wave,
                     Message.status == status, Message.channel == channel]
            where.append(Message.reason.is_(None) if reason is None else Message.reason == reason)
            rows = session.execute(
                select(Message.contact_id, getattr(Contact, field_)).select_from(Message)
                .join(Contact, Contact.id == Message.contact_id).where(*where)
                .order_by(Message.id).limit(EXAMPLES_PER_REASON))
            examples = [mask_address(channel, a) if a else f"contact {cid}" for cid, a in rows]
        out.append(Reason(status, "any" if reason == REGISTERED else channel,
                          scrub(reason) or "-", n, examples))
    for status, (k, n) in more.items():
        out.append(Reason(status, "-", f"+{k} more reason{'s' if k > 1 else ''}", n, []))
    return out
