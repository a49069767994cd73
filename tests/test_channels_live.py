"""Which channels go live for which settings, and credentials from Prefect Secret blocks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

import channels
import promo.secrets
from channels import get_channel, live_channel
from channels.base import ConfigurationError
from promo.secrets import reveal
from promo.settings import Settings
from tests.fakes import FakeTwilio
from tests.fakes.harness import message

SID = "AC" + "3" * 32
FULL = {
    "sendgrid_api_key": "SG.key", "twilio_account_sid": SID, "twilio_auth_token": "token",
    "twilio_from": "+15005550006", "vk_group_token": "vk-group", "vk_group_id": 77,
    "vk_user_token": "vk-user", "telegram_bot_token": "1:bot", "telegram_channel": "@pymeetup",
}


@pytest.mark.parametrize(("settings", "live"), [
    ({}, set()),
    (FULL, {"email", "sms", "voice", "vk", "vk_wall", "telegram", "telegram_channel"}),
    # a Messaging Service sends SMS, but a call needs a number to call from
    ({**FULL, "twilio_from": None, "twilio_messaging_service_sid": "MG" + "1" * 32},
     {"email", "sms", "vk", "vk_wall", "telegram", "telegram_channel"}),
    ({**FULL, "twilio_auth_token": None}, {"email", "vk", "vk_wall", "telegram", "telegram_channel"}),
    ({**FULL, "vk_user_token": None}, {"email", "sms", "voice", "vk", "telegram", "telegram_channel"}),
    ({**FULL, "vk_group_id": None}, {"email", "sms", "voice", "vk", "telegram", "telegram_channel"}),
    ({**FULL, "telegram_channel": None}, {"email", "sms", "voice", "vk", "vk_wall", "telegram"}),
    ({"telegram_bot_token": "1:bot"}, {"telegram"}),
])
def test_a_channel_is_live_when_its_credentials_are_set(settings: dict, live: set[str]) -> None:
    s = Settings(_env_file=None, **settings)
    names = ("email", "sms", "voice", "vk", "vk_wall", "telegram", "telegram_channel")
    built = {name: live_channel(name, s) for name in names}
    assert {name for name, ch in built.items() if ch is not None} == live
    for ch in built.values():
        if ch is not None:
            ch.close()


def test_live_channels_share_the_accounts_limiter_and_settings() -> None:
    s = Settings(_env_file=None, **FULL, rate_limits={"telegram": 25}, send_concurrency=5)
    direct, post = live_channel("telegram", s), live_channel("telegram_channel", s)
    assert direct.limiter is post.limiter  # one bot: one limit for both
    assert direct.limiter.rate == pytest.approx(25 * channels.ratelimit.HEADROOM)
    assert direct.concurrency == 5
    assert live_channel("sms", s).limiter is not live_channel("voice", s).limiter


def test_without_credentials_the_outbox_says_so_once(caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels, "_warned", set())
    caplog.set_level(logging.INFO, logger="channels")
    s = Settings(_env_file=None)
    for _ in range(3):
        assert not get_channel("sms", s).live
    notes = [r.getMessage() for r in caplog.records if "no provider credentials" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith("sms:")


def test_credential_from_a_prefect_secret_block(prefect_api: None, store: Path) -> None:
    from prefect.blocks.system import Secret

    Secret(value="token-from-the-block").save("promo-test-twilio-token", overwrite=True)
    promo.secrets._secrets.clear()
    assert reveal(SecretStr("prefect-secret:promo-test-twilio-token")) == "token-from-the-block"
    assert reveal(SecretStr("plain-token")) == "plain-token"
    with FakeTwilio(SID, "token-from-the-block") as fake:
        s = Settings(_env_file=None, twilio_account_sid=SID, twilio_from="+15005550006",
                     twilio_auth_token="prefect-secret:promo-test-twilio-token",
                     twilio_base_url=fake.url)
        sms = live_channel("sms", s)
        [result] = sms.deliver([message(1, "sms", "+79990000001")])
        sms.close()
    assert result.ok and len(fake.received) == 1
    with pytest.raises(ConfigurationError, match="no-such-block"):
        reveal(SecretStr("prefect-secret:no-such-block"))


def test_webhook_signatures_are_checked_with_the_secret_blocks_value(prefect_api: None) -> None:
    """Twilio's published example (token "12345"), with the token kept in a Secret block."""
    from prefect.blocks.system import Secret
    from starlette.datastructures import ImmutableMultiDict

    from promo.webhooks.twilio import signature_ok

    Secret(value="12345").save("promo-test-webhook-token", overwrite=True)
    promo.secrets._secrets.clear()
    s = Settings(_env_file=None, twilio_auth_token="prefect-secret:promo-test-webhook-token")
    params = ImmutableMultiDict({"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309",
                                 "Digits": "1234", "From": "+14158675309", "To": "+18005551212"})
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signature_ok(s, url, params, {"X-Twilio-Signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8="})
    # read literally, the setting would be the token and nothing would validate
    literal = Settings(_env_file=None, twilio_auth_token="prefect-secret:promo-test-webhook-token")
    literal_token = literal.twilio_auth_token.get_secret_value()
    from twilio.request_validator import RequestValidator

    forged = RequestValidator(literal_token).compute_signature(url, dict(params))
    assert not signature_ok(s, url, params, {"X-Twilio-Signature": forged})


@pytest.mark.parametrize("name, settings, missing", [
    ("telegram_channel", {"telegram_bot_token": "123:abc"}, "set telegram_channel"),
    ("voice", {"twilio_account_sid": SID, "twilio_auth_token": "t",
               "twilio_messaging_service_sid": "MG" + "1" * 32}, "set twilio_from"),
    ("sms", {"twilio_account_sid": SID}, "set twilio_auth_token, twilio_from or"),
    ("vk_wall", {"vk_group_token": "g"}, "set vk_user_token, vk_group_id"),
])
def test_a_provider_set_up_in_part_stops_instead_of_writing_to_the_outbox(
        name: str, settings: dict, missing: str) -> None:
    with pytest.raises(ConfigurationError, match=missing):
        get_channel(name, Settings(_env_file=None, **settings))
    # with nothing of the provider set, the outbox is what the operator means
    assert not get_channel(name, Settings(_env_file=None)).live


def test_credentials_from_a_provider_block(prefect_api: None, store: Path) -> None:
    """A Twilio account kept in its typed Block (the UI's Blocks page edits it), named in
    `credential_blocks`: the adapter sends with it and the status webhook checks with it."""
    from starlette.datastructures import ImmutableMultiDict
    from twilio.request_validator import RequestValidator

    from channels.twilio_sms import TwilioCredentials
    from promo.webhooks.twilio import signature_ok

    TwilioCredentials.register_type_and_schema()
    with FakeTwilio(SID, "token-in-the-twilio-block") as fake:
        TwilioCredentials(account_sid=SID, auth_token="token-in-the-twilio-block",
                          from_number="+15005550006", base_url=fake.url,
                          ).save("promo-test-twilio", overwrite=True)
        # the flat settings say otherwise: the block wins
        s = Settings(_env_file=None, credential_blocks={"twilio": "promo-test-twilio"},
                     twilio_account_sid="AC" + "9" * 32, twilio_auth_token="wrong")
        sms = live_channel("sms", s)
        [result] = sms.deliver([message(1, "sms", "+79990000001")])
        sms.close()
    assert result.ok and len(fake.received) == 1
    loaded = TwilioCredentials.load("promo-test-twilio")
    assert isinstance(loaded.auth_token, SecretStr)  # shown masked, never printed
    assert "token-in-the-twilio-block" not in repr(loaded)

    url = "https://promo.example.org/webhooks/twilio/status"
    params = ImmutableMultiDict({"MessageSid": "SM1", "MessageStatus": "delivered"})
    good = RequestValidator("token-in-the-twilio-block").compute_signature(url, dict(params))
    assert signature_ok(s, url, params, {"X-Twilio-Signature": good})
    assert not signature_ok(s, url, params, {"X-Twilio-Signature": good[:-2] + "xx"})

    missing = Settings(_env_file=None, credential_blocks={"twilio": "no-such-twilio-block"})
    with pytest.raises(ConfigurationError, match="no-such-twilio-block"):
        live_channel("sms", missing)


def test_an_unknown_provider_block_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown provider 'twillio'"):
        Settings(_env_file=None, credential_blocks={"twillio": "x"})
