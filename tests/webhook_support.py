"""What the webhook tests share: an app with every secret set, a small world (an event, a
contact reachable on every channel, sent messages in the ledger), and the planner's view."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from starlette.testclient import TestClient

from audiences.segments import load_recipients
from flows.decide import decide_wave
from flows.ledger import message_key
from flows.plan import plan_campaign
from flows.store import event_spec, find_event, save_event
from flows.wave import wave_rules
from promo.db import session_scope
from promo.db.models import Consent, Contact, ContactTopic, Message, WebhookEvent
from promo.domain.event import load_event
from promo.settings import Settings, reset_settings
from promo.webhooks.app import create_app
from tests.helpers import write_event

PUBLIC_URL = "https://hooks.example.org"
TWILIO_TOKEN = "12345"
VK_SECRET = "vk-secret-key"
VK_GROUP = 229_000_001
VK_CONFIRMATION = "a1b2c3d4"
TELEGRAM_SECRET = "tg-secret_token-1"
REGISTRATION_SECRET = "registration-secret"
SLUG = "python-meetup-74"
CHANNELS = ("email", "sms", "voice", "vk", "telegram")

CAMPAIGN = """\
campaign:
  announce: {days_before: 14, at: "11:00", channels: [email, sms, voice, vk, telegram], mode: all}
  last_call: null
"""

# an ECDSA key pair standing in for SendGrid's: tests sign their own event batches with it
_SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC_KEY = base64.b64encode(_SENDGRID_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def sendgrid_headers(body: bytes, timestamp: str = "1700000000") -> dict[str, str]:
    """The headers SendGrid sends: ECDSA-SHA256 over timestamp + body, base64 DER."""
    signature = _SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


@dataclass
class World:
    client: TestClient
    settings: Settings
    contact_id: int
    event_id: int
    folder: Path

    def message(self, channel: str) -> Message:
        with session_scope() as s:
            return s.scalar(select(Message).where(
                Message.key == message_key(SLUG, "announce", self.contact_id, channel)))

    def consent(self, channel: str, contact_id: int | None = None) -> Consent | None:
        with session_scope() as s:
            return s.get(Consent, (contact_id or self.contact_id, channel))

    def contact(self, contact_id: int | None = None) -> Contact:
        with session_scope() as s:
            return s.get(Contact, contact_id or self.contact_id)

    def webhook_events(self) -> int:
        with session_scope() as s:
            return s.scalar(select(func.count()).select_from(WebhookEvent))

    def snapshot(self) -> tuple:
        """Everything a webhook may change, to show that a refused or repeated one did not."""
        with session_scope() as s:
            consents = sorted(
                (c.contact_id, c.channel, c.granted_at, c.withdrawn_at, c.unreachable_at)
                for c in s.scalars(select(Consent)))
            messages = sorted((m.key, m.status, m.delivery_status, m.reason, m.updated_at)
                              for m in s.scalars(select(Message)))
            contacts = sorted((c.id, c.email, c.phone, c.vk_id, c.telegram_chat_id,
                               c.opted_out_at) for c in s.scalars(select(Contact)))
            from promo.db.models import Registration
            registrations = sorted((r.event_id, r.contact_id)
                                   for r in s.scalars(select(Registration)))
            events = s.scalar(select(func.count()).select_from(WebhookEvent))
        return consents, messages, contacts, registrations, events

    def next_wave(self, contact_id: int | None = None) -> dict[str, tuple[str, str | None]]:
        """The planner's decisions for the contact in the next wave: channel -> (status, why)."""
        cid = contact_id or self.contact_id
        now = datetime.now(UTC)
        with session_scope() as s:
            row = find_event(s, SLUG)
            spec = event_spec(row)
            rules = wave_rules(spec, plan_campaign(spec, now), "announce", now, self.settings)
            # consent is what these tests are about: five channels in one wave would
            # otherwise meet the all-channels cap (4 per 7 days) on the fifth
            rules.counts_for_caps = False
            recipients = load_recipients(s, row, list(rules.channels), registrants_only=False)
        return {d.channel: (d.status, d.reason)
                for d in decide_wave(rules, recipients, {}) if d.contact_id == cid}


def add_contact(email: str, phone: str, vk_id: int | None, chat_id: int | None,
                language: str = "ru") -> int:
    """A contact following the event's topic, consenting (a month ago) on every channel."""
    granted = datetime.now(UTC) - timedelta(days=30)
    with session_scope() as s:
        contact = Contact(name="Анна", language=language, timezone="Europe/Moscow",
                          email=email, phone=phone, vk_id=vk_id, telegram_chat_id=chat_id)
        s.add(contact)
        s.flush()
        s.add(ContactTopic(contact_id=contact.id, topic="python"))
        for channel in CHANNELS:
            s.add(Consent(contact_id=contact.id, channel=channel, granted_at=granted,
                          granted_source="test import"))
        return contact.id


def make_world(store: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    for name, value in {
        "PROMO_PUBLIC_URL": PUBLIC_URL,
        "PROMO_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "PROMO_SENDGRID_WEBHOOK_PUBLIC_KEY": SENDGRID_PUBLIC_KEY,
        "PROMO_VK_CALLBACK_SECRET": VK_SECRET,
        "PROMO_VK_CONFIRMATION_CODE": VK_CONFIRMATION,
        "PROMO_VK_GROUP_ID": str(VK_GROUP),
        "PROMO_TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
        "PROMO_TELEGRAM_BOT_USERNAME": "promo_test_bot",
        "PROMO_REGISTRATION_WEBHOOK_SECRET": REGISTRATION_SECRET,
        "PROMO_SECRET_KEY": "test-secret-key",
        "PROMO_QUIET_HOURS": '{"sms": "", "voice": ""}',
    }.items():
        monkeypatch.setenv(name, value)
    settings = reset_settings()
    starts = (datetime.now(UTC) + timedelta(days=20)).replace(microsecond=0)
    path = write_event(store, starts, SLUG, CAMPAIGN)
    with session_scope() as s:
        event = save_event(s, load_event(path), path)
        event_id = event.id
    contact_id = add_contact("anna@example.org", "+79161234567", 1001, 5001)
    sent = datetime.now(UTC) - timedelta(days=1)
    provider_ids = {"email": "x-msg-1", "sms": "SM0123456789abcdef0123456789abcdef",
                    "voice": "CA0123456789abcdef0123456789abcdef", "vk": None, "telegram": None}
    with session_scope() as s:
        for channel in CHANNELS:
            s.add(Message(key=message_key(SLUG, "announce", contact_id, channel),
                          event_id=event_id, wave="announce", contact_id=contact_id,
                          channel=channel, status="sent", send_at=sent, sent_at=sent,
                          provider_message_id=provider_ids[channel]))
    # The ledger above says the announce was sent; the planner is asked about the wave as if
    # it were the next one (decisions are recomputed, not read from the ledger).
    return World(TestClient(create_app(settings)), settings, contact_id, event_id, store)
