"""The embedded default channel: writes what would have been sent to a local folder.

Email becomes one `.eml` file per message (open it in any mail client); every other
channel appends one JSON line per message to `outbox/<channel>/<event>.jsonl`.
"""

from __future__ import annotations

import json
import re
import threading
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import ClassVar

from channels.base import Channel, OutgoingMessage, SendResult

_append_lock = threading.Lock()


EML_POLICY = policy.default.clone(max_line_length=998)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


class OutboxChannel(Channel):
    provider_dedup: ClassVar[bool] = False
    max_batch: ClassVar[int] = 1000
    live: ClassVar[bool] = False

    def __init__(self, channel: str, folder: Path, email_from: str = "events@example.org"):
        self.name = channel  # type: ignore[misc]
        self.folder = Path(folder) / channel
        self.email_from = email_from

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.name == "email":
            return [self._write_eml(m) for m in messages]
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
        # lines up to RFC 5322's 998: the default 78 turns the long unsubscribe URL into an
        # encoded-word, which mail clients do not read as a List-Unsubscribe URL
        msg = EmailMessage(policy=EML_POLICY)
        msg["From"] = self.email_from
        msg["To"] = m.address or ""
        msg["Subject"] = m.subject or ""
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="event-promo.local")
        msg["X-Promo-Key"] = m.key
        for name, value in m.headers.items():
            msg[name] = value
        msg.set_content(m.text)
        if m.html:
            msg.add_alternative(m.html, subtype="html")
        for filename, ctype, data in m.attachments:
            maintype, subtype = ctype.split("/", 1)
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        path = self.folder / f"{_safe(m.key)}.eml"
        path.write_bytes(bytes(msg))
        return SendResult(m.id, f"outbox:{path.name}")
