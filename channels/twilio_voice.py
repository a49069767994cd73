"""Voice messages through Twilio Programmable Voice: a call that reads the text aloud.

The call carries its TwiML inline (`calls.create(twiml=...)`), built with the SDK's
`VoiceResponse`: `<Say>` in the contact's language. With answering-machine detection
on, Twilio waits for the greeting (or its end) before speaking. Twilio's default is one
call per second per account (`rate_limits.twilio_calls`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from channels.base import ConfigurationError, Live, OutgoingMessage
from channels.twilio_sms import (
    TwilioChannel,
    account,
    callback_url,
    check_number,
    client_options,
    missing,
    twilio_clients,
)
from promo.secrets import reveal
from promo.settings import Settings

__all__ = ["MAX_TWIML_CHARS", "TwilioVoice", "build", "missing", "twiml"]

# Twilio refuses a call whose inline `twiml` is longer (error 32018)
MAX_TWIML_CHARS = 4000
# the languages <Say> speaks, by our contacts' language codes
SAY_LANGUAGES = {"ru": "ru-RU", "en": "en-US"}


def twiml(text: str, language: str) -> str:
    """The call's script: the text, said once, in the contact's language."""
    response = VoiceResponse()
    response.say(text, language=SAY_LANGUAGES.get(language, "en-US"))
    return str(response)


class TwilioVoice(TwilioChannel):
    name: ClassVar[str] = "voice"

    def __init__(self, account_sid: str, auth_token: str, *, sender: str | None,
                 base_url: str | None = None, status_callback: str | None = None,
                 machine_detection: str | None = None, timeout: float = 10.0) -> None:
        if not sender:
            raise ConfigurationError("voice: calls need a number to call from (twilio_from)")
        self.clients = twilio_clients(account_sid, auth_token, base_url=base_url, timeout=timeout)
        self.sender = sender
        self.status_callback = status_callback
        self.machine_detection = machine_detection

    def request(self, m: OutgoingMessage) -> dict[str, Any]:
        fields: dict[str, Any] = {"to": check_number(m), "from_": self.sender,
                                  "twiml": twiml(m.text, m.language)}
        if self.machine_detection:
            fields["machine_detection"] = self.machine_detection
        if self.status_callback:
            fields["status_callback"] = callback_url(self.status_callback, m.key)
        return fields

    def create(self, client: Client, fields: dict[str, Any]) -> Any:
        return client.calls.create(**fields)

    def recent(self, client: Client, to: str, since: datetime) -> list[Any]:
        # by recipient only: a call still queued has no start time to filter on yet
        return client.calls.list(to=to, limit=50)


def build(channel: str, settings: Settings) -> Live | None:
    """The voice adapter, when the account and a number to call from are set up."""
    c = account(settings)
    if channel != "voice" or c is None or not c.from_number:
        return None
    adapter = TwilioVoice(c.account_sid, reveal(c.auth_token), sender=c.from_number,
                          machine_detection=settings.twilio_machine_detection,
                          **client_options(c, settings))
    return Live(adapter, f"twilio_calls:{c.account_sid}", "twilio_calls")
