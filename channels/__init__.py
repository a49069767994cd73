"""Channel adapters and their common protocol; `get_channel` picks the live adapter or the outbox."""

from __future__ import annotations

import logging

from channels.base import Channel, RetryPolicy
from channels.outbox import OutboxChannel
from channels.ratelimit import limiter_for
from promo.errors import ConfigurationError
from promo.secrets import reveal
from promo.settings import Settings

log = logging.getLogger(__name__)

_warned: set[str] = set()


def _ready(channel: Channel, settings: Settings, account: str, rate_key: str) -> Channel:
    """Attach the shared pace of the provider account, the concurrency and the retries."""
    channel.limiter = limiter_for(account, settings.rate_limits[rate_key])
    channel.concurrency = settings.send_concurrency
    channel.retry = RetryPolicy(total=settings.send_retry_seconds)
    return channel


def live_channel(name: str, settings: Settings) -> Channel | None:
    """The provider adapter for `name` when its credentials are set, else None."""
    s = settings
    timeout = s.send_timeout
    if name == "email" and s.sendgrid_api_key:
        from channels.sendgrid_email import SendGridEmail

        channel: Channel = SendGridEmail(reveal(s.sendgrid_api_key), sender=s.email_from,
                                         host=s.sendgrid_host, sandbox=s.sendgrid_sandbox,
                                         timeout=timeout)
        return _ready(channel, s, "sendgrid", "sendgrid")
    twilio = s.twilio_account_sid and s.twilio_auth_token
    if name == "sms" and twilio and (s.twilio_from or s.twilio_messaging_service_sid):
        from channels.twilio_sms import TwilioSMS

        channel = TwilioSMS(s.twilio_account_sid, reveal(s.twilio_auth_token),
                            sender=s.twilio_from,
                            messaging_service_sid=s.twilio_messaging_service_sid,
                            base_url=s.twilio_base_url,
                            status_callback=s.twilio_status_callback_url, timeout=timeout)
        # Twilio's messaging throughput is per sender (or per Messaging Service)
        sender = s.twilio_messaging_service_sid or s.twilio_from
        return _ready(channel, s, f"twilio_sms:{sender}", "twilio_sms")
    if name == "voice" and twilio and s.twilio_from:
        from channels.twilio_voice import TwilioVoice

        channel = TwilioVoice(s.twilio_account_sid, reveal(s.twilio_auth_token),
                              sender=s.twilio_from, base_url=s.twilio_base_url,
                              status_callback=s.twilio_status_callback_url,
                              machine_detection=s.twilio_machine_detection, timeout=timeout)
        return _ready(channel, s, f"twilio_calls:{s.twilio_account_sid}", "twilio_calls")
    if name == "vk" and s.vk_group_token:
        from channels.vk import VKMessages

        channel = VKMessages(reveal(s.vk_group_token), api_url=s.vk_api_url, timeout=timeout)
        return _ready(channel, s, f"vk_group:{s.vk_group_id}", "vk_group")
    if name == "vk_wall" and s.vk_user_token and s.vk_group_id:
        from channels.vk import VKWall

        channel = VKWall(reveal(s.vk_user_token), group_id=s.vk_group_id, api_url=s.vk_api_url,
                         timeout=timeout)
        return _ready(channel, s, f"vk_user:{s.vk_group_id}", "vk_user")
    if name in ("telegram", "telegram_channel") and s.telegram_bot_token:
        from channels.telegram import TelegramChannelPost, TelegramDirect

        token = reveal(s.telegram_bot_token)
        options = {"base_url": s.telegram_base_url, "timeout": timeout,
                   "pool": s.send_concurrency}
        if name == "telegram":
            channel = TelegramDirect(token, **options)
        elif s.telegram_channel:
            channel = TelegramChannelPost(token, channel=s.telegram_channel, **options)
        else:
            return None
        # the bot's overall limit covers its direct messages and its channel posts
        return _ready(channel, s, f"telegram:{token.split(':')[0]}", "telegram")
    return None


def _missing(name: str, s: Settings) -> str | None:
    """The settings a partly set-up provider still lacks for `name`, or None when the
    provider is not set up at all (then the outbox is meant) or is complete."""
    if name in ("sms", "voice") and (s.twilio_account_sid or s.twilio_auth_token):
        need = [k for k in ("twilio_account_sid", "twilio_auth_token") if not getattr(s, k)]
        if name == "sms" and not (s.twilio_from or s.twilio_messaging_service_sid):
            need.append("twilio_from or twilio_messaging_service_sid")
        if name == "voice" and not s.twilio_from:
            need.append("twilio_from (calls need a number; a Messaging Service cannot call)")
        return ", ".join(need) or None
    if name in ("vk", "vk_wall") and (s.vk_group_token or s.vk_user_token):
        need = (["vk_group_token"] if name == "vk" and not s.vk_group_token else
                [k for k in ("vk_user_token", "vk_group_id") if not getattr(s, k)]
                if name == "vk_wall" else [])
        return ", ".join(need) or None
    if name == "telegram_channel" and s.telegram_bot_token and not s.telegram_channel:
        return "telegram_channel (the channel to post to, e.g. @my_meetups)"
    return None


def get_channel(name: str, settings: Settings, logger: logging.Logger | None = None) -> Channel:
    """The live adapter when configured, otherwise the outbox (said once per process).

    A provider set up only in part is a mistake, not a wish for the outbox: recording the
    messages as sent while they went nowhere would be worse than stopping.
    """
    channel = live_channel(name, settings)
    if channel is not None:
        return channel
    missing = _missing(name, settings)
    if missing:
        raise ConfigurationError(
            f"{name}: the provider is set up only in part; set {missing} "
            f"(or unset its other settings to write to the outbox)")
    if name not in _warned:
        _warned.add(name)
        (logger or log).info(
            "%s: no provider credentials set; writing to the outbox at %s/%s",
            name, settings.outbox_dir, name,
        )
    return OutboxChannel(name, settings.outbox_dir, settings.email_from)
