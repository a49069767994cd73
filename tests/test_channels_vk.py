"""The VK adapters through the real `vk_api` SDK against a fake VK API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from channels.vk import VKMessages, VKWall, random_id
from tests.fakes import FakeVK
from tests.fakes.harness import CLIENT_TIMEOUT, SLOW, deliver_one, fast, message, outcome

GROUP_TOKEN, USER_TOKEN, GROUP_ID = "vk-group-token", "vk-user-token", 4242
DENIED, PRIVATE = 901001, 902002


@pytest.fixture
def fake() -> Iterator[FakeVK]:
    with FakeVK(GROUP_TOKEN, USER_TOKEN, GROUP_ID, denied={DENIED}, private={PRIVATE}) as f:
        yield f


def messages_adapter(fake: FakeVK, token: str = GROUP_TOKEN) -> VKMessages:
    return VKMessages(token, api_url=fake.url + "/method/", timeout=CLIENT_TIMEOUT)


def wall_adapter(fake: FakeVK, token: str = USER_TOKEN) -> VKWall:
    return VKWall(token, group_id=GROUP_ID, api_url=fake.url + "/method/", timeout=CLIENT_TIMEOUT)


# VK answers a rate limit with error 6 (or 9, 29) in an HTTP 200 and never gives a retry
# hint, so there is no "429 with a hint" row. A retried messages.send carries the same
# random_id: a timeout or a reset is retried and VK drops the repeat.
MESSAGE_CASES = [
    ("success", None, {}, "sent", 1, 1),
    ("no permission: 901", None, {"address": str(DENIED)}, "unreachable", 1, 0),
    ("privacy settings: 902", None, {"address": str(PRIVATE)}, "unreachable", 1, 0),
    ("wrong token: 5", None, {"token": "wrong"}, "configuration", 1, 0),
    ("too many requests: 6", ("api_error", 1, {"code": 6}), {}, "sent", 2, 1),
    ("flood control: 9", ("api_error", 1, {"code": 9}), {}, "sent", 2, 1),
    ("rate limit reached: 29", ("api_error", 2, {"code": 29}), {}, "sent", 3, 1),
    ("5xx twice, then sent", ("error", 2, {"status": 502}), {}, "sent", 3, 1),
    ("timeout after arriving: retried, sent once", ("slow", 1, {"delay": SLOW}), {}, "sent", 2, 1),
    ("connection reset: retried", ("reset", 1, {}), {}, "sent", 2, 1),
]


@pytest.mark.parametrize(("fault", "change", "expected", "requests", "accepted"),
                         [c[1:] for c in MESSAGE_CASES], ids=[c[0] for c in MESSAGE_CASES])
def test_vk_message_outcomes(fake: FakeVK, fault, change, expected, requests, accepted) -> None:
    change = dict(change)
    channel = messages_adapter(fake, token=change.pop("token", GROUP_TOKEN))
    waits = fast(channel)
    if fault:
        kind, times, params = fault
        fake.fail(kind, times, **params)
    try:
        assert deliver_one(channel, message(1, "vk", change.pop("address", "1001"))) == expected
    finally:
        channel.close()
    assert len(fake.requests) == requests
    assert len(fake.received) == accepted
    if fault and fault[0] == "api_error":
        assert all(w < 1.0 for w in waits.seconds)  # backoff: VK gives no hint


def test_vk_same_text_goes_in_one_call_with_per_peer_results(fake: FakeVK) -> None:
    channel = messages_adapter(fake)
    peers = ["1001", str(DENIED), "1003", str(PRIVATE)]
    batch = [message(i, "vk", p) for i, p in enumerate(peers, 1)]
    batch.append(message(9, "vk", "1009", text="A different text"))
    results = channel.deliver(batch)
    channel.close()
    assert [outcome(r) for r in results] == ["sent", "unreachable", "sent", "unreachable", "sent"]
    assert len(fake.requests) == 2  # one peer_ids call for the shared text, one for the other
    assert sorted(r["peer_id"] for r in fake.received) == [1001, 1003, 1009]
    shared = fake.requests[0].form()
    assert shared["peer_ids"] == ",".join(peers)
    assert int(shared["random_id"]) == random_id([m.key for m in batch[:4]])


def test_vk_peer_ids_call_retried_after_timeout_reaches_each_peer_once(fake: FakeVK) -> None:
    channel = messages_adapter(fake)
    fast(channel)
    fake.fail("slow", delay=SLOW)
    batch = [message(i, "vk", str(1000 + i)) for i in range(1, 101)]
    results = channel.deliver(batch)
    channel.close()
    assert all(r.ok for r in results)
    assert len(fake.requests) == 2
    assert sorted(r["peer_id"] for r in fake.received) == list(range(1001, 1101))


def test_random_id_is_stable_and_depends_on_the_keys() -> None:
    assert random_id(["a", "b"]) == random_id(["b", "a"])
    assert random_id(["a"]) != random_id(["b"])
    assert 0 < random_id(["a"]) < 2**63


WALL_CASES = [
    ("posted", None, {}, "sent", 1, 1),
    ("a community token cannot post: 27", None, {"token": GROUP_TOKEN}, "configuration", 1, 0),
    ("5xx, then posted", ("error", 1, {"status": 502}), {}, "sent", 2, 1),
    ("too many requests: 6", ("api_error", 1, {"code": 6}), {}, "sent", 2, 1),
    ("timeout after arriving: not posted again", ("slow", 1, {"delay": SLOW}), {}, "uncertain", 1, 1),
]


@pytest.mark.parametrize(("fault", "change", "expected", "requests", "accepted"),
                         [c[1:] for c in WALL_CASES], ids=[c[0] for c in WALL_CASES])
def test_vk_wall_outcomes(fake: FakeVK, fault, change, expected, requests, accepted) -> None:
    channel = wall_adapter(fake, token=change.get("token", USER_TOKEN))
    fast(channel)
    if fault:
        kind, times, params = fault
        fake.fail(kind, times, **params)
    post = message(1, "vk_wall", None, text="Moscow Python Meetup #74 — 10 декабря")
    try:
        assert deliver_one(channel, post) == expected
    finally:
        channel.close()
    assert len(fake.requests) == requests
    assert len(fake.received) == accepted
    if accepted:
        assert fake.received[0]["owner_id"] == -GROUP_ID
        assert fake.received[0]["text"] == "Moscow Python Meetup #74 — 10 декабря"
