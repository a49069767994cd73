"""SMS through Twilio Programmable Messaging, with the official `twilio` SDK.

One message per request (Twilio has no batch send); from a sender number or a Messaging
Service, with an optional status callback URL. The reply's `sid` is the provider message
id. Error 21610 (the recipient replied STOP) withdraws the contact's SMS consent; 21211
and 21614 (not a valid, or not a mobile, number) mark the number unreachable.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode

import requests
from prefect.blocks.core import Block
from pydantic import Field, SecretStr
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from channels.base import (
    Channel,
    ChannelError,
    ConfigurationError,
    Live,
    OutgoingMessage,
    PermanentError,
    PerThread,
    RetryableError,
    SendResult,
    credentials,
    retry_hint,
    transport_error,
)
from promo.secrets import reveal
from promo.settings import Settings

PROVIDER = "twilio"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")

# Twilio error codes (https://www.twilio.com/docs/api/errors/<code>), the one table that the
# adapter (a refused request) and the status callback (a message that failed later) read.
# The person opted out with Twilio itself: their SMS consent is withdrawn
OPTED_OUT = {21610: "the recipient replied STOP to this sender"}
# the number will never receive an SMS: its consent is marked unreachable
UNREACHABLE = {
    21211: "invalid 'To' phone number",
    21614: "'To' number is not a mobile number",
    21217: "phone number not reachable",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
}
RATE_LIMITED = {20429, 14107}  # too many requests; SMS rate limit exceeded
CONFIGURATION = {20003, 20005, 20008, 21212, 21606, 21659, 21701, 21703, 21704}  # auth, sender


class TwilioCredentials(Block):
    """Twilio's account (SID and auth token) and the sender of SMS and calls. Register the
    type with `prefect block register -m channels.twilio_sms`, save one on the Blocks page
    and name it in the `credential_blocks` setting (`twilio = "<block name>"`); without it
    the `twilio_*` settings are read. The status webhook checks signatures with this token."""

    _block_type_name = "event-promo Twilio"

    account_sid: str | None = Field(None, description="AC...")
    auth_token: SecretStr | None = None
    from_number: str | None = Field(None, description="the number SMS and calls come from")
    messaging_service_sid: str | None = Field(None, description="MG...: sends SMS from its pool")
    base_url: str | None = Field(None, description="another API host (tests, a proxy)")

    @classmethod
    def from_settings(cls, s: Settings) -> TwilioCredentials | None:
        if not (s.twilio_account_sid or s.twilio_auth_token):
            return None
        return cls(account_sid=s.twilio_account_sid, auth_token=s.twilio_auth_token,
                   from_number=s.twilio_from, messaging_service_sid=s.twilio_messaging_service_sid,
                   base_url=s.twilio_base_url)


def twilio_credentials(settings: Settings) -> TwilioCredentials | None:
    return credentials(TwilioCredentials, PROVIDER, settings)


def account(settings: Settings) -> TwilioCredentials | None:
    """The credentials when the account itself (SID and auth token) is complete."""
    c = twilio_credentials(settings)
    return c if c is not None and c.account_sid and c.auth_token else None


def client_options(c: TwilioCredentials, settings: Settings) -> dict[str, Any]:
    """What SMS and calls share: the API host, the status callback, the timeout."""
    return {"base_url": c.base_url, "status_callback": settings.twilio_status_callback_url,
            "timeout": settings.send_timeout}


def build(channel: str, settings: Settings) -> Live | None:
    """The SMS adapter, when the account and a sender are set up."""
    c = account(settings)
    if channel != "sms" or c is None or not (c.from_number or c.messaging_service_sid):
        return None
    adapter = TwilioSMS(c.account_sid, reveal(c.auth_token), sender=c.from_number,
                        messaging_service_sid=c.messaging_service_sid,
                        **client_options(c, settings))
    # Twilio's messaging throughput is per sender (or per Messaging Service)
    return Live(adapter, f"twilio_sms:{c.messaging_service_sid or c.from_number}", "twilio_sms")


def missing(channel: str, settings: Settings) -> str | None:
    """What a partly set-up account still lacks for SMS or calls (None: not set up, or set)."""
    c = twilio_credentials(settings)
    if c is None:
        return None
    need = [k for k, v in (("twilio_account_sid", c.account_sid),
                           ("twilio_auth_token", c.auth_token)) if not v]
    if channel == "sms" and not (c.from_number or c.messaging_service_sid):
        need.append("twilio_from or twilio_messaging_service_sid")
    if channel == "voice" and not c.from_number:
        need.append("twilio_from (calls need a number; a Messaging Service cannot call)")
    return ", ".join(need) or None


class _HttpClient(TwilioHttpClient):
    """Keeps the last reply's headers: TwilioRestException does not carry Retry-After."""

    last_headers: dict[str, str] | None = None

    def request(self, *args: Any, **kwargs: Any) -> Response:
        response = super().request(*args, **kwargs)
        self.last_headers = dict(response.headers or {})
        return response


def twilio_clients(account_sid: str, auth_token: str, *, base_url: str | None,
                   timeout: float) -> PerThread:
    """One SDK client per sending thread (its HTTP client remembers the last reply)."""
    def make() -> Client:
        client = Client(account_sid, auth_token, http_client=_HttpClient(timeout=timeout))
        if base_url:
            client.api.base_url = base_url.rstrip("/")
        return client

    return PerThread(make, lambda c: c.http_client.session.close())


def classify(exc: TwilioRestException, headers: dict[str, str] | None) -> ChannelError | ConfigurationError:
    """Twilio's error reply, as our error."""
    message = f"Twilio {exc.status} error {exc.code}: {exc.msg}"
    code, status = exc.code, exc.status
    if status == 429 or code in RATE_LIMITED or status >= 500:
        return RetryableError(message, provider=PROVIDER, status=status, code=code,
                              retry_after=retry_hint(headers))
    if status in (401, 403) or code in CONFIGURATION:
        return ConfigurationError(message, provider=PROVIDER, status=status, code=code)
    return PermanentError(message, provider=PROVIDER, status=status, code=code,
                          opted_out=code in OPTED_OUT, unreachable=code in UNREACHABLE)


def error_code(text: str | None) -> int | None:
    """A status callback's ErrorCode as a number (None when absent or not a number)."""
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def error_text(code: int | str) -> str:
    """`error <code>: <what it means>`, as the ledger and the consent history say it."""
    n = error_code(str(code))
    known = UNREACHABLE.get(n) or OPTED_OUT.get(n)  # type: ignore[arg-type]
    return f"error {code}: {known}" if known else f"error {code}"


def callback_url(base: str, key: str) -> str:
    """The status callback URL with the message's ledger key, so a callback that arrives
    before the batch has recorded the SID still finds its row."""
    return f"{base}{'&' if '?' in base else '?'}{urlencode({'promo_key': key})}"


def check_number(m: OutgoingMessage) -> str:
    if not m.address or not E164.match(m.address):
        raise PermanentError(f"{m.address!r} is not an E.164 phone number", provider=PROVIDER,
                             code=21211, unreachable=True)
    return m.address


class TwilioChannel(Channel):
    """What Twilio's messages and calls share: one API call per message, each answered with
    the resource's SID. Subclasses build the call's fields and name the resource."""

    max_batch: ClassVar[int] = 1
    clients: PerThread

    def request(self, m: OutgoingMessage) -> dict[str, Any]:
        raise NotImplementedError

    def create(self, client: Client, fields: dict[str, Any]) -> Any:
        raise NotImplementedError

    def recent(self, client: Client, to: str, since: datetime) -> list[Any]:
        """The account's messages or calls to `to` from about `since`, newest first."""
        raise NotImplementedError

    def lookup(self, to: str, since: datetime) -> str | None:
        """The SID of a message (or call) to `to` that Twilio created at `since` or later
        (a minute's slack for the clocks), or None: Twilio has none. After a crash this tells
        whether a request in flight arrived. Raises ChannelError when Twilio cannot say."""
        client = self.clients.get()
        try:
            items = self.recent(client, to, since)
        except TwilioRestException as exc:
            raise classify(exc, client.http_client.last_headers) from None
        except requests.RequestException as exc:
            raise transport_error(exc, PROVIDER) from None
        floor = since - timedelta(minutes=1)
        for item in items:
            created = item.date_created
            if created is not None and created >= floor:
                return item.sid
        return None

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        results = []
        client = self.clients.get()
        for m in messages:
            try:
                created = self.create(client, self.request(m))
            except TwilioRestException as exc:
                raise classify(exc, client.http_client.last_headers) from None
            except requests.RequestException as exc:
                raise transport_error(exc, PROVIDER) from None
            results.append(SendResult(m.id, created.sid))
        return results

    def close(self) -> None:
        self.clients.close()


class TwilioSMS(TwilioChannel):
    name: ClassVar[str] = "sms"

    def __init__(self, account_sid: str, auth_token: str, *, sender: str | None = None,
                 messaging_service_sid: str | None = None, base_url: str | None = None,
                 status_callback: str | None = None, timeout: float = 10.0) -> None:
        if not sender and not messaging_service_sid:
            raise ConfigurationError("sms: set twilio_from or twilio_messaging_service_sid")
        self.clients = twilio_clients(account_sid, auth_token, base_url=base_url, timeout=timeout)
        self.sender = sender
        self.messaging_service_sid = messaging_service_sid
        self.status_callback = status_callback

    def request(self, m: OutgoingMessage) -> dict[str, Any]:
        fields: dict[str, Any] = {"to": check_number(m), "body": m.text}
        if self.messaging_service_sid:  # the service picks the sender from its pool
            fields["messaging_service_sid"] = self.messaging_service_sid
        else:
            fields["from_"] = self.sender
        if self.status_callback:
            fields["status_callback"] = callback_url(self.status_callback, m.key)
        return fields

    def create(self, client: Client, fields: dict[str, Any]) -> Any:
        return client.messages.create(**fields)

    def recent(self, client: Client, to: str, since: datetime) -> list[Any]:
        # by recipient only, newest first: a DateSent filter would miss a message Twilio
        # still holds queued (no date_sent yet), and sending that one again is a duplicate;
        # `lookup` compares date_created itself
        return client.messages.list(to=to, limit=50)
