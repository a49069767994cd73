"""VK Callback API: the confirmation handshake, the secret key, allow / deny messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from promo.tokens import link_token
from tests.webhook_support import (
    VK_CONFIRMATION,
    VK_GROUP,
    VK_SECRET,
    World,
    add_contact,
    make_world,
)


@pytest.fixture
def world(store: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return make_world(store, monkeypatch)


def vk_event(kind: str, user_id: int, n: int, **obj: object) -> dict:
    """An event as the Callback API posts it (API version 5.199)."""
    return {"type": kind, "object": {"user_id": user_id, **obj}, "group_id": VK_GROUP,
            "event_id": f"6f3e{n:04d}a1b2c3d4e5f6", "v": "5.199", "secret": VK_SECRET}


def test_confirmation_answers_the_code(world: World) -> None:
    r = world.client.post("/vk/callback", json={"type": "confirmation", "group_id": VK_GROUP})
    assert (r.status_code, r.text) == (200, VK_CONFIRMATION)
    r = world.client.post("/vk/callback", json={"type": "confirmation", "group_id": VK_GROUP,
                                                "secret": VK_SECRET})
    assert (r.status_code, r.text) == (200, VK_CONFIRMATION)
    # another community, or a wrong secret: no code
    for body in ({"type": "confirmation", "group_id": VK_GROUP + 1},
                 {"type": "confirmation", "group_id": VK_GROUP, "secret": "guess"}):
        r = world.client.post("/vk/callback", json=body)
        assert r.status_code == 403 and VK_CONFIRMATION not in r.text


def test_deny_keeps_the_contact_out_of_the_next_wave_on_vk(world: World) -> None:
    assert world.next_wave()["vk"][0] == "planned"
    r = world.client.post("/vk/callback", json=vk_event("message_deny", 1001, 1))
    assert (r.status_code, r.text) == (200, "ok")
    plan = world.next_wave()
    assert plan["vk"] == ("suppressed", "opted out")
    assert plan["telegram"][0] == "planned"
    assert "denied" in world.consent("vk").withdrawn_source
    # delivered again (VK retries when it misses the "ok"): nothing changes
    before = world.snapshot()
    r = world.client.post("/vk/callback", json=vk_event("message_deny", 1001, 1))
    assert (r.status_code, r.text) == (200, "ok")
    assert world.snapshot() == before
    # allowing again brings VK back
    world.client.post("/vk/callback", json=vk_event("message_allow", 1001, 2, key=""))
    assert world.next_wave()["vk"][0] == "planned"


def test_allow_links_a_new_vk_user_through_the_widget_key(world: World) -> None:
    new = add_contact("vera@example.org", "+79161234571", None, None)
    key = link_token(world.settings, new, "vk")
    assert world.next_wave(new)["vk"] == ("suppressed", "no address")
    r = world.client.post("/vk/callback", json=vk_event("message_allow", 2002, 1, key=key))
    assert r.status_code == 200
    assert world.contact(new).vk_id == 2002
    assert world.next_wave(new)["vk"][0] == "planned"
    # a key for another channel, or a forged one, links nobody
    other = add_contact("oleg@example.org", "+79161234572", None, None)
    for n, bad in enumerate((link_token(world.settings, other, "telegram"),
                             f"{other}-AAAAAAAAAAAAAAAAAAAAAA"), start=2):
        world.client.post("/vk/callback", json=vk_event("message_allow", 3003, n, key=bad))
    assert world.contact(other).vk_id is None


@pytest.mark.parametrize("how", ["missing", "wrong", "other group", "not json"])
def test_events_without_the_secret_are_refused_and_change_nothing(world: World, how: str) -> None:
    body = vk_event("message_deny", 1001, 1)
    if how == "missing":
        del body["secret"]
    elif how == "wrong":
        body["secret"] = VK_SECRET + "x"
    elif how == "other group":
        body["group_id"] = VK_GROUP + 1
    before = world.snapshot()
    if how == "not json":
        r = world.client.post("/vk/callback", content=b"secret=" + VK_SECRET.encode())
    else:
        r = world.client.post("/vk/callback", json=body)
    assert r.status_code == 403
    assert world.snapshot() == before


def test_other_event_types_are_acknowledged_and_ignored(world: World) -> None:
    before = world.snapshot()
    r = world.client.post("/vk/callback", json=vk_event("wall_reply_new", 1001, 1, text="hi"))
    assert (r.status_code, r.text) == (200, "ok")
    assert world.snapshot() == before
