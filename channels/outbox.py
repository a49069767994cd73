"""The embedded default channel: writes what would have been sent to a local folder.

Email becomes one `.eml` file per message (open it in any mail client), and a wave too
large for a file per email (`outbox_eml_limit`) one mailbox file, `<event>_<wave>.mbox`
(mboxrd: `mutt -f` opens it, Python's `mailbox` reads it); every other channel appends
one JSON line per message to `outbox/<channel>/<event>.jsonl`.

An `.eml` is written in one pass over strings, not through `email.message.EmailMessage`,
whose header parsing and folding cost about 3 ms an email (most of a wave's time on the
outbox). The bytes are the same as that class writes (`tests/test_outbox.py` compares
them); a message this writer does not know how to write the same (a line over 998 bytes, a
header value it would have to encode or fold) goes through `EmailMessage` as before.
"""

from __future__ import annotations

import fcntl
import json
import random
import re
import sys
import threading
import time
from collections.abc import Collection
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from channels.base import Channel, OutgoingMessage, SendResult

_append_lock = threading.Lock()


EML_POLICY = policy.default.clone(max_line_length=998)
MAX_LINE = EML_POLICY.max_line_length


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


class OutboxChannel(Channel):
    provider_dedup: ClassVar[bool] = False
    max_batch: ClassVar[int] = 1000
    live: ClassVar[bool] = False

    def __init__(self, channel: str, folder: Path, email_from: str = "events@example.org",
                 mailbox_waves: Collection[tuple[str, str]] = ()):
        self.name = channel  # type: ignore[misc]
        self.folder = Path(folder) / channel
        self.email_from = email_from
        # (event slug, wave) whose emails go into the wave's mailbox file
        self.mailbox_waves = set(mailbox_waves)

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.name == "email":
            boxed = [m for m in messages if (m.event_slug, m.wave) in self.mailbox_waves]
            if boxed:
                self._append_mbox(boxed)
            return [SendResult(m.id, f"outbox:{m.key}") if (m.event_slug, m.wave)
                    in self.mailbox_waves else self._write_eml(m) for m in messages]
        by_file: dict[Path, list[str]] = {}
        for m in messages:
            line = json.dumps({
                "key": m.key, "channel": m.channel, "to": m.address, "language": m.language,
                "event": m.event_slug, "wave": m.wave, "text": m.text,
            }, ensure_ascii=False)
            by_file.setdefault(self.folder / f"{_safe(m.event_slug or 'messages')}.jsonl", []).append(line)
        with _append_lock:
            for path, lines in by_file.items():
                with path.open("a", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
        return [SendResult(m.id, f"outbox:{m.key}") for m in messages]

    def _write_eml(self, m: OutgoingMessage) -> SendResult:
        path = self.folder / f"{_safe(m.key)}.eml"
        path.write_bytes(eml_bytes(m, self.email_from, formatdate(localtime=False),
                                   make_msgid(domain="event-promo.local")))
        return SendResult(m.id, f"outbox:{path.name}")

    def _append_mbox(self, messages: list[OutgoingMessage]) -> None:
        """The messages appended to their waves' mailbox files, one write per file under an
        exclusive lock (several workers may send one wave)."""
        stamp = time.asctime(time.gmtime()).encode()
        by_file: dict[Path, list[bytes]] = {}
        for m in messages:
            data = eml_bytes(m, self.email_from, formatdate(localtime=False),
                             make_msgid(domain="event-promo.local"))
            by_file.setdefault(self.folder / f"{_safe(m.event_slug)}_{_safe(m.wave)}.mbox",
                               []).append(b"From MAILER-DAEMON " + stamp + b"\n"
                                          + _FROM_LINE.sub(rb">\g<0>", data) + b"\n")
        with _append_lock:
            for path, chunks in by_file.items():
                with path.open("ab") as f:
                    fcntl.flock(f, fcntl.LOCK_EX)
                    f.write(b"".join(chunks))


# mboxrd: a line of a message that begins with "From " (after any '>') gains a '>'
_FROM_LINE = re.compile(rb"^>*From ", re.MULTILINE)


def eml_bytes(m: OutgoingMessage, email_from: str, date: str, message_id: str,
              boundaries: tuple[str, str] | None = None) -> bytes:
    """The email as an `.eml` file holds it (`boundaries`: the tests fix them)."""
    return (_fast_eml(m, email_from, date, message_id, boundaries)
            or bytes(eml_message(m, email_from, date, message_id, boundaries)))


def eml_message(m: OutgoingMessage, email_from: str, date: str, message_id: str,
                boundaries: tuple[str, str] | None = None) -> EmailMessage:
    """The email built by the standard library (the reference the fast path matches)."""
    # lines up to RFC 5322's 998: the default 78 turns the long unsubscribe URL into an
    # encoded-word, which mail clients do not read as a List-Unsubscribe URL
    msg = EmailMessage(policy=EML_POLICY)
    msg["From"] = email_from
    msg["To"] = m.address or ""
    msg["Subject"] = m.subject or ""
    msg["Date"] = date
    msg["Message-ID"] = message_id
    msg["X-Promo-Key"] = m.key
    for name, value in m.headers.items():
        msg[name] = value
    msg.set_content(m.text)
    if m.html:
        msg.add_alternative(m.html, subtype="html")
    for filename, ctype, data in m.attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    if boundaries:
        if m.html and m.attachments:
            msg.set_boundary(boundaries[0])
            msg.get_payload()[0].set_boundary(boundaries[1])
        elif m.html or m.attachments:
            msg.set_boundary(boundaries[0])
    return msg


# -- the fast path ----------------------------------------------------------------------------

# a header value written as it is: printable ASCII, no encoded-word look-alike, not folded
_PLAIN = re.compile(r"[!-~](?:[ -~]*[!-~])?")
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                      r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_MSGID = re.compile(r"<[0-9.]+@[A-Za-z0-9.-]+>")
_STRUCTURED = set(EML_POLICY.header_factory.registry)


def _header(name: str, value: str) -> str | None:
    """`Name: value` as the policy writes it, when that is the value as given."""
    lower = name.lower()
    if len(name) + len(value) > MAX_LINE - 4 or not _PLAIN.fullmatch(value) or "=?" in value:
        return _folded(name, value) if lower in _REPEATED else None
    if lower not in _STRUCTURED or (lower in ("to", "from") and _ADDRESS.fullmatch(value)) \
            or (lower == "message-id" and _MSGID.fullmatch(value)):
        return f"{name}: {value}\n"
    return _folded(name, value) if lower in _REPEATED else None


# headers whose values repeat across a wave: folded by the policy once each
_REPEATED = {"from", "subject", "date", "list-unsubscribe-post"}


@lru_cache(maxsize=1024)
def _folded(name: str, value: str) -> str:
    return EML_POLICY.header_factory(name, value).fold(policy=EML_POLICY)


def _text_part(text: str, subtype: str, mime_version: bool) -> str | None:
    """A text part's headers and body, 7bit or 8bit as the policy picks for short lines."""
    lines = text.encode("utf-8").splitlines()
    if any(len(line) > MAX_LINE for line in lines):
        return None  # quoted-printable or base64: left to the standard library
    cte = "7bit" if text.isascii() else "8bit"
    body = "\n".join(x.decode("utf-8") for x in lines) + "\n" if lines else "\n"
    return (f'Content-Type: text/{subtype}; charset="utf-8"\n'
            f"Content-Transfer-Encoding: {cte}\n"
            + ("MIME-Version: 1.0\n" if mime_version else "") + "\n" + body)


@lru_cache(maxsize=64)
def _attachment_part(filename: str, ctype: str, data: bytes) -> str:
    """An attachment as the policy writes it (an email's invitation repeats across a wave)."""
    maintype, subtype = ctype.split("/", 1)
    part = EmailMessage(policy=EML_POLICY)
    part.set_content(data, maintype=maintype, subtype=subtype, disposition="attachment",
                     filename=filename)
    return part.as_string()


def _boundary(body: str) -> str:
    # as email.generator makes one: 15 '=', a random number, '==', not found in the body
    while True:
        token = "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="
        if token not in body:
            return token


def _fast_eml(m: OutgoingMessage, email_from: str, date: str, message_id: str,
              boundaries: tuple[str, str] | None) -> bytes | None:
    head = []
    for name, value in (("From", email_from), ("To", m.address or ""),
                        ("Subject", m.subject or ""), ("Date", date),
                        ("Message-ID", message_id), ("X-Promo-Key", m.key),
                        *m.headers.items()):
        line = _header(name, value)
        if line is None:
            return None
        head.append(line)
    text = _text_part(m.text, "plain", False)
    html = _text_part(m.html, "html", True) if m.html else None
    if text is None or (m.html and html is None):
        return None
    parts = [_attachment_part(*a) for a in m.attachments]
    if html is None and not parts:
        return ("".join(head) + _text_part(m.text, "plain", True)).encode("utf-8")
    if html is not None:
        inner = _multipart("alternative", [text, html],
                           boundaries[1 if parts else 0] if boundaries else None)
        if not parts:
            return ("".join(head) + "MIME-Version: 1.0\n" + inner).encode("utf-8")
        body = _multipart("mixed", [inner, *parts], boundaries[0] if boundaries else None)
    else:
        body = _multipart("mixed", [text, *parts], boundaries[0] if boundaries else None)
    return ("".join(head) + "MIME-Version: 1.0\n" + body).encode("utf-8")


def _multipart(subtype: str, parts: list[str], boundary: str | None) -> str:
    inside = "\n".join(parts)
    boundary = boundary or _boundary(inside)
    return (f'Content-Type: multipart/{subtype}; boundary="{boundary}"\n\n'
            + "".join(f"--{boundary}\n{p}\n" for p in parts) + f"--{boundary}--\n")
