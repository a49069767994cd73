"""The deployed path's pieces that need no worker: masking, on-time wave runs, and the
follow-up run a wave schedules for the messages quiet hours hold (against a real Prefect API)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from flows.plan import plan_campaign
from promo.domain.event import parse_event
from promo.masking import mask_address, mask_email, mask_phone, scrub
from tests.helpers import EVENT_TEMPLATE, write_event

MSK = ZoneInfo("Europe/Moscow")
START = datetime(2026, 12, 10, 19, 0, tzinfo=MSK)


@pytest.mark.parametrize(("phone", "masked"), [
    ("+79161234567", "+7 916 *** ** 67"),
    ("+7 (916) 123-45-67", "+7 916 *** ** 67"),
    ("+12125551234", "+1 212 *** ** 34"),
    ("+4930123456", "+49 301 *** ** 56"),
    ("12", "***"),
])
def test_mask_phone(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


def test_mask_email_and_other_addresses() -> None:
    assert mask_email("ivan@example.org") == "i***@example.org"
    assert mask_email("not-an-address") == "***"
    assert mask_address("email", "anna.k@mail.ru") == "a***@mail.ru"
    assert mask_address("sms", "+79161234567") == "+7 916 *** ** 67"
    assert mask_address("vk", 100123) == "id ***23"
    assert mask_address("telegram", None) == "-"


def test_scrub_masks_addresses_in_free_text_and_leaves_dates() -> None:
    text = ("21211: The 'To' number +79161234567 is not valid; ivan@example.org bounced; "
            "79161234567; not due until 2026-12-07 09:00 MSK")
    out = scrub(text)
    assert "+79161234567" not in out and "ivan@" not in out and "79161234567" not in out
    assert "+7 916 *** ** 67" in out and "i***@example.org" in out
    assert "2026-12-07 09:00" in out and out.startswith("21211: ")


def _event(campaign: str) -> object:
    text = EVENT_TEMPLATE.format(slug="python-meetup-74", starts_at=START.isoformat())
    return parse_event(text + campaign)


def test_a_wave_run_starting_just_after_its_time_is_on_time() -> None:
    # waves one day apart: a late announce would be dropped for the close last call
    spec = _event("campaign:\n  announce: {days_before: 3}\n  last_call: {days_before: 2}\n")
    at = datetime(2026, 12, 7, 11, 0, tzinfo=MSK)
    on_time = plan_campaign(spec, at + timedelta(seconds=2)).wave("announce")
    assert on_time.status == "scheduled" and on_time.send_at == at
    late = plan_campaign(spec, at + timedelta(hours=1)).wave("announce")
    assert late.status == "dropped" and "next wave follows" in late.note


def test_held_messages_get_one_follow_up_run_of_the_wave_deployment(prefect_api, store) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort
    from prefect.exceptions import ObjectNotFound

    from audiences import synthetic
    from flows.campaign import wave_flow
    from flows.store import save_event
    from promo.db import session_scope
    from promo.domain.event import load_event

    # SMS may go 09:00-21:00 in the contact's zone; the last call goes at 07:00 Moscow time
    path = write_event(store, START, extra="campaign:\n  announce: null\n"
                       "  last_call: {days_before: 3, at: \"07:00\", channels: [sms]}\n"
                       "  reminder: null\n")
    contact = synthetic.SyntheticContact(
        id=1, name="Иван", language="ru", timezone="Europe/Moscow", email=None,
        phone="+79161234567", vk_id=None, telegram_chat_id=None, topics=["python"],
        consents=["sms"])
    with session_scope() as s:
        synthetic.store(s, [contact], granted_at=START - timedelta(days=100))
        save_event(s, load_event(path), path)
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(wave_flow)
        try:
            client.read_deployment_by_name("wave/wave")
        except ObjectNotFound:  # not there yet in this session's API
            client.create_deployment(flow_id=flow_id, name="wave",
                                     entrypoint="flows/campaign.py:wave_flow")

        first = wave_flow("python-meetup-74", "last_call", "2026-12-07T07:00:00+03:00",
                          follow_up_deployment="wave/wave")
        again = wave_flow("python-meetup-74", "last_call", "2026-12-07T07:30:00+03:00",
                          follow_up_deployment="wave/wave")
        assert first["outcomes"] == {"sms": {"deferred": 1}}
        assert first["follow_up_run"] and again["follow_up_run"] == first["follow_up_run"]
        run = client.read_flow_run(first["follow_up_run"])
        assert run.expected_start_time == datetime(2026, 12, 7, 9, 0, tzinfo=MSK)
        assert run.parameters == {"event_slug": "python-meetup-74", "wave": "last_call"}
        assert {"held", "event:python-meetup-74", "wave:last_call"} <= set(run.tags)
        assert run.name == "python-meetup-74 · last_call · held messages"
        (summary,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["python-meetup-74-last-call-summary"])),
            sort=ArtifactSort.CREATED_DESC, limit=1)  # other tests run a last call too
        assert "+7 916 *** ** 67" in summary.data and "+79161234567" not in summary.data
        assert "follow-up run" in summary.data
