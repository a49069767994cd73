"""The app as served: health, a real uvicorn on loopback, the CLI that starts it."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from twilio.request_validator import RequestValidator
from typer.testing import CliRunner

from promo.cli import app as cli_app
from promo.webhooks import PATHS, webhook_url
from promo.webhooks.app import create_app
from tests.webhook_support import PUBLIC_URL, TWILIO_TOKEN, World, make_world


@pytest.fixture
def world(store: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return make_world(store, monkeypatch)


def test_health_says_the_store_answers_and_what_is_configured(world: World) -> None:
    r = world.client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "configured": {
        "twilio": True, "sendgrid": True, "vk": True, "telegram": True, "registrations": True,
        "unsubscribe": True}}


def test_health_fails_when_the_store_does_not_answer(store: Path) -> None:
    from starlette.testclient import TestClient

    from promo.settings import Settings

    broken = Settings(database_url=f"sqlite:///{store}/missing-folder/promo.db")
    r = TestClient(create_app(broken)).get("/health")
    assert r.status_code == 503
    assert r.json()["status"] == "database unavailable"


def test_every_endpoint_refuses_everything_until_its_secret_is_set(store: Path) -> None:
    from starlette.testclient import TestClient

    client = TestClient(create_app())
    for name in ("twilio_status", "twilio_inbound", "sendgrid", "vk", "telegram",
                 "registrations"):
        r = client.post(PATHS[name], content=b'{"type": "confirmation"}',
                        headers={"X-Twilio-Signature": "x", "X-Promo-Signature": "x",
                                 "X-Telegram-Bot-Api-Secret-Token": "x"})
        assert r.status_code == 403, name


def test_webhook_urls_are_the_public_url_plus_the_path(world: World) -> None:
    assert webhook_url(world.settings, "twilio_status") == PUBLIC_URL + "/twilio/status"
    result = CliRunner().invoke(cli_app, ["webhooks", "urls"])
    assert result.exit_code == 0
    for name in ("twilio_status", "twilio_inbound", "sendgrid", "vk", "telegram",
                 "registrations"):
        assert webhook_url(world.settings, name) in result.output


def test_serve_runs_uvicorn_with_the_app(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    result = CliRunner().invoke(cli_app, ["webhooks", "serve", "--host", "127.0.0.1",
                                          "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    assert seen["app"].state.settings.public_url == PUBLIC_URL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_stop_through_a_running_uvicorn_behind_a_proxy(world: World) -> None:
    """The server listens on 127.0.0.1:<port>; Twilio signed the public URL a proxy serves."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(world.settings), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/health").json()["status"] == "ok"
        fields = {"MessageSid": "SMviaproxy", "From": "+79161234567", "Body": "STOP"}
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(
            PUBLIC_URL + "/twilio/inbound", fields)
        r = httpx.post(base + "/twilio/inbound", data=fields,
                       headers={"X-Twilio-Signature": signature,
                                "X-Forwarded-Proto": "https",
                                "X-Forwarded-Host": "hooks.example.org"})
        assert r.status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert world.next_wave()["sms"] == ("suppressed", "opted out")


@pytest.fixture(params=["sqlite", "postgresql"])
def any_world(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> World:
    request.getfixturevalue("store" if request.param == "sqlite" else "pg_store")
    return make_world(tmp_path, monkeypatch)


def test_the_same_event_delivered_at_once_from_many_connections_applies_once(
        any_world: World) -> None:
    """Providers retry in parallel: the unique dedupe key lets exactly one delivery apply."""
    from concurrent.futures import ThreadPoolExecutor

    from starlette.datastructures import ImmutableMultiDict

    from promo.webhooks.sendgrid import handle_events
    from promo.webhooks.twilio import handle_inbound

    stop = ImmutableMultiDict({"MessageSid": "SMrace", "From": "+79161234567", "Body": "STOP"})
    bounce = {"event": "bounce", "type": "bounce", "sg_event_id": "evt-race",
              "email": "anna@example.org",
              "promo_key": f"python-meetup-74/announce/{any_world.contact_id}/email"}
    with ThreadPoolExecutor(8) as pool:
        sms = list(pool.map(lambda _: handle_inbound(any_world.settings, stop), range(8)))
        mail = list(pool.map(lambda _: handle_events(any_world.settings, [dict(bounce)])[0],
                             range(8)))
    assert sorted(r["outcome"] for r in sms) == ["applied"] + ["duplicate"] * 7
    assert sorted(r["outcome"] for r in mail) == ["applied"] + ["duplicate"] * 7
    assert any_world.webhook_events() == 2
    plan = any_world.next_wave()
    assert plan["sms"] == ("suppressed", "opted out")
    assert plan["email"] == ("suppressed", "opted out")
    assert any_world.message("email").delivery_status == "bounced"


def test_serving_with_the_placeholder_secret_is_refused(store, monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Anyone can sign links with the published default: no webhooks, no Telegram links."""
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not serve"))
    for args in (["webhooks", "serve"], ["telegram", "link", "1"], ["telegram", "poll", "--once"]):
        result = CliRunner().invoke(cli_app, args)
        assert result.exit_code != 0
        assert "needs a secret of your own" in str(result.exception), args
