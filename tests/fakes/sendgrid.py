"""A fake SendGrid v3 Mail Send API: POST /v3/mail/send.

`received` holds one email per personalization, as its recipients get it (substitutions
applied); `requests` the requests themselves.

Answers as SendGrid documents: 202 with an `X-Message-Id` header and no body; 200 in
sandbox mode (nothing sent); 400 `{"errors": [{"message", "field", "help"}]}` for a
request that breaks the rules; 401 for a wrong key; 429 with `X-RateLimit-*` headers.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from tests.fakes.server import FakeProvider, Reply, Request, ceil_seconds

_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def _error(message: str, field: str | None = None, status: int = 400) -> Reply:
    return Reply(status, {"errors": [{"message": message, "field": field, "help": None}]})


def substitute(text: str | None, personalization: dict[str, Any]) -> str | None:
    """SendGrid's substitutions: each key replaced by its value wherever it occurs in the
    subject and the content (a plain text replacement, key by key)."""
    if text is None:
        return None
    for key, value in (personalization.get("substitutions") or {}).items():
        text = text.replace(key, value)
    return text


class FakeSendGrid(FakeProvider):
    name = "sendgrid"

    def __init__(self, api_key: str = "SG.test-key", *, rejected: set[str] | None = None,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.api_key = api_key
        self.rejected = set(rejected or ())  # addresses SendGrid refuses as invalid
        self.sandboxed: list[dict[str, Any]] = []

    def sends(self, req: Request) -> bool:
        return req.method == "POST" and req.path == "/v3/mail/send"

    def account(self, req: Request) -> str:
        return "sendgrid"

    def rate_limit_reply(self, req: Request, retry_after: float | None) -> Reply:
        headers = {}
        if retry_after is not None:
            headers = {"X-RateLimit-Limit": str(int(self.rate_limits.get("sendgrid", 600))),
                       "X-RateLimit-Remaining": "0",
                       "X-RateLimit-Reset": str(int(time.time()) + ceil_seconds(retry_after))}
        return Reply(429, {"errors": [{"field": None, "message": "too many requests"}]}, headers)

    def error_reply(self, req: Request, status: int) -> Reply:
        return _error("internal error" if status == 500 else "service unavailable", None, status)

    def handle(self, req: Request) -> Reply:
        if not self.sends(req):
            return _error("not found", None, 404)
        if req.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error("The provided authorization grant is invalid, expired, or revoked",
                          None, 401)
        try:
            mail = req.json()
        except ValueError:
            return _error("Bad Request", None)
        problem = self._validate(mail)
        if problem:
            return _error(*problem)
        # one email per personalization, as its recipients get it: the personalization's
        # subject, headers and custom args over the message's, its substitutions applied
        items = [{
            "from": mail["from"]["email"],
            "subject": substitute(p.get("subject") or mail.get("subject"), p),
            "content": {c["type"]: substitute(c["value"], p) for c in mail["content"]},
            "headers": {**mail.get("headers", {}), **p.get("headers", {})},
            "custom_args": {**mail.get("custom_args", {}), **p.get("custom_args", {})},
            "attachments": mail.get("attachments", []),
            "personalizations": [p],
            "to": [t["email"] for t in p["to"]],
        } for p in mail["personalizations"]]
        if mail.get("mail_settings", {}).get("sandbox_mode", {}).get("enable"):
            with self.lock:
                self.sandboxed.extend(items)
            return Reply(200)
        message_id = secrets.token_urlsafe(16)[:22]
        for item in items:
            item["message_id"] = message_id
            self.record(item)
        return Reply(202, b"", {"X-Message-Id": message_id})

    def _validate(self, mail: Any) -> tuple[str, str | None] | None:
        if not isinstance(mail, dict):
            return "Bad Request", None
        sender = mail.get("from") or {}
        if not sender.get("email"):
            return "The from object must be provided for every email send.", "from"
        if not _EMAIL.match(sender["email"]):
            return "The from email does not contain a valid address.", "from.email"
        for i, a in enumerate(mail.get("attachments") or []):
            if not a.get("content"):
                return "The attachment content is required.", f"attachments.{i}.content"
            if not a.get("filename"):
                return "The attachment filename is required.", f"attachments.{i}.filename"
        people = mail.get("personalizations")
        if not people:
            return ("The personalizations field is required and must have at least one "
                    "personalization."), "personalizations"
        if len(people) > 1000:
            return "The personalizations field must have 1000 or fewer items.", "personalizations"
        for i, p in enumerate(people):
            subs = p.get("substitutions") or {}
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in subs.items()):
                return "Substitutions must be strings.", f"personalizations.{i}.substitutions"
            if sum(len(k) + len(v) for k, v in subs.items()) > 10_000:
                return ("The total size of substitutions must be less than 10000 bytes per "
                        "personalization."), f"personalizations.{i}.substitutions"
            if not p.get("to"):
                return ("The to array is required for all personalization objects, and must "
                        "have at least one email object with a valid email address."), \
                    f"personalizations.{i}.to"
            for j, to in enumerate(p["to"]):
                if not _EMAIL.match(to.get("email") or "") or to.get("email") in self.rejected:
                    return "Does not contain a valid address.", f"personalizations.{i}.to.{j}.email"
            if not (p.get("subject") or mail.get("subject")):
                return ("The subject is required. You can get around this requirement if you use "
                        "a template with a subject defined or if every personalization has a "
                        "subject defined."), "subject"
        content = mail.get("content")
        if not content and not mail.get("template_id"):
            return "Unless a valid template_id is provided, the content parameter is required.", \
                "content"
        for i, c in enumerate(content or []):
            if not c.get("type") or not c.get("value"):
                return "The content value must be a string at least one character in length.", \
                    f"content.{i}.value"
        types = [c["type"] for c in content or []]
        if "text/plain" in types and types[0] != "text/plain":
            return "If present, text/plain content must be first, followed by any other content.", \
                "content"
        for name in mail.get("headers", {}):
            if name.lower() in ("from", "to", "subject", "content-type", "x-sg-id", "x-sg-eid"):
                return f"The header {name} is reserved.", "headers"
        return None
