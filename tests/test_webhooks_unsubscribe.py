"""Unsubscribe links: GET asks (in the contact's language) and changes nothing, POST and
the RFC 8058 one-click POST withdraw consent; a tampered or foreign token changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from promo.db import session_scope
from promo.db.models import Contact
from promo.settings import Settings
from promo.tokens import unsubscribe_token, unsubscribe_url
from tests.webhook_support import PUBLIC_URL, World, add_contact, make_world


@pytest.fixture
def world(store: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return make_world(store, monkeypatch)


def path(world: World, channel: str = "email", contact_id: int | None = None) -> str:
    url = unsubscribe_url(world.settings, contact_id or world.contact_id, channel)
    assert url.startswith(PUBLIC_URL + "/unsubscribe/")  # the path the emails carry
    return url.removeprefix(PUBLIC_URL)


def test_get_shows_a_page_in_the_contacts_language_and_changes_nothing(world: World) -> None:
    english = add_contact("bob@example.org", "+79161234569", None, None, language="en")
    before = world.snapshot()
    r = world.client.get(path(world))
    assert r.status_code == 200
    assert "Отписаться" in r.text and "по электронной почте" in r.text
    assert '<form method="post">' in r.text
    r = world.client.get(path(world, "sms", english))
    assert "Unsubscribe" in r.text and "by SMS" in r.text
    assert world.snapshot() == before
    assert world.next_wave()["email"][0] == "planned"


def test_one_click_post_keeps_the_contact_out_of_the_next_wave_on_that_channel(
        world: World) -> None:
    # what a mail client sends for List-Unsubscribe-Post: List-Unsubscribe=One-Click
    r = world.client.post(path(world), content="List-Unsubscribe=One-Click",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert "Готово" in r.text
    plan = world.next_wave()
    assert plan["email"] == ("suppressed", "opted out")
    assert plan["sms"][0] == "planned"
    assert world.consent("email").withdrawn_source == "unsubscribe link (one-click)"
    # the page now says so, and offers no button
    r = world.client.get(path(world))
    assert "уже отписаны" in r.text and "<form" not in r.text
    # clicking again (or the client posting twice) changes nothing
    before = world.snapshot()
    assert world.client.post(path(world), data={"confirm": "yes"}).status_code == 200
    assert world.snapshot() == before


def test_the_pages_button_unsubscribes_the_channel_of_the_link(world: World) -> None:
    r = world.client.post(path(world, "telegram"), data={"confirm": "yes"})
    assert r.status_code == 200 and "в Telegram" in r.text
    assert world.next_wave()["telegram"] == ("suppressed", "opted out")
    assert world.consent("telegram").withdrawn_source == "unsubscribe link"
    assert world.next_wave()["email"][0] == "planned"


def test_after_subscribing_again_the_same_link_works_again(world: World) -> None:
    from audiences.contacts import grant_consent

    world.client.post(path(world), content="List-Unsubscribe=One-Click")
    with session_scope() as s:
        grant_consent(s, world.contact_id, "email", source="signed up again")
    assert world.next_wave()["email"][0] == "planned"
    world.client.post(path(world), content="List-Unsubscribe=One-Click")
    assert world.next_wave()["email"] == ("suppressed", "opted out")


@pytest.mark.parametrize("how", ["tampered", "foreign", "garbage", "other channel name"])
def test_a_tampered_or_foreign_token_changes_nothing_and_says_so(world: World, how: str) -> None:
    token = unsubscribe_token(world.settings, world.contact_id, "email")
    if how == "tampered":  # another contact's id under this token's signature
        other = unsubscribe_token(world.settings, world.contact_id + 1, "email")
        token = other.split(".")[0] + "." + token.split(".")[1]
    elif how == "foreign":  # signed with another installation's secret
        token = unsubscribe_token(Settings(secret_key="another-secret"), world.contact_id, "email")
    elif how == "garbage":
        token = "not-a-token"
    else:  # a valid signature over a channel that does not exist
        token = unsubscribe_token(world.settings, world.contact_id, "fax")
    before = world.snapshot()
    for method in ("GET", "POST"):
        r = world.client.request(method, f"/unsubscribe/{token}")
        assert r.status_code == 403
        assert "nothing was changed" in r.text and "ничего не изменено" in r.text
    assert world.snapshot() == before
    assert world.next_wave()["email"][0] == "planned"


def test_a_forgotten_contact_is_told_there_is_nothing_to_do(world: World) -> None:
    gone = add_contact("gone@example.org", "+79161234570", None, None)
    link = path(world, "email", gone)
    with session_scope() as s:
        s.execute(update(Contact).where(Contact.id == gone).values(email=None))
        s.delete(s.get(Contact, gone))
    assert world.client.post(link).status_code == 200
    assert "больше нет" in world.client.get(link).text
