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


NAMES = ["Анна", "O'Brien & <Co>", "Ivan", "Мария-Луиза", "a", "Kate"]


def personal_email(i: int, lang: str = "ru"):
    """An email rendered for recipient i as the send step renders one: the name in the text
    and (escaped) in the HTML, the signed unsubscribe link in both and in the headers."""
    from markupsafe import escape  # as Jinja's autoescape

    name = NAMES[i % len(NAMES)]
    unsub = f"https://promo.example.org/u/{i}.sig{i * 7919}?c=email&x=1"
    hello = "Привет" if lang == "ru" else "Hello"
    return message(
        i, "email", f"guest{i}@example.org", language=lang,
        text=f"{hello}, {name}! Встреча 10 декабря.\nОтписаться: {unsub}",
        html=f"<p>{hello}, {escape(name)}!</p><a href=\"{escape(unsub)}\">x</a>",
        subject=f"Moscow Python Meetup #74 ({lang})",
        headers={"List-Unsubscribe": f"<{unsub}>",
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        personal={"name": name, "unsubscribe": unsub})


def as_received(fake: FakeSendGrid) -> dict[str, dict]:
    return {m["to"][0]: {k: v for k, v in m.items() if k not in ("message_id", "personalizations")}
            for m in fake.received}


def test_emails_that_differ_only_in_their_recipients_values_share_requests(fake) -> None:
    """2,500 emails in two languages go in a handful of requests (1,000 personalizations at
    most each), and every recipient gets exactly what one request each gives them. (The
    name "a" also occurs in the HTML's `<a>` tags: those emails share a content of their own.)"""
    emails = [personal_email(i, "ru" if i % 5 else "en") for i in range(1, 2501)]
    results = adapter(fake).deliver(emails)
    assert all(r.ok for r in results) and len(results) == 2500
    # ru: 1,667 -> 2 requests, their "a"s 333 -> 1; en: 417 -> 1, their "a"s 83 -> 1
    assert len(fake.requests) == 5
    assert max(len(r.json()["personalizations"]) for r in fake.requests) == 1000
    grouped = as_received(fake)
    with FakeSendGrid(KEY) as alone:
        channel = adapter(alone)
        for m in emails:
            channel.send_batch([m])  # one request each, as before
        assert len(alone.requests) == 2500
        one_each = as_received(alone)
    assert grouped == one_each
    assert grouped["guest1@example.org"]["content"]["text/html"].startswith(
        "<p>Привет, O&#39;Brien &amp; &lt;Co&gt;!</p>")
    assert grouped["guest7@example.org"]["custom_args"]["promo_key"].endswith("/7/email")


def test_an_email_whose_values_cannot_be_substituted_goes_alone(fake) -> None:
    """A name that is also part of the shared text ("a" in "Встреча"? no: in the subject
    'Moscow Python Meetup #74 (ru)' when the name is 'Python') cannot be a substitution."""
    odd = personal_email(1)
    odd.personal["name"] = "Python"
    odd.text = odd.text.replace("Анна", "Python")
    odd.html = odd.html.replace("Анна", "Python")
    emails = [odd, personal_email(7), personal_email(13)]
    assert [len(b) for b in adapter(fake).batches(emails)] == [2, 1] or \
        sorted(len(b) for b in adapter(fake).batches(emails)) == [1, 2]
    assert all(r.ok for r in adapter(fake).deliver(emails))
    assert as_received(fake)["guest1@example.org"]["subject"] == "Moscow Python Meetup #74 (ru)"


def test_a_refused_request_is_recorded_for_each_of_its_recipients(fake) -> None:
    emails = [personal_email(i) for i in (1, 2, 3, 5, 6)]  # one content (no "a")
    fake.fail("error", 9, status=500)
    channel = adapter(fake)
    fast(channel)
    results = channel.deliver(emails)
    assert len(fake.requests) == 4  # one request, retried: the policy's attempts
    assert [r.message_id for r in results] == [1, 2, 3, 5, 6]
    assert all(r.error is not None and "SendGrid 500" in str(r.error) for r in results)


def test_a_recipient_sendgrid_refuses_fails_alone_and_the_others_go(fake) -> None:
    emails = [personal_email(i) for i in range(1, 6)]
    emails[2].address = "gone@example.org"
    channel = adapter(fake)
    fast(channel)
    results = {r.message_id: r for r in channel.deliver(emails)}
    assert results[3].error is not None and results[3].error.unreachable
    assert all(results[i].ok for i in (1, 2, 4, 5))
    assert sorted(as_received(fake)) == [f"guest{i}@example.org" for i in (1, 2, 4, 5)]
