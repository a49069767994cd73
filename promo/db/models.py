"""The database schema: contacts and their consents, events, registrations, the message ledger
and the provider accounts' rate schedule.

Times are stored as UTC (naive in the database, aware in Python) so that SQLite and
PostgreSQL compare them the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """An aware datetime in Python, a UTC timestamp without zone in the database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the ledger only takes aware times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL on SQLite
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Contact(Base):
    __tablename__ = "contacts"
    # never reuse a forgotten contact's id: the ledger's keys and counts name contacts by id
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - SQLAlchemy reads it

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(8))
    timezone: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)
    vk_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    telegram_chat_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    # opted out of everything (a global unsubscribe)
    opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opted_out_source: Mapped[str | None] = mapped_column(String(200))
    # the monthly digest, apart from the email consent for announcements: None follows that
    # consent, True wants the digest (also "only the digest"), False unsubscribed from it
    digest: Mapped[bool | None] = mapped_column(Boolean)
    digest_source: Mapped[str | None] = mapped_column(String(200))
    digest_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ContactTopic(Base):
    """The event lines a contact follows (python, data, ...)."""

    __tablename__ = "contact_topics"

    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class Consent(Base):
    """A contact's standing on one channel: consent, opt-out and reachability, each with when and why.

    A contact may be sent to on a channel when consent was granted and not withdrawn
    later, and the address is not marked unreachable.
    """

    __tablename__ = "consents"

    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    granted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    granted_source: Mapped[str | None] = mapped_column(String(200))
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_source: Mapped[str | None] = mapped_column(String(200))
    unreachable_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unreachable_reason: Mapped[str | None] = mapped_column(String(200))


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    timezone: Mapped[str] = mapped_column(String(64))
    topic: Mapped[str | None] = mapped_column(String(64), index=True)
    # the series the event belongs to (the event file's `series:`, default its topic)
    series: Mapped[str | None] = mapped_column(String(120), index=True)
    language: Mapped[str] = mapped_column(String(8))
    # the validated event description, as the YAML gave it
    definition: Mapped[dict] = mapped_column(JSON)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # `event`, or `digest`: a series' digest of one month (flows/digest.py), whose ledger
    # rows hang on it so that it goes through the waves' send pipeline; no series, no topic
    kind: Mapped[str] = mapped_column(String(16), default="event", server_default="event")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Registration(Base):
    __tablename__ = "registrations"
    __table_args__ = (UniqueConstraint("event_id", "contact_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attended: Mapped[bool | None] = mapped_column(Boolean)
    source: Mapped[str | None] = mapped_column(String(200))
    # came without registering (a check-in list or an attendance update named them)
    walk_in: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # what the registration platform passed on of the link the person came by, kept raw:
    # the report attributes the registration from them (promo/report/attribution.py)
    utm_source: Mapped[str | None] = mapped_column(String(200))
    utm_medium: Mapped[str | None] = mapped_column(String(200))
    utm_campaign: Mapped[str | None] = mapped_column(String(200))
    utm_content: Mapped[str | None] = mapped_column(String(200))
    short_link: Mapped[str | None] = mapped_column(String(300))


class LinkClick(Base):
    """One click on a short link (`/go/<event>/<channel>/<wave>`): clicks per wave and channel."""

    __tablename__ = "link_clicks"
    __table_args__ = (Index("ix_link_clicks_event", "event_id", "wave", "channel"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    wave: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    clicked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Message(Base):
    """The ledger: one row per contact, event, wave and channel decision.

    `key` is the idempotency key (event/wave/contact/channel): a re-run finds the row
    and sends only what was not sent. A broadcast (a wall or channel post) has no
    contact and its key ends in `broadcast`.
    """

    __tablename__ = "messages"
    __table_args__ = (
        # also every lookup by contact (forgetting's ON DELETE SET NULL): no index of its own
        Index("ix_messages_caps", "contact_id", "channel", "sent_at"),
        Index("ix_messages_wave", "event_id", "wave", "status"),
        # a decision has no provider id: only sent messages are indexed (migration 0006)
        Index("ix_messages_provider_message_id", "provider_message_id",
              postgresql_where=text("provider_message_id IS NOT NULL"),
              sqlite_where=text("provider_message_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    # No foreign keys (migration 0006): a trigger per row was two thirds of recording a
    # million decisions on PostgreSQL. The ledger checks the event and the contacts once per
    # write (`flows.ledger.record_decisions`), forgetting sets a person's `contact_id` to
    # NULL itself (`audiences.privacy.forget`), and events are never deleted.
    event_id: Mapped[int] = mapped_column(Integer)
    wave: Mapped[str] = mapped_column(String(16))
    contact_id: Mapped[int | None] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))
    # planned, deferred, sending, sent, delivered, failed, uncertain, capped, suppressed, dropped
    status: Mapped[str] = mapped_column(String(16))
    # why: the cap rule, the suppression cause, the quiet-hour window, the error
    reason: Mapped[str | None] = mapped_column(String(300))
    # when the message is due (deferred ones: when the quiet hours end)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # counts against the contact's frequency caps once sent
    counts_for_caps: Mapped[bool] = mapped_column(Boolean, default=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    # the provider's last delivery event in our vocabulary (delivered, bounced, opened, ...)
    delivery_status: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # while `sending`: the worker (`SendWorker.id`) whose request may be in flight, and when
    # it claimed the row (the rows of one claim went out together: VK's random_id covers them)
    claimed_by: Mapped[str | None] = mapped_column(String(40))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SendWorker(Base):
    """A process sending messages, alive while it renews its lease (`flows.lease`)."""

    __tablename__ = "send_workers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # the machine (hostname and boot id) and process: on the same machine a worker whose
    # process is gone is known dead at once, without waiting for its lease to run out
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    process_start: Mapped[str | None] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime)


class RateSlot(Base):
    """A provider account's pace, shared by every worker process: the next free slot on its
    GCRA schedule (`channels.ratelimit`, `promo.db.schedule`)."""

    __tablename__ = "rate_schedule"

    account: Mapped[str] = mapped_column(String(200), primary_key=True)
    # wall-clock epoch seconds: workers on several machines need synced clocks (NTP)
    next_at: Mapped[float] = mapped_column(Double)


class Tombstone(Base):
    """What is left of a forgotten contact: a keyed hash of each address, so that a later
    import of the same address does not bring consent back."""

    __tablename__ = "tombstones"

    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    forgotten_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookEvent(Base):
    """Every event a provider sent us, raw and normalized; `dedupe_key` makes handlers idempotent."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(300), unique=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    raw: Mapped[dict] = mapped_column(JSON)
    normalized: Mapped[dict | None] = mapped_column(JSON)


class WaveRun(Base):
    """A wave scheduled as a Prefect flow run (deployed campaigns)."""

    __tablename__ = "wave_runs"
    __table_args__ = (UniqueConstraint("event_id", "wave"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    wave: Mapped[str] = mapped_column(String(16))
    send_at: Mapped[datetime] = mapped_column(UTCDateTime)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Meta(Base):
    """Small key/value facts about this store (the secret tombstones are keyed with, ...)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
