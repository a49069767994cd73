"""Message templates: every default renders with what a contact needs, a broken template
stops a campaign before anything is sent, channel limits hold, the preview shows it all."""

from __future__ import annotations

import email
import textwrap
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from icalendar import Calendar
from sqlalchemy import func, select
from typer.testing import CliRunner

from channels.calendar import event_ics, google_calendar_url
from channels.context import LANGUAGES, Contexts, context, pick_language
from channels.links import resolve_short_link, with_utm
from channels.render import DEFAULT_TEMPLATES, TemplateProblem, render
from channels.samples import content_estimate, estimate, sample_check
from channels.sms_segments import segments
from promo.domain.event import parse_event
from promo.domain.names import BROADCAST_CHANNELS, DIRECT_CHANNELS, WAVES
from promo.settings import Settings, reset_settings
from tests.helpers import write_event

EVENT = """\
slug: python-meetup-74
title: "Moscow Python Meetup #74"
starts_at: 2026-12-10T19:00:00+03:00
timezone: Europe/Moscow
venue: "Точка кипения, ул. Малая Андроньевская, 15"
registration_url: https://example.org/python-meetup-74
topic: python
language: ru
"""
ONLINE = EVENT.replace('venue: "Точка кипения, ул. Малая Андроньевская, 15"\n',
                       "url: https://stream.example.org/live/74\n")
SETTINGS = Settings(_env_file=None)
# 19:00 in Moscow is 21:00 in Yekaterinburg: a contact reads their own time
CONTACT_ZONE = "Asia/Yekaterinburg"
CONTACT_TIME = {"ru": "21:00", "en": "9:00 PM"}
EVENT_TIME = {"ru": "19:00", "en": "7:00 PM"}
TOMORROW = {"ru": "завтра", "en": "tomorrow"}


def event(text: str = EVENT, extra: str = ""):
    return parse_event(text + textwrap.dedent(extra))


def rendered(spec, wave: str, channel: str, lang: str, *, name: str | None = "Анна",
             tz: str | None = CONTACT_ZONE, override: str | None = None,
             settings: Settings = SETTINGS):
    broadcast = channel in BROADCAST_CHANNELS
    ctx = context(spec, wave, channel, name=None if broadcast else name,
                  tz=None if broadcast else tz, lang=lang,
                  unsubscribe_url="https://promo.example.org/unsubscribe/TOKEN-42"
                  if channel == "email" else None, settings=settings)
    return render(spec, wave, channel, lang, ctx, override, settings=settings)


def every_default() -> list[tuple[str, str, str]]:
    """Every wave on every channel it may use, in both languages (the reminder goes to
    registrants only, so never as a public post)."""
    return [(w, c, lang) for w in WAVES for c in (*DIRECT_CHANNELS, *BROADCAST_CHANNELS)
            if not (w == "reminder" and c in BROADCAST_CHANNELS) for lang in LANGUAGES]


@pytest.mark.parametrize(("wave", "channel", "lang"), every_default())
def test_every_default_template_renders_what_a_contact_needs(wave, channel, lang):
    spec = event()
    r = rendered(spec, wave, channel, lang)
    # a dedicated template per channel, not the generic fallback
    assert r.template == str(DEFAULT_TEMPLATES / wave / f"{channel}.{lang}.txt.j2")
    text = r.text
    assert "Moscow Python Meetup #74" in text
    # the time in the contact's zone; a public post has no contact: the event's zone
    expected = EVENT_TIME[lang] if channel in BROADCAST_CHANNELS else CONTACT_TIME[lang]
    assert expected in text
    if channel not in (*BROADCAST_CHANNELS, "sms"):  # an SMS saves its characters
        assert "Анна" in text
    if wave == "reminder":
        assert TOMORROW[lang] in text.casefold()
        # registrants are not asked to register again
        assert "example.org/python-meetup-74" not in text
        assert "/go/" not in text
    elif channel == "sms":
        # every character counts in an SMS: a short link leading to the tagged page
        link = f"http://127.0.0.1:8000/go/python-meetup-74/sms/{wave}"
        assert link in text
        target = resolve_short_link(spec, "sms", wave)
        assert "utm_source=sms&utm_medium=promotion&utm_campaign=python-meetup-74" in target
    elif channel == "voice":
        assert "example.org" in text  # said aloud: the site, not a tagged link
    else:
        assert (f"https://example.org/python-meetup-74?utm_source={channel}&utm_medium=promotion"
                f"&utm_campaign=python-meetup-74&utm_content={wave}") in text
    if channel == "email":
        assert r.subject and "Moscow Python Meetup #74" in r.subject
        assert "\n" not in r.subject
        for part in (r.text, r.html):
            assert "https://promo.example.org/unsubscribe/TOKEN-42" in part
        assert CONTACT_TIME[lang] in r.html
        if wave == "reminder":
            assert TOMORROW[lang] in r.subject.casefold()
        else:
            assert "utm_source=email&amp;utm_medium=promotion" in r.html  # autoescaped href
    if channel == "sms":
        assert segments(text) <= SETTINGS.max_sms_segments


@pytest.mark.parametrize("lang", LANGUAGES)
def test_an_online_event_gives_its_link(lang):
    spec = event(ONLINE)
    for wave in WAVES:
        for channel in ("email", "vk", "telegram"):
            text = rendered(spec, wave, channel, lang).text
            assert f"https://stream.example.org/live/74?utm_source={channel}" in text
    html = rendered(spec, "reminder", "email", lang).html
    assert 'href="https://stream.example.org/live/74?utm_source=email' in html


def test_html_is_escaped_and_text_is_not():
    spec = event(extra="description: \"Talks & <b>demos</b>\"\n")
    r = rendered(spec, "announce", "email", "en", name="<script>alert(1)</script>")
    assert "<script>" not in r.html and "&lt;script&gt;" in r.html
    assert "Talks &amp; &lt;b&gt;demos&lt;/b&gt;" in r.html
    assert "<script>alert(1)</script>" in r.text
    assert "Talks & <b>demos</b>" in r.text


def test_language_contact_then_event_then_default():
    ru_event, en_event = event(), event(extra="").model_copy(update={"language": "en"})
    assert pick_language("en-US", ru_event, "ru") == "en"
    assert pick_language("ru_RU", en_event, "en") == "ru"
    assert pick_language("de", en_event, "ru") == "en"  # no German templates: the event's
    assert pick_language(None, ru_event, "en") == "ru"


def test_utm_tags_replace_the_ones_a_link_had():
    url = with_utm("https://example.org/e?ref=x&utm_source=old", source="vk", medium="promotion",
                   campaign="python-meetup-74", content="announce")
    assert url == ("https://example.org/e?ref=x&utm_source=vk&utm_medium=promotion"
                   "&utm_campaign=python-meetup-74&utm_content=announce")


# -- overrides --------------------------------------------------------------------------------

def test_an_event_folder_overrides_by_name_and_falls_back(tmp_path: Path):
    (tmp_path / "announce").mkdir()
    (tmp_path / "announce" / "sms.ru.txt.j2").write_text("Свой текст: {{ event.title }}")
    # an event's generic message beats the default channel template
    (tmp_path / "announce" / "message.ru.txt.j2").write_text("Общий: {{ event.title }}")
    spec = event()
    assert rendered(spec, "announce", "sms", "ru", override=str(tmp_path)).text == \
        "Свой текст: Moscow Python Meetup #74"
    assert rendered(spec, "announce", "vk", "ru", override=str(tmp_path)).text == \
        "Общий: Moscow Python Meetup #74"
    # the other language and the other waves come from the defaults
    assert "Register" in rendered(spec, "announce", "sms", "en", override=str(tmp_path)).text
    assert TOMORROW["ru"] in rendered(spec, "reminder", "sms", "ru",
                                      override=str(tmp_path)).text.casefold()


def test_inline_texts_in_the_event_file():
    spec = event(extra="""\
        texts:
          announce:
            sms:
              ru: "Приходите на {{ event.title }} {{ when_short }}: {{ event.short_url }}"
            email:
              en:
                subject: "Come to {{ event.title }}"
    """)
    assert rendered(spec, "announce", "sms", "ru").text.startswith(
        "Приходите на Moscow Python Meetup #74 чт, 10 дек., 21:00 (МСК+2): http")
    r = rendered(spec, "announce", "email", "en")
    assert r.subject == "Come to Moscow Python Meetup #74"
    assert "You're invited" in r.text  # the parts not given fall back to the defaults
    assert rendered(spec, "announce", "sms", "en").text.startswith("Moscow Python Meetup #74:")


def test_an_inline_text_error_says_where_it_is():
    spec = event(extra="""\
        texts:
          last_call:
            vk:
              en: |
                Hi {{ contact.name }}
                {{ event.titel }}
    """)
    with pytest.raises(TemplateProblem) as exc:
        sample_check(spec, {"last_call": ["vk"]}, settings=SETTINGS)
    message = str(exc.value)
    assert "texts.last_call.vk.en (in the event file), line 2" in message
    assert "titel" in message


# -- checks before sending ------------------------------------------------------------------

def test_an_undefined_variable_names_file_line_and_variable(tmp_path: Path):
    (tmp_path / "announce").mkdir()
    (tmp_path / "announce" / "telegram.en.txt.j2").write_text(
        "Hi {{ contact.name }}\n{{ event.title }}\n{{ speaker_name }} talks\n")
    with pytest.raises(TemplateProblem) as exc:
        sample_check(event(), {"announce": ["email", "telegram"]}, str(tmp_path),
                     settings=SETTINGS)
    assert str(exc.value).startswith(f"{tmp_path / 'announce' / 'telegram.en.txt.j2'}:3: ")
    assert "'speaker_name' is undefined" in str(exc.value)


def test_a_syntax_error_names_file_and_line(tmp_path: Path):
    (tmp_path / "announce").mkdir()
    (tmp_path / "announce" / "vk.ru.txt.j2").write_text("ok\n{% if %}\n")
    with pytest.raises(TemplateProblem, match=r"vk\.ru\.txt\.j2:2: "):
        sample_check(event(), {"announce": ["vk"]}, str(tmp_path), settings=SETTINGS)


def test_sample_check_covers_both_languages_and_the_posts_language(tmp_path: Path):
    samples = sample_check(event(), {"announce": ["sms", "vk_wall"]}, settings=SETTINGS)
    # a post goes out once, in the event's language; a contact may read either
    assert set(samples) == {("announce", "sms", "ru"), ("announce", "sms", "en"),
                            ("announce", "vk_wall", "ru")}


def _seed_contacts(n: int = 3) -> None:
    from promo.db import session_scope
    from promo.db.models import Consent, Contact, ContactTopic

    granted = datetime(2026, 1, 1, tzinfo=UTC)
    with session_scope() as s:
        for i in range(1, n + 1):
            s.add(Contact(id=i, name=f"Гость {i}", language="ru", timezone="Europe/Moscow",
                          email=f"guest{i}@example.org"))
            s.flush()
            s.add(ContactTopic(contact_id=i, topic="python"))
            s.add(Consent(contact_id=i, channel="email", granted_at=granted,
                          granted_source="test"))


def _messages() -> int:
    from promo.db import session_scope
    from promo.db.models import Message

    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Message))


def test_a_broken_template_stops_the_campaign_before_any_send(store: Path, prefect_api):
    from flows.campaign import campaign_flow

    now = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    _seed_contacts()
    folder = store / "texts"
    (folder / "announce").mkdir(parents=True)
    broken = folder / "announce" / "email.ru.txt.j2"
    broken.write_text("{{ event.title }}\n{{ unsubscribe_url }}\nДокладчик: {{ speaker }}\n")
    path = write_event(store, now + timedelta(days=10),
                       extra="templates: texts\ncampaign:\n  announce: {channels: [email]}\n")
    with pytest.raises(TemplateProblem) as exc:
        campaign_flow(str(path), now.isoformat())
    assert f"{broken}:3: 'speaker' is undefined" in str(exc.value)
    assert _messages() == 0
    assert not list((store / "outbox").glob("**/*.*"))

    # the same campaign with the template fixed goes out, with its invitation attached
    broken.write_text("{{ event.title }}\n{{ unsubscribe_url }}\n")
    campaign_flow(str(path), now.isoformat())
    emails = sorted((store / "outbox" / "email").glob("*.eml"))
    assert len(emails) == 3 and _messages() >= 3
    msg = email.message_from_bytes(emails[0].read_bytes(), policy=policy.default)
    assert msg["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/unsubscribe/")
    # as written, not as an encoded-word: a mail client reads the URL from the raw header
    assert b"\nList-Unsubscribe: <http://127.0.0.1:8000/unsubscribe/" in emails[0].read_bytes()
    ics = next(p for p in msg.iter_attachments() if p.get_content_type() == "text/calendar")
    assert ics.get_filename() == "python-meetup-74.ics"
    assert b"DTSTART;TZID=Europe/Moscow:20261201T" in ics.get_payload(decode=True)


def test_channel_limits():
    long_text = "Очень подробное описание. " * 200  # ~5200 characters
    spec = event(extra=f"description: \"{long_text}\"\n")
    rendered(spec, "announce", "vk", "ru")  # VK takes 9000
    with pytest.raises(TemplateProblem, match=r"telegram takes at most 4096"):
        rendered(spec, "announce", "telegram", "ru")
    longer = event(extra=f"description: \"{long_text * 2}\"\n")
    with pytest.raises(TemplateProblem, match=r"vk takes at most 9000"):
        rendered(longer, "announce", "vk", "ru")

    script = "Очень длинный сценарий звонка. " * 130  # ~4000 characters, over with the TwiML
    voice = event(extra=f"texts:\n  announce:\n    voice:\n      ru: \"{script}\"\n")
    with pytest.raises(TemplateProblem, match=r"TwiML is \d+ characters; Twilio takes at most 4000"):
        rendered(voice, "announce", "voice", "ru")

    sms = event(extra="texts:\n  announce:\n    sms:\n      ru: \"{{ event.title }} "
                      + "я" * 120 + "\"\n")
    with pytest.raises(TemplateProblem, match=r"the SMS is 3 segments .* max_sms_segments = 2"):
        rendered(sms, "announce", "sms", "ru")
    rendered(sms, "announce", "sms", "ru", settings=Settings(_env_file=None, max_sms_segments=3))


def test_an_email_without_its_unsubscribe_link_is_refused(tmp_path: Path):
    (tmp_path / "reminder").mkdir()
    (tmp_path / "reminder" / "email.en.txt.j2").write_text("See you tomorrow!")
    with pytest.raises(TemplateProblem, match=r"txt part of the reminder email \(en\) has no "
                                              r"unsubscribe link"):
        rendered(event(), "reminder", "email", "en", override=str(tmp_path))


# -- SMS segments and costs -----------------------------------------------------------------

def test_the_plan_estimate_matches_the_counter(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROMO_PRICES", '{"sms": 0.5, "voice": 0.2}')
    monkeypatch.setenv("PROMO_CURRENCY", "EUR")
    settings = reset_settings()
    try:
        spec = event()
        for lang in LANGUAGES:
            shown = content_estimate(spec, "last_call", "sms", lang, settings=settings)
            ctx = context(spec, "last_call", "sms", name="X", tz=None, lang=lang,
                          unsubscribe_url=None, settings=settings)
            text = render(spec, "last_call", "sms", lang, ctx, settings=settings).text
            assert shown["segments"] == segments(text)
            assert shown["cost_per_message"] == pytest.approx(segments(text) * 0.5)
            assert shown["currency"] == "EUR"
        long = event(extra="texts:\n  announce:\n    sms:\n      ru: \"{{ event.title }} "
                           + "я" * 80 + "\"\n")
        shown = content_estimate(long, "announce", "sms", "ru", settings=settings)
        assert shown["segments"] == 2 and shown["cost_per_message"] == pytest.approx(1.0)
        voice = content_estimate(spec, "announce", "voice", "ru", settings=settings)
        assert (voice["unit"], voice["units"], voice["cost_per_message"]) == ("minute", 1, 0.2)
        email_cost = content_estimate(spec, "announce", "email", "en", settings=settings)
        assert email_cost["cost_per_message"] == 0.001
    finally:
        monkeypatch.delenv("PROMO_PRICES")
        monkeypatch.delenv("PROMO_CURRENCY")
        reset_settings()


def test_estimate_of_a_long_call_counts_started_minutes():
    units, cost = estimate("voice", "слово " * 200, SETTINGS)  # 80 s of speech
    assert (units, cost) == (2, pytest.approx(0.2))


# -- calendar -------------------------------------------------------------------------------

def test_ics_holds_the_event_in_its_own_zone():
    spec = event(extra="ends_at: 2026-12-10T22:00:00+03:00\n")
    reg = "https://example.org/python-meetup-74?utm_source=email"
    data = event_ics(spec, "ru", reg)
    assert b"DTSTART;TZID=Europe/Moscow:20261210T190000" in data
    assert b"DTEND;TZID=Europe/Moscow:20261210T220000" in data
    cal = Calendar.from_ical(data)
    assert cal["METHOD"] == "PUBLISH"
    assert [c["TZID"] for c in cal.walk("VTIMEZONE")] == ["Europe/Moscow"]
    (vevent,) = cal.walk("VEVENT")
    assert vevent["SUMMARY"] == "Moscow Python Meetup #74"
    assert vevent["LOCATION"] == "Точка кипения, ул. Малая Андроньевская, 15"
    assert vevent["UID"] == "python-meetup-74@event-promo"
    assert reg in vevent["DESCRIPTION"] and vevent["URL"] == reg
    start = vevent.decoded("DTSTART")
    assert start.utcoffset() == timedelta(hours=3) and start.hour == 19


def test_online_ics_and_calendar_link():
    spec = event(ONLINE)
    data = Calendar.from_ical(event_ics(spec, "en", "https://example.org/r", "https://s/l"))
    (vevent,) = data.walk("VEVENT")
    assert vevent["LOCATION"] == "Online: https://s/l"
    assert vevent.decoded("DTEND") - vevent.decoded("DTSTART") == timedelta(hours=2)
    link = google_calendar_url(spec, "en", "https://example.org/r")
    assert link.startswith("https://calendar.google.com/calendar/render?action=TEMPLATE")
    assert "dates=20261210T160000Z%2F20261210T180000Z" in link


# -- preview --------------------------------------------------------------------------------

def _event_file(folder: Path) -> Path:
    path = folder / "python-meetup-74.yaml"
    path.write_text(EVENT, encoding="utf-8")
    return path


def test_preview_email_prints_subject_and_text_and_writes_html(store: Path):
    from promo.cli import app

    result = CliRunner().invoke(app, ["preview", str(_event_file(store)), "--wave", "announce",
                                      "--channel", "email", "--out", str(store / "pv")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Subject: Moscow Python Meetup #74: четверг, 10 декабря, 19:00" in out
    assert "Константин, здравствуйте!" in out
    assert "utm_source=email" in out and "/unsubscribe/" in out
    html = (store / "pv" / "python-meetup-74.announce.ru.html").read_text()
    assert html.startswith("<!doctype html>") and "Зарегистрироваться" in html
    assert (store / "pv" / "python-meetup-74.ics").read_bytes().startswith(b"BEGIN:VCALENDAR")
    assert "cost: 1 message" in out


def test_preview_sms_for_a_stored_contact_shows_segments_and_cost(store: Path):
    from promo.cli import app
    from promo.db import session_scope
    from promo.db.models import Contact

    with session_scope() as s:
        s.add(Contact(id=7, name="Mary", language="en", timezone="America/New_York",
                      phone="+15555550100"))
    result = CliRunner().invoke(app, ["preview", str(_event_file(store)), "--wave", "last_call",
                                      "--channel", "sms", "--contact", "7"])
    assert result.exit_code == 0, result.output
    assert "contact 7: Mary, en, America/New_York" in result.output
    assert "Thu, Dec 10, 11:00 AM (UTC-5)" in result.output
    assert "cost: 1 segment (" in result.output and "GSM-7), 0.05 USD" in result.output
    forced = CliRunner().invoke(app, ["preview", str(_event_file(store)), "--wave", "last_call",
                                      "--channel", "sms", "--contact", "7", "--lang", "ru"])
    assert "Скоро Moscow Python Meetup #74: чт, 10 дек., 11:00 (МСК-8)" in forced.output
    assert "2 segments" in forced.output


def test_preview_refuses_what_it_cannot_show(store: Path):
    from promo.cli import app
    from promo.errors import UserError

    path = str(_event_file(store))
    bad_wave = CliRunner().invoke(app, ["preview", path, "--wave", "teaser", "--channel", "sms"])
    assert isinstance(bad_wave.exception, UserError) and "--wave 'teaser'" in str(bad_wave.exception)
    post = CliRunner().invoke(app, ["preview", path, "--wave", "announce", "--channel", "vk_wall",
                                    "--contact", "1"])
    assert isinstance(post.exception, UserError) and "public post" in str(post.exception)


def test_the_sms_short_link_redirects_to_the_tagged_page(store: Path):
    from starlette.testclient import TestClient

    from flows.store import save_event
    from promo.db import session_scope
    from promo.settings import get_settings
    from promo.webhooks.app import create_app

    spec = event()
    with session_scope() as s:
        save_event(s, spec)
    text = rendered(spec, "last_call", "sms", "ru", settings=get_settings()).text
    link = text.split()[-1]
    assert link == "http://127.0.0.1:8000/go/python-meetup-74/sms/last_call"
    with TestClient(create_app(get_settings())) as client:
        reply = client.get(link.removeprefix("http://127.0.0.1:8000"), follow_redirects=False)
        assert reply.status_code == 302
        assert reply.headers["location"] == (
            "https://example.org/python-meetup-74?utm_source=sms&utm_medium=promotion"
            "&utm_campaign=python-meetup-74&utm_content=last_call")
        assert client.get("/go/python-meetup-99/sms/last_call").status_code == 404
        assert client.get("/go/python-meetup-74/fax/last_call").status_code == 404


def test_the_sms_check_covers_a_cyrillic_name_in_an_english_sms(tmp_path) -> None:
    """140 GSM characters and a name fit one segment with "Christopher"; with "Константин"
    the SMS turns UCS-2 and needs three: refused at plan time, not failed at send time."""
    from channels.render import TemplateProblem
    from channels.samples import sample_check
    from promo.domain.event import parse_event
    from tests.helpers import EVENT_TEMPLATE

    folder = tmp_path / "tpl" / "announce"
    folder.mkdir(parents=True)
    (folder / "sms.en.txt.j2").write_text("x" * 140 + " {{ contact.name }}\n")
    spec = parse_event(EVENT_TEMPLATE.format(slug="odd-sms",
                                             starts_at="2027-03-10T19:00:00+03:00"))
    with pytest.raises(TemplateProblem, match="3 segments"):
        sample_check(spec, {"announce": ["sms"]}, str(tmp_path / "tpl"), settings=SETTINGS)


def test_shared_contexts_and_templates_render_what_each_recipient_would_get() -> None:
    """The send step works out the common part of the context and the template of each part
    once a batch: every message is the one `context` and a fresh lookup give."""
    settings = SETTINGS
    spec = event()
    contexts, chosen = Contexts(), {}
    people = [("Анна", "Europe/Moscow", "ru"), ("O'Brien & <Co>", "Asia/Yekaterinburg", "ru"),
              (None, "Europe/Moscow", "ru"), ("Kate", "America/New_York", "en"),
              ("Анна", "No/Such_Zone", "en"), ("Дмитрий", None, "ru")]
    for wave in ("announce", "last_call"):
        for channel in ("email", "sms", "telegram"):
            for i, (name, tz, lang) in enumerate(people):
                unsub = f"https://promo.example.org/unsubscribe/T{i}" if channel == "email" \
                    else None
                kw = {"name": name, "tz": tz, "lang": lang, "unsubscribe_url": unsub,
                      "settings": settings}
                alone = render(spec, wave, channel, lang,
                               context(spec, wave, channel, **kw), settings=settings)
                shared = render(spec, wave, channel, lang,
                                contexts.get(spec, wave, channel, **kw), settings=settings,
                                chosen=chosen)
                assert shared == alone
    assert len(chosen) == 2 * 3 * 2  # one lookup per wave, channel and language
