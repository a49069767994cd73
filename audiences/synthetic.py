"""A synthetic audience for the demo and the benchmarks: mixed channels, consents, time
zones and topics, like a meetup series' contact base after a few years."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.orm import Session

from promo.db.models import Consent, Contact, ContactTopic

TIMEZONES = [
    ("Europe/Moscow", 60), ("Europe/Kaliningrad", 5), ("Asia/Yekaterinburg", 10),
    ("Asia/Novosibirsk", 8), ("Asia/Vladivostok", 5), ("Europe/Berlin", 4),
    ("America/New_York", 3), (None, 5),
]
TOPICS = [("python", 60), ("data", 35), ("go", 20), ("devops", 15)]
FIRST = ["Анна", "Иван", "Мария", "Дмитрий", "Елена", "Алексей", "Ольга", "Сергей", "Anna",
         "John", "Kate", "Михаил", "Наталья", "Павел", "Татьяна"]
LAST = ["Иванова", "Петров", "Смирнова", "Кузнецов", "Попова", "Соколов", "Lee", "Smith",
        "Волкова", "Морозов"]


@dataclass
class SyntheticContact:
    id: int
    name: str
    language: str
    timezone: str | None
    email: str | None
    phone: str | None
    vk_id: int | None
    telegram_chat_id: int | None
    topics: list[str]
    consents: list[str] = field(default_factory=list)
    opted_out: list[str] = field(default_factory=list)


def _pick(rng: random.Random, weighted: list[tuple]) -> object:
    return rng.choices([w[0] for w in weighted], weights=[w[1] for w in weighted])[0]


def generate(n: int, seed: int = 74) -> Iterator[SyntheticContact]:
    rng = random.Random(seed)
    for i in range(1, n + 1):
        email = f"guest{i}@example.org" if rng.random() < 0.85 else None
        phone = f"+7916{i:07d}" if rng.random() < 0.6 else None
        vk_id = 100_000 + i if rng.random() < 0.45 else None
        tg = 500_000_000 + i if rng.random() < 0.3 else None
        topics = sorted({_pick(rng, TOPICS) for _ in range(rng.choice((1, 1, 2, 3)))})
        c = SyntheticContact(
            id=i,
            name=f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            language="en" if rng.random() < 0.12 else "ru",
            timezone=_pick(rng, TIMEZONES),
            email=email, phone=phone, vk_id=vk_id, telegram_chat_id=tg, topics=topics,
        )
        for channel, has, p in (("email", email, 0.9), ("sms", phone, 0.5),
                                ("voice", phone, 0.25), ("vk", vk_id, 0.8),
                                ("telegram", tg, 0.95)):
            if has is not None and rng.random() < p:
                c.consents.append(channel)
                if rng.random() < 0.04:
                    c.opted_out.append(channel)
        yield c


def store(session: Session, contacts: list[SyntheticContact], granted_at: datetime,
          chunk: int = 5000) -> None:
    """Bulk-insert the contacts with their topics and consents (ids kept as generated)."""
    rows, topics, consents = [], [], []
    for c in contacts:
        rows.append({"id": c.id, "name": c.name, "language": c.language, "timezone": c.timezone,
                     "email": c.email, "phone": c.phone, "vk_id": c.vk_id,
                     "telegram_chat_id": c.telegram_chat_id, "created_at": granted_at,
                     "updated_at": granted_at})
        topics += [{"contact_id": c.id, "topic": t} for t in c.topics]
        for ch in c.consents:
            withdrawn = granted_at + timedelta(days=30) if ch in c.opted_out else None
            consents.append({"contact_id": c.id, "channel": ch, "granted_at": granted_at,
                             "granted_source": "demo import", "withdrawn_at": withdrawn,
                             "withdrawn_source": "demo opt-out" if withdrawn else None})
    for table, data in ((Contact, rows), (ContactTopic, topics), (Consent, consents)):
        for i in range(0, len(data), chunk):
            session.execute(insert(table), data[i:i + chunk])
