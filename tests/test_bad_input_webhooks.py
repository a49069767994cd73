"""Bad requests to the webhooks get an HTTP answer (4xx), never a 500 or a reset, and a refused
request changes nothing. Sizes are checked before a body is read, signatures before parsing."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from promo.webhooks.app import SERVER_OPTIONS, create_app
from promo.webhooks.http import MAX_BODY
from promo.webhooks.registrations import sign
from tests.webhook_support import (
    PUBLIC_URL,
    REGISTRATION_SECRET,
    SLUG,
    TELEGRAM_SECRET,
    TWILIO_TOKEN,
    VK_GROUP,
    VK_SECRET,
    World,
    make_world,
    sendgrid_headers,
)

TELEGRAM = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}


@pytest.fixture
def world(store: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return make_world(store, monkeypatch)


def registration(world: World, data: object) -> object:
    body = json.dumps(data).encode()
    return world.client.post("/registrations", content=body, headers={
        "X-Promo-Signature": sign(REGISTRATION_SECRET, body)})


def vk(world: World, obj: object, kind: str = "message_deny") -> object:
    return world.client.post("/vk/callback", json={
        "type": kind, "group_id": VK_GROUP, "secret": VK_SECRET, "event_id": "e1", "object": obj})


@pytest.mark.parametrize("update", [
    {"update_id": 1, "message": ["not", "a", "message"]},
    {"update_id": 2, "message": {"text": "/stop", "chat": "private"}},
    {"update_id": 3, "message": {"text": "/stop", "chat": {"type": "private", "id": True}}},
    {"update_id": 4, "my_chat_member": {"new_chat_member": "kicked", "chat": []}},
    {"update_id": 5, "message": {"text": "/start x", "from": "anna",
                                 "chat": {"type": "private", "id": 77}}},
])
def test_signed_telegram_updates_of_another_shape_are_answered(world: World,
                                                               update: dict) -> None:
    r = world.client.post("/telegram/webhook", json=update, headers=TELEGRAM)
    assert r.status_code == 200


def test_a_vk_event_whose_object_is_a_string_is_answered(world: World) -> None:
    before = world.snapshot()
    r = vk(world, "a string")
    assert (r.status_code, r.text) == (200, "ok")
    assert world.snapshot()[:4] == before[:4]


def test_a_registration_with_an_id_past_any_row_is_refused(world: World) -> None:
    before = world.snapshot()
    r = registration(world, {"event": SLUG, "contact_id": 10**30})
    assert r.status_code == 422 and r.json()["error"].startswith("contact_id: no contact")
    assert world.snapshot() == before


def test_a_body_over_the_limit_is_refused_before_it_is_read(world: World) -> None:
    big = json.dumps({"update_id": 9, "pad": "x" * (MAX_BODY + 1)}).encode()
    before = world.snapshot()
    r = world.client.post("/telegram/webhook", content=big, headers=TELEGRAM)
    assert r.status_code == 413
    # no Content-Length (chunked): counted as it streams
    r = world.client.post("/telegram/webhook", headers=TELEGRAM,
                          content=(big[i:i + 8192] for i in range(0, len(big), 8192)))
    assert r.status_code == 413
    # unsigned or wrongly signed, the same: nothing is read
    r = world.client.post("/vk/callback", content=big)
    assert r.status_code == 413
    assert world.snapshot() == before


def test_vk_json_nested_too_deep_is_refused_not_a_500(world: World) -> None:
    body = b'{"secret": "' + VK_SECRET.encode() + b'", "x": ' + b"[" * 20000 + b"]" * 20000 + b"}"
    r = world.client.post("/vk/callback", content=body)
    assert r.status_code == 403


@pytest.fixture
def served(world: World) -> Iterator[str]:
    """The app in a real uvicorn, configured as `promo webhooks serve` runs it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(world.settings), host="127.0.0.1",
                                           port=port, log_level="critical", lifespan="off",
                                           **SERVER_OPTIONS))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_200_kb_url_gets_an_http_answer_not_a_reset(served: str) -> None:
    r = requests.get(served + "/unsubscribe/" + "a" * 200_000, timeout=10)
    assert r.status_code == 414
    assert requests.get(served + "/health", timeout=10).status_code == 200


def test_the_served_app_refuses_a_large_body_by_its_length(served: str) -> None:
    r = requests.post(served + "/registrations", data=b"x" * (MAX_BODY + 1), timeout=10)
    assert r.status_code == 413


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)  # what JSON can carry
    | st.text(max_size=15),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["message", "chat", "id", "type", "text", "from", "user_id", "key",
                         "object", "contact_id", "email", "phone", "event", "consent",
                         "registered_at", "my_chat_member", "new_chat_member", "status",
                         "update_id", "event_id", "sg_event_id", "unique_args", "x"]),
        inner, max_size=4),
    max_leaves=10)
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def answered(world: World, response: object, before: tuple) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert world.snapshot() == before


@HYPOTHESIS
@given(update=JSON, text=st.sampled_from(["/start", "/stop", "/start abc", "hi", None]))
def test_any_signed_telegram_update_is_answered(world: World, update: object,
                                                text: str | None) -> None:
    if isinstance(update, dict) and isinstance(update.get("message"), dict) and text:
        update["message"].setdefault("text", text)
    before = world.snapshot()
    answered(world, world.client.post("/telegram/webhook", json=update, headers=TELEGRAM),
             before)


@HYPOTHESIS
@given(obj=JSON, kind=st.sampled_from(["message_allow", "message_deny", "confirmation",
                                       "wall_post_new"]), group=st.sampled_from([VK_GROUP, "x"]))
def test_any_vk_event_with_the_secret_is_answered(world: World, obj: object, kind: str,
                                                   group: object) -> None:
    before = world.snapshot()
    r = world.client.post("/vk/callback", json={"type": kind, "group_id": group,
                                                "secret": VK_SECRET, "object": obj})
    answered(world, r, before)


@HYPOTHESIS
@given(data=JSON, contact_id=st.one_of(st.none(), st.integers(-2**80, 2**80), st.text(max_size=5)),
       event=st.sampled_from([SLUG, "nope", None, 5]))
def test_any_signed_registration_is_answered(world: World, data: object, contact_id: object,
                                             event: object) -> None:
    if isinstance(data, dict):
        data = {**data, "event": event, "contact_id": contact_id}
    before = world.snapshot()
    answered(world, registration(world, data), before)


@HYPOTHESIS
@given(batch=st.lists(JSON, max_size=3) | JSON)
def test_any_signed_sendgrid_batch_is_answered(world: World, batch: object) -> None:
    body = json.dumps(batch).encode()
    before = world.snapshot()
    answered(world, world.client.post("/sendgrid/events", content=body,
                                      headers=sendgrid_headers(body)), before)


@HYPOTHESIS
@given(fields=st.dictionaries(st.sampled_from(["MessageSid", "CallSid", "MessageStatus",
                                               "CallStatus", "ErrorCode", "From", "To", "Body",
                                               "OptOutType", "AnsweredBy", "x"]),
                              st.text(max_size=20), max_size=6),
       path=st.sampled_from(["/twilio/status", "/twilio/inbound"]))
def test_any_signed_twilio_callback_is_answered(world: World, fields: dict[str, str],
                                                path: str) -> None:
    fields = {k: v.replace("\x00", "") for k, v in fields.items()}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC_URL + path, fields)
    before = world.snapshot()
    r = world.client.post(path, data=fields, headers={"X-Twilio-Signature": signature})
    answered(world, r, before)


@HYPOTHESIS
@given(token=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_~%", min_size=1,
                     max_size=300), method=st.sampled_from(["GET", "POST"]))
def test_any_unsubscribe_link_is_answered(world: World, token: str, method: str) -> None:
    before = world.snapshot()
    r = world.client.request(method, "/unsubscribe/" + token)
    assert r.status_code in (403, 404), r.status_code
    assert world.snapshot() == before
