"""A fake Twilio REST API: Messages and Calls.

POST /2010-04-01/Accounts/{AccountSid}/Messages.json and /Calls.json, form-encoded,
HTTP basic auth with the account SID and auth token. A created resource is 201 with its
JSON (`sid`, `status`, ...); an error is `{"code", "message", "more_info", "status"}`
with the HTTP status, as Twilio answers: 21211 an invalid 'To' number, 21610 a recipient
who replied STOP, 21602/21603/21604 a missing body, sender or recipient, 20003 bad
credentials, 20429 too many requests.

GET on the same paths lists what was created, newest first, as Twilio's list endpoints do:
Messages filter by `To`, `From` and `DateSent` (`DateSent>=`/`DateSent<=` as
`DateSent>`/`DateSent<`, Twilio's spelling), Calls by `To`, `From` and `StartTime>`/`<`;
paged by `PageSize` with `next_page_uri`.
"""

from __future__ import annotations

import base64
import re
import secrets
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from tests.fakes.server import FakeProvider, Reply, Request, ceil_seconds

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC\w+)/(?P<what>Messages|Calls)\.json$")


def twilio_error(code: int, message: str, status: int = 400) -> Reply:
    return Reply(status, {"code": code, "message": message,
                          "more_info": f"https://www.twilio.com/docs/errors/{code}",
                          "status": status})


def _parse_time(text: str) -> datetime:
    """Twilio's filter times: ISO 8601 (a date, or a time with its offset or Z)."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class FakeTwilio(FakeProvider):
    name = "twilio"

    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "test-token",
                 *, opted_out: set[str] | None = None, invalid: set[str] | None = None,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.opted_out = set(opted_out or ())  # replied STOP: 21610
        self.invalid = set(invalid or ())  # E.164 in form, but no such number: 21211
        self.listed: list[Request] = []  # the list requests (GET), in order

    def sends(self, req: Request) -> bool:
        return req.method == "POST" and bool(_PATH.match(req.path))

    def account(self, req: Request) -> str:
        m = _PATH.match(req.path)
        if m and m["what"] == "Calls":
            return "twilio_calls"
        form = req.form()
        return "twilio_sms:" + (form.get("MessagingServiceSid") or form.get("From") or "")

    def rate_limit_reply(self, req: Request, retry_after: float | None) -> Reply:
        reply = twilio_error(20429, "Too Many Requests", 429)
        if retry_after is not None:
            reply.headers["Retry-After"] = str(ceil_seconds(retry_after))
        return reply

    def error_reply(self, req: Request, status: int) -> Reply:
        return twilio_error(20500, "An internal server error has occurred", status)

    def handle(self, req: Request) -> Reply:
        m = _PATH.match(req.path)
        if not m or req.method not in ("POST", "GET"):
            return twilio_error(20404, "The requested resource was not found", 404)
        if not self._authorized(req) or m["sid"] != self.account_sid:
            return twilio_error(20003, "Authenticate", 401)
        if req.method == "GET":
            with self.lock:
                self.listed.append(req)
            return self._list(m["what"], req.query)
        form = req.form()
        if m["what"] == "Messages":
            return self._message(form)
        return self._call(form)

    def _list(self, what: str, query: dict[str, str]) -> Reply:
        kind = "SM" if what == "Messages" else "CA"
        when = "DateSent" if what == "Messages" else "StartTime"
        with self.lock:
            items = [r for r in self.received if r["sid"].startswith(kind)]
        items.reverse()  # newest first

        def keep(r: dict[str, Any]) -> bool:
            if "To" in query and r["to"] != query["To"]:
                return False
            if "From" in query and r.get("from") != query["From"]:
                return False
            at = datetime.fromisoformat(r["created"])
            day = at.strftime("%Y-%m-%d")
            if when in query and day != query[when][:10]:
                return False
            if f"{when}>" in query and at < _parse_time(query[f"{when}>"]):
                return False
            return not (f"{when}<" in query and at > _parse_time(query[f"{when}<"]))

        found = [r for r in items if keep(r)]
        size = int(query.get("PageSize", 50))
        page = int(query.get("Page", 0))
        chunk = found[page * size:(page + 1) * size]
        uri = f"/2010-04-01/Accounts/{self.account_sid}/{what}.json"
        more = (page + 1) * size < len(found)
        rows = []
        for r in chunk:
            fields = ({"to": r["to"], "body": r.get("body"),
                       "messaging_service_sid": r.get("messaging_service_sid"),
                       "date_sent": format_datetime(datetime.fromisoformat(r["created"]),
                                                    usegmt=True)}
                      if kind == "SM" else {"to": r["to"], "start_time": None})
            row = self._resource(r["sid"], "sent" if kind == "SM" else "queued",
                                 uri_part=what, from_=r.get("from"), **fields)
            row["date_created"] = row["date_updated"] = format_datetime(
                datetime.fromisoformat(r["created"]), usegmt=True)
            rows.append(row)
        return Reply(200, {what.lower(): rows, "page": page, "page_size": size, "start":
                           page * size, "end": page * size + len(rows), "uri": uri,
                           "first_page_uri": f"{uri}?PageSize={size}&Page=0",
                           "previous_page_uri": None,
                           "next_page_uri": f"{uri}?PageSize={size}&Page={page + 1}"
                           if more else None})

    def _authorized(self, req: Request) -> bool:
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        return user == self.account_sid and password == self.auth_token

    def _check_to(self, to: str) -> Reply | None:
        if not _E164.match(to) or to in self.invalid:
            return twilio_error(21211, f"The 'To' number {to} is not a valid phone number.")
        return None

    def _message(self, form: dict[str, str]) -> Reply:
        to, sender = form.get("To", ""), form.get("From", "")
        service = form.get("MessagingServiceSid", "")
        body = form.get("Body", "")
        if not to:
            return twilio_error(21604, "A 'To' phone number is required.")
        if not sender and not service:
            return twilio_error(21603, "A 'From' phone number is required.")
        if service and not service.startswith("MG"):
            return twilio_error(21701, f"The Messaging Service Sid {service} is invalid.")
        if not body and not form.get("MediaUrl"):
            return twilio_error(21602, "Message body is required.")
        if len(body) > 1600:
            return twilio_error(21617, "The concatenated message body exceeds the 1600 "
                                       "character limit.")
        problem = self._check_to(to)
        if problem:
            return problem
        if to in self.opted_out:
            return twilio_error(21610, "Attempt to send to unsubscribed recipient")
        sid = "SM" + secrets.token_hex(16)
        status = "accepted" if service else "queued"
        self.record({"sid": sid, "to": to, "from": sender or None,
                     "messaging_service_sid": service or None, "body": body,
                     "status_callback": form.get("StatusCallback"),
                     "account": "twilio_sms:" + (service or sender),
                     "created": datetime.now(UTC).isoformat()})
        return Reply(201, self._resource(sid, status, to=to, from_=sender or None, body=body,
                                         messaging_service_sid=service or None,
                                         uri_part="Messages"))

    def _call(self, form: dict[str, str]) -> Reply:
        to, sender = form.get("To", ""), form.get("From", "")
        if not to:
            return twilio_error(21201, "No 'To' number is specified")
        if not sender:
            return twilio_error(21213, "No 'From' number is specified")
        twiml = form.get("Twiml", "")
        if not twiml and not form.get("Url") and not form.get("ApplicationSid"):
            return twilio_error(21205, "Url parameter is required.")
        if twiml:
            try:
                root = ET.fromstring(twiml)
            except ET.ParseError:
                return twilio_error(12100, "Document parse failure")
            if root.tag != "Response":
                return twilio_error(12102, "Root element must be Response")
            if len(twiml) > 4000:
                return twilio_error(13335, "Twiml exceeds the maximum size of 4000 characters")
        problem = self._check_to(to)
        if problem:
            return problem
        sid = "CA" + secrets.token_hex(16)
        self.record({"sid": sid, "to": to, "from": sender, "twiml": twiml,
                     "machine_detection": form.get("MachineDetection"),
                     "status_callback": form.get("StatusCallback"), "account": "twilio_calls",
                     "created": datetime.now(UTC).isoformat()})
        return Reply(201, self._resource(sid, "queued", to=to, from_=sender, uri_part="Calls"))

    def _resource(self, sid: str, status: str, *, uri_part: str, from_: str | None,
                  **fields: Any) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC), usegmt=True)
        return {"sid": sid, "account_sid": self.account_sid, "status": status,
                "from": from_, "date_created": now, "date_updated": now,
                "api_version": "2010-04-01", "direction": "outbound-api",
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/{uri_part}/{sid}.json",
                "error_code": None, "error_message": None, **fields}
