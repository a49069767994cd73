"""After a crash, what the provider can tell: Twilio's list endpoints (served by the fake as
Twilio serves them) say whether a message or call in flight arrived; and the 1-call-per-second
pace that drew 429s at 3% headroom."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from channels import live_channel, ratelimit
from promo.settings import Settings
from tests.fakes import FakeTwilio
from tests.fakes.harness import message

SID = "AC" + "4" * 32


def settings(fake: FakeTwilio, **kw) -> Settings:
    """Twilio's settings for the fake; the store (where the accounts' pace is kept) is the
    test's own (`store`)."""
    return Settings(_env_file=None, twilio_account_sid=SID, twilio_auth_token="token",
                    twilio_from="+15005550006", twilio_base_url=fake.url, **kw)


def test_twilio_lookup_finds_what_arrived_and_nothing_else(store: Path) -> None:
    with FakeTwilio(SID, "token") as fake:
        s = settings(fake)
        before = datetime.now(UTC) - timedelta(seconds=5)
        for name in ("sms", "voice"):
            channel = live_channel(name, s)
            try:
                [sent] = channel.deliver([message(1, name, "+79990000001")])
                assert sent.ok
                # the number that got it: found, with its SID; another number: nothing
                assert channel.lookup("+79990000001", before) == sent.provider_message_id
                assert channel.lookup("+79990000002", before) is None
                # one created before the claim (an earlier wave) is not taken for it
                assert channel.lookup("+79990000001", datetime.now(UTC) + timedelta(minutes=5)) \
                    is None
            finally:
                channel.close()
        # the SDK asked the list endpoints by recipient, and not by DateSent: a message
        # Twilio still holds queued has no date_sent and would be missed, then sent twice
        listed = fake.listed
        messages = [r for r in listed if r.path.endswith("/Messages.json")]
        assert any(r.query.get("To") == "+79990000001" for r in messages)
        assert not any(k.startswith("DateSent") for r in messages for k in r.query)
        assert any(r.query.get("To") == "+79990000001"
                   for r in listed if r.path.endswith("/Calls.json"))


def test_one_call_per_second_draws_no_rate_limit_reply(store: Path) -> None:
    """A bucket of one call per second (Twilio's default for calls): paced with an absolute
    slack, not 3% (31 ms), no call is refused."""
    assert ratelimit.paced_rate(1.0) < 1 / (1 + ratelimit.JITTER / 2)
    assert abs(ratelimit.paced_rate(30.0) - 30 * ratelimit.HEADROOM) < 1e-9
    with FakeTwilio(SID, "token", rate_limits={"twilio_calls": 1.0}, latency=0.05) as fake:
        s = settings(fake, rate_limits={"twilio_calls": 1.0}, send_concurrency=4)
        ratelimit._limiters.clear()
        channel = live_channel("voice", s)
        try:
            results = channel.deliver([message(i, "voice", f"+7999000{i:04d}")
                                       for i in range(1, 9)])
        finally:
            channel.close()
        assert all(r.ok for r in results)
        assert fake.rate_limited == 0
