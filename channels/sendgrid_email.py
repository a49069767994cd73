"""Email through SendGrid's v3 Mail Send, with the official `sendgrid` SDK.

One request per message: every email is rendered for its recipient (name, signed
unsubscribe link), so personalizations of one request could not share the content.
HTML with the plain-text part first, the `List-Unsubscribe` headers, and custom_args
carrying the ledger key (SendGrid echoes them in its Event Webhook). The reply's
`X-Message-Id` is the provider message id.
"""

from __future__ import annotations

import base64
import json
import urllib.error
from email.utils import parseaddr
from http.client import HTTPException
from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Attachment,
    CustomArg,
    Disposition,
    FileContent,
    FileName,
    FileType,
    From,
    Header,
    Mail,
    MailSettings,
    SandBoxMode,
    To,
)

from channels.base import (
    Channel,
    ChannelError,
    ConfigurationError,
    Live,
    OutgoingMessage,
    PermanentError,
    RetryableError,
    SendResult,
    credentials,
    retry_hint,
    transport_error,
)
from promo.secrets import reveal
from promo.settings import Settings

PROVIDER = "sendgrid"


class SendGridCredentials(Block):
    """SendGrid Mail Send: the API key and host. Register the type with
    `prefect block register -m channels.sendgrid_email`, save one on the Blocks page and name
    it in the `credential_blocks` setting (`sendgrid = "<block name>"`); without it the
    `sendgrid_*` settings are read."""

    _block_type_name = "event-promo SendGrid"

    api_key: SecretStr | None = Field(None, description="a Mail Send API key")
    host: str = "https://api.sendgrid.com"
    sandbox: bool = Field(False, description="SendGrid validates the mail and sends nothing")

    @classmethod
    def from_settings(cls, s: Settings) -> SendGridCredentials | None:
        if not s.sendgrid_api_key:
            return None
        return cls(api_key=s.sendgrid_api_key, host=s.sendgrid_host, sandbox=s.sendgrid_sandbox)


def build(channel: str, settings: Settings) -> Live | None:
    """The email adapter, when SendGrid is set up."""
    creds = credentials(SendGridCredentials, PROVIDER, settings)
    if channel != "email" or creds is None or not creds.api_key:
        return None
    adapter = SendGridEmail(reveal(creds.api_key), sender=settings.email_from, host=creds.host,
                            sandbox=creds.sandbox, timeout=settings.send_timeout)
    return Live(adapter, "sendgrid", "sendgrid")


def missing(channel: str, settings: Settings) -> str | None:
    return None  # one key: set or not


class SendGridEmail(Channel):
    name: ClassVar[str] = "email"
    max_batch: ClassVar[int] = 1

    def __init__(self, api_key: str, *, sender: str, host: str = "https://api.sendgrid.com",
                 sandbox: bool = False, timeout: float = 10.0) -> None:
        self.client = SendGridAPIClient(api_key=api_key, host=host.rstrip("/"))
        self.client.client.timeout = timeout  # python_http_client passes it on to urllib
        self.sender_name, self.sender_email = parseaddr(sender)
        self.sandbox = sandbox

    def build(self, m: OutgoingMessage) -> Mail:
        mail = Mail(from_email=From(self.sender_email, self.sender_name or None),
                    to_emails=To(m.address), subject=m.subject or "",
                    plain_text_content=m.text, html_content=m.html)
        for name, value in m.headers.items():
            mail.header = Header(name, value)
        mail.custom_arg = CustomArg("promo_key", m.key)
        mail.custom_arg = CustomArg("promo_message_id", str(m.id))
        for filename, content_type, data in m.attachments:  # the .ics invitation
            mail.attachment = Attachment(FileContent(base64.b64encode(data).decode()),
                                         FileName(filename), FileType(content_type),
                                         Disposition("attachment"))
        if self.sandbox:
            settings = MailSettings()
            settings.sandbox_mode = SandBoxMode(True)
            mail.mail_settings = settings
        return mail

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        return [self._send(m) for m in messages]

    def _send(self, m: OutgoingMessage) -> SendResult:
        local, _, domain = (m.address or "").rpartition("@")
        if not local or "." not in domain or any(c.isspace() or c in "<>,;" for c in m.address):
            raise PermanentError(f"{m.address!r} is not an email address", provider=PROVIDER,
                                 unreachable=True)
        try:
            response = self.client.send(self.build(m))
        except HTTPError as exc:
            raise classify(exc) from None
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            raise transport_error(exc, PROVIDER) from None
        # sandbox mode answers 200 without an id: nothing was sent
        return SendResult(m.id, response.headers.get("X-Message-Id"))


def classify(exc: HTTPError) -> ChannelError | ConfigurationError:
    """SendGrid's reply to a failed request, as our error."""
    status = exc.status_code
    try:
        errors = json.loads(exc.body or b"{}").get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    detail = "; ".join(f"{e.get('field') or ''}: {e.get('message')}".lstrip(": ")
                       for e in errors) or str(exc.reason)
    message = f"SendGrid {status}: {detail}"
    if status == 429:
        return RetryableError(message, provider=PROVIDER, status=status,
                              retry_after=retry_hint(exc.headers), response=errors)
    if status >= 500:
        return RetryableError(message, provider=PROVIDER, status=status, response=errors)
    if status in (401, 403):
        # a wrong or revoked key, a key without mail.send, an unverified sender
        return ConfigurationError(message, provider=PROVIDER, status=status)
    # a recipient address SendGrid refuses: that contact cannot be emailed
    bad_address = any(".to." in (e.get("field") or "") for e in errors)
    return PermanentError(message, provider=PROVIDER, status=status, response=errors,
                          unreachable=bad_address)
