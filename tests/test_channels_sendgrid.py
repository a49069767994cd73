"""The SendGrid email adapter through the real `sendgrid` SDK against a fake Mail Send API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from channels.sendgrid_email import SendGridEmail
from tests.fakes import FakeSendGrid
from tests.fakes.harness import CLIENT_TIMEOUT, SLOW, deliver_one, fast, message

KEY = "SG.test-key"
UNSUBSCRIBE = {"List-Unsubscribe": "<https://promo.example.org/u/abc>",
               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(KEY, rejected={"gone@example.org"}) as f:
        yield f


def email(address: str = "anna@example.org", **kw):
    kw.setdefault("subject", "Moscow Python Meetup #74")
    kw.setdefault("html", "<p>Привет, Анна!</p>")
    kw.setdefault("headers", dict(UNSUBSCRIBE))
    return message(1, "email", address, text="Привет, Анна!", **kw)


def adapter(fake: FakeSendGrid, key: str = KEY, sandbox: bool = False) -> SendGridEmail:
    return SendGridEmail(key, sender="Event Promo <events@example.org>", host=fake.url,
                         sandbox=sandbox, timeout=CLIENT_TIMEOUT)


# each row: what the fake does, the message, the outcome, requests that reached the fake,
# messages it accepted
CASES = [
    ("success", None, {}, "sent", 1, 1),
    ("address SendGrid refuses", None, {"address": "gone@example.org"}, "unreachable", 1, 0),
    ("not an address: never sent", None, {"address": "anna at example"}, "unreachable", 0, 0),
    ("no subject: 400", None, {"subject": None}, "failed", 1, 0),
    ("wrong API key: 401", None, {"key": "SG.wrong"}, "configuration", 1, 0),
    ("429 with X-RateLimit-Reset", ("rate_limit", 1, {"retry_after": 3}), {}, "sent", 2, 1),
    ("429 without a hint", ("rate_limit", 1, {}), {}, "sent", 2, 1),
    ("5xx twice, then accepted", ("error", 2, {"status": 503}), {}, "sent", 3, 1),
    ("500 every time", ("error", 9, {"status": 500}), {}, "retry_exhausted", 4, 0),
    # the request arrived; sending it again could email the contact twice
    ("timeout after arriving", ("slow", 1, {"delay": SLOW}), {}, "uncertain", 1, 1),
    ("connection reset", ("reset", 1, {}), {}, "uncertain", 1, 0),
]


@pytest.mark.parametrize(("fault", "change", "expected", "requests", "accepted"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sendgrid_outcomes(fake: FakeSendGrid, fault, change, expected, requests, accepted) -> None:
    change = dict(change)
    channel = adapter(fake, key=change.pop("key", KEY))
    waits = fast(channel)
    if fault:
        kind, times, params = fault
        fake.fail(kind, times, **params)
    assert deliver_one(channel, email(**change)) == expected
    assert len(fake.requests) == requests
    assert len(fake.received) == accepted
    if fault and fault[0] == "rate_limit" and fault[2].get("retry_after"):
        # X-RateLimit-Reset is a Unix time in whole seconds: the wait runs until then
        assert 2.0 < waits.seconds[0] <= 3.0
    elif fault and fault[0] == "rate_limit":
        assert waits.seconds[0] < 1.0  # exponential backoff from 0.05 s


def test_sendgrid_request_carries_html_text_headers_and_ledger_key(fake: FakeSendGrid) -> None:
    channel = adapter(fake)
    [result] = channel.deliver([email()])
    [mail] = fake.received
    assert result.provider_message_id == mail["message_id"]  # X-Message-Id
    assert mail["to"] == ["anna@example.org"]
    assert mail["from"] == "events@example.org"
    assert list(mail["content"]) == ["text/plain", "text/html"]
    assert mail["headers"] == UNSUBSCRIBE
    assert mail["custom_args"] == {"promo_key": "python-meetup-74/announce/1/email",
                                   "promo_message_id": "1"}


def test_sendgrid_sandbox_mode_sends_nothing(fake: FakeSendGrid) -> None:
    [result] = adapter(fake, sandbox=True).deliver([email()])
    assert result.ok and result.provider_message_id is None
    assert fake.received == [] and len(fake.sandboxed) == 1


def test_sendgrid_email_carries_the_calendar_invitation(fake: FakeSendGrid) -> None:
    import base64

    ics = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"
    m = email()
    m.attachments = [("python-meetup-74.ics", "text/calendar", ics)]
    channel = adapter(fake)
    [result] = channel.deliver([m])
    assert result.ok
    [mail] = fake.received
    [attachment] = mail["attachments"]
    assert (attachment["filename"], attachment["type"], attachment["disposition"]) == (
        "python-meetup-74.ics", "text/calendar", "attachment")
    assert base64.b64decode(attachment["content"]) == ics
