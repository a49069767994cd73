"""Email through SendGrid's v3 Mail Send, with the official `sendgrid` SDK.

Every email is rendered for its recipient (name, signed unsubscribe link). Emails whose
content differs only in those values go together, up to 1,000 a request: one content
with a token where each value was, and a personalization per recipient with the values
as substitutions, its `List-Unsubscribe` headers, and custom_args carrying the ledger key
(SendGrid echoes them in its Event Webhook). An email is grouped only when substituting
its values back gives exactly what was rendered for it (`personalize`); any other goes in
a request of its own. HTML with the plain-text part first. The reply's `X-Message-Id` is
the provider message id (one per request; the webhook finds a message by its key).
"""

from __future__ import annotations

import base64
import json
import urllib.error
from email.utils import parseaddr
from http.client import HTTPException
from typing import ClassVar

from markupsafe import escape
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


MAX_PERSONALIZATIONS = 1000  # SendGrid's limit per request


def _tokens(field: str) -> tuple[str, str]:
    # as the text and as the HTML (autoescaped) carry the value
    # (neither a part of the other: SendGrid substitutes them in an order of its own)
    return f"-promo-{field}-", f"-promo-html-{field}-"


def substitute(text: str, substitutions: dict[str, str]) -> str:
    """What SendGrid does with a personalization's substitutions: each key replaced by its
    value wherever it occurs."""
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return text


def personalize(m: OutgoingMessage) -> tuple[tuple[str, str, str], dict[str, str]] | None:
    """The email's subject, text and HTML with a token for each of the recipient's own
    values, and the substitutions that give it back; None when they would not give back
    exactly what was rendered (a value that also occurs as part of the shared text, a token
    in a value...): that email goes alone."""
    parts = (m.subject or "", m.text, m.html or "")
    subs: dict[str, str] = {}
    subject, text, html = parts
    # the longest value first: a name may occur inside a link, never a link inside a name
    for field, value in sorted(m.personal.items(), key=lambda kv: -len(kv[1])):
        plain, marked = _tokens(field)
        escaped = str(escape(value))  # as Jinja's autoescape writes it in the HTML
        if value in subject or value in text:
            subject, text = subject.replace(value, plain), text.replace(value, plain)
            subs[plain] = value
        if escaped in html:
            html = html.replace(escaped, marked)
            subs[marked] = escaped
    templated = (subject, text, html)
    if any(token in v or (token != other and token in other)
           for token in subs for other in subs for v in subs.values()):
        return None  # SendGrid's order of substitution would matter
    if tuple(substitute(p, subs) for p in templated) != parts:
        return None
    return templated, subs


class SendGridEmail(Channel):
    name: ClassVar[str] = "email"
    max_batch: ClassVar[int] = MAX_PERSONALIZATIONS

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

    def batches(self, messages: list[OutgoingMessage]) -> list[list[OutgoingMessage]]:
        """Emails with the same content once their own values are tokens, and the same
        attachments, up to 1,000 a request; every other email alone."""
        groups: dict[tuple, list[OutgoingMessage]] = {}
        alone: list[list[OutgoingMessage]] = []
        for m in messages:
            shared = personalize(m)
            if shared is None:
                alone.append([m])
                continue
            key = (shared[0], tuple(m.attachments))
            groups.setdefault(key, []).append(m)
        out = [g[i:i + self.max_batch] for g in groups.values()
               for i in range(0, len(g), self.max_batch)]
        return out + alone

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        """One request for the messages (one of `batches`' groups)."""
        results: list[SendResult] = []
        valid: list[OutgoingMessage] = []
        for m in messages:
            if _is_address(m.address):
                valid.append(m)
            else:
                results.append(SendResult(m.id, error=PermanentError(
                    f"{m.address!r} is not an email address", provider=PROVIDER,
                    unreachable=True)))
        if not valid:
            if len(messages) == 1:
                raise results[0].error
            return results
        body = self.build(valid[0]) if len(valid) == 1 else self.build_group(valid)
        try:
            response = self.client.send(body)
        except HTTPError as exc:
            error = classify(exc)
            if len(valid) == 1 or isinstance(error, ConfigurationError):
                raise error from None
            return results + _each(valid, error)
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            raise transport_error(exc, PROVIDER) from None
        # sandbox mode answers 200 without an id: nothing was sent
        provider_id = response.headers.get("X-Message-Id")
        return results + [SendResult(m.id, provider_id) for m in valid]

    def build_group(self, messages: list[OutgoingMessage]) -> dict:
        """One Mail Send request for emails that share their content (`personalize`)."""
        first = messages[0]
        (subject, text, html), _ = personalize(first)
        people = []
        for m in messages:
            _, subs = personalize(m)
            person: dict = {"to": [{"email": m.address}],
                            "custom_args": {"promo_key": m.key, "promo_message_id": str(m.id)}}
            if subs:
                person["substitutions"] = subs
            if m.headers:
                person["headers"] = dict(m.headers)
            people.append(person)
        content = [{"type": "text/plain", "value": text}]
        if first.html is not None:
            content.append({"type": "text/html", "value": html})
        body: dict = {"personalizations": people,
                      "from": {"email": self.sender_email, **({"name": self.sender_name}
                                                              if self.sender_name else {})},
                      "subject": subject, "content": content}
        if first.attachments:
            body["attachments"] = [
                {"content": base64.b64encode(data).decode(), "filename": filename,
                 "type": content_type, "disposition": "attachment"}
                for filename, content_type, data in first.attachments]
        if self.sandbox:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return body


def _is_address(address: str | None) -> bool:
    local, _, domain = (address or "").rpartition("@")
    return bool(local) and "." in domain and not any(c.isspace() or c in "<>,;" for c in address)


def _each(messages: list[OutgoingMessage], error: ChannelError) -> list[SendResult]:
    """A refused request's error for each of its recipients; when SendGrid names the
    recipients it refuses (`personalizations.3.to.0.email`), only they fail for good, and
    the others, not sent, are tried again without them."""
    fields = [e.get("field") or "" for e in (error.response or []) if isinstance(e, dict)]
    named = {int(f.split(".")[1]) for f in fields
             if f.startswith("personalizations.") and f.split(".")[1].isdigit()}
    if not named or error.retryable:
        return [SendResult(m.id, error=error) for m in messages]
    again = RetryableError(f"not sent: another recipient of the request was refused ({error})",
                           provider=PROVIDER)
    return [SendResult(m.id, error=error if i in named else again)
            for i, m in enumerate(messages)]


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
