"""Twilio: SMS and call status callbacks, and inbound SMS (STOP / START).

Give Twilio `{public_url}/twilio/status` as the StatusCallback of messages and calls,
and `{public_url}/twilio/inbound` as the messaging webhook of the sending number (or
Messaging Service). Every request must carry a valid `X-Twilio-Signature`, computed by
Twilio with the account's Auth Token over the URL it called and the posted fields.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from audiences.contacts import find_contact
from channels.twilio_sms import (
    OPTED_OUT,
    UNREACHABLE,
    error_code,
    error_text,
    twilio_credentials,
)
from flows.ledger import apply_delivery, find_message_by_key, find_message_by_provider_id
from promo.db import session_scope
from promo.db.models import Contact, utcnow
from promo.domain.names import Delivery
from promo.secrets import reveal
from promo.settings import Settings
from promo.webhooks.consent import mark_unreachable, opt_in, opt_out
from promo.webhooks.http import forbidden, form_params, public_request_url, settings_of
from promo.webhooks.store import (
    DeliveryEvent,
    dedupe_key,
    normalize,
    record_once,
    set_normalized,
)

PROVIDER = "twilio"

# Message status callbacks (MessageStatus) in our vocabulary. `undelivered` is the
# carrier refusing the message: the SMS form of a bounce.
MESSAGE_STATUSES = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "partially_delivered": "delivered",
    "read": "opened",
    "undelivered": "bounced",
    "failed": "failed",
    "canceled": "failed",
}

# Call status callbacks (CallStatus). A completed call was answered (by a person or a
# voicemail); busy and no-answer did not reach anyone.
CALL_STATUSES = {
    "queued": "queued",
    "initiated": "queued",
    "ringing": "sent",
    "in-progress": "delivered",
    "answered": "delivered",
    "completed": "delivered",
    "busy": "failed",
    "no-answer": "failed",
    "canceled": "failed",
    "failed": "failed",
}

# An inbound SMS that is only one of these words (any case, trailing punctuation
# ignored) opts the number out of, or back into, SMS. Twilio's own keywords, and Russian.
OPT_OUT_WORDS = frozenset({
    "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE",
    "СТОП", "ОТПИСАТЬСЯ", "ОТПИСКА",
})
OPT_IN_WORDS = frozenset({"START", "YES", "UNSTOP", "СТАРТ", "ПОДПИСАТЬСЯ"})

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def signature_ok(settings: Settings, url: str, params: ImmutableMultiDict,
                 headers: Any) -> bool:
    """Whether `X-Twilio-Signature` is Twilio's, for this URL and these fields (signed with
    the account's auth token: from its Block, or the settings)."""
    creds = twilio_credentials(settings)
    token = creds.auth_token if creds is not None else None
    signature = headers.get(SIGNATURE_HEADER)
    if token is None or not signature:
        return False
    algorithm = get_signature_algorithm(headers.get(SIGNATURE_SETTINGS_HEADER))
    validator = RequestValidator(reveal(token))
    return validator.validate(url, params, signature, algorithm=algorithm)


def _raw(params: ImmutableMultiDict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in params:
        values = params.getlist(name)
        out[name] = values[0] if len(values) == 1 else values
    return out


def parse_status(params: ImmutableMultiDict, ledger_key: str | None = None
                 ) -> DeliveryEvent | None:
    """A message's or a call's status callback as a delivery event (None: neither)."""
    sid = params.get("MessageSid") or params.get("SmsSid")
    raw_status = params.get("MessageStatus") or params.get("SmsStatus")
    table = MESSAGE_STATUSES
    if not sid:
        sid, raw_status, table = params.get("CallSid"), params.get("CallStatus"), CALL_STATUSES
    if not sid or not raw_status:
        return None
    code = (params.get("ErrorCode") or "").strip() or None
    detail = f"twilio: {raw_status}" + (f" ({error_text(code)})" if code else "")
    return DeliveryEvent(PROVIDER, raw_status, Delivery(normalize(table, raw_status)), detail,
                         provider_message_id=sid, ledger_key=ledger_key, error_code=code,
                         raw=_raw(params))


def handle_status(settings: Settings, params: ImmutableMultiDict,
                  ledger_key: str | None = None) -> dict[str, Any]:
    """Apply one status callback to the ledger row with this MessageSid or CallSid, or with
    the ledger key the callback URL carries (`?promo_key=`): a callback can arrive before
    the batch that sent the message has recorded its SID."""
    event = parse_status(params, ledger_key)
    if event is None:
        return {"outcome": "ignored", "why": "neither a message nor a call status"}
    sid, code = event.provider_message_id, event.error_code
    key = dedupe_key(PROVIDER, sid, event.provider_status.strip().lower())
    now = utcnow()
    with session_scope(settings.database_url) as s:
        if not record_once(s, PROVIDER, key, dict(event.raw)):
            return {"outcome": "duplicate"}
        normalized: dict[str, Any] = {
            "kind": "delivery", "provider_status": event.provider_status,
            "status": event.status, "provider_message_id": sid, "error_code": code,
            "message_key": None, "changed": [],
        }
        message = find_message_by_provider_id(s, sid)
        if message is None and event.ledger_key:
            message = find_message_by_key(s, event.ledger_key)
            if message is not None and message.provider_message_id is None:
                message.provider_message_id = sid
        if message is not None:
            normalized["message_key"] = message.key
            changed = list(apply_delivery(message, event.status, event.detail, now))
            contact = s.get(Contact, message.contact_id) if message.contact_id else None
            why = f"twilio {error_text(code)}" if code else ""
            number = error_code(code)
            if (contact is not None and number in OPTED_OUT
                    and opt_out(s, contact, message.channel, why, now)):
                changed.append("consent")
            if (contact is not None and number in UNREACHABLE
                    and mark_unreachable(s, contact.id, message.channel, why, now)):
                changed.append("unreachable")
            normalized["changed"] = sorted(changed)
        set_normalized(s, key, normalized)
    return {"outcome": "applied" if message is not None else "unmatched", **normalized}


def inbound_action(params: ImmutableMultiDict) -> str | None:
    """`opt_out`, `opt_in` or None for an inbound SMS.

    Twilio's Advanced Opt-Out says what it matched in `OptOutType`; otherwise the
    message text is matched against the keywords.
    """
    kind = (params.get("OptOutType") or "").strip().upper()
    if kind == "STOP":
        return "opt_out"
    if kind == "START":
        return "opt_in"
    word = (params.get("Body") or "").strip().rstrip(".!").strip().upper()
    if word in OPT_OUT_WORDS:
        return "opt_out"
    if word in OPT_IN_WORDS:
        return "opt_in"
    return None


def handle_inbound(settings: Settings, params: ImmutableMultiDict) -> dict[str, Any]:
    """STOP withdraws, START restores SMS consent for the contact with this number."""
    sid = params.get("MessageSid") or params.get("SmsSid")
    if not sid:
        return {"outcome": "ignored", "why": "no MessageSid"}
    key = dedupe_key(PROVIDER, "inbound", sid)
    action = inbound_action(params)
    phone = (params.get("From") or "").strip()
    word = (params.get("Body") or "").strip()[:40]
    now = utcnow()
    with session_scope(settings.database_url) as s:
        if not record_once(s, PROVIDER, key, _raw(params)):
            return {"outcome": "duplicate"}
        contact = find_contact(s, "phone", phone) if phone else None
        changed = False
        if contact is not None and action == "opt_out":
            changed = opt_out(s, contact, "sms", f"SMS {word!r} from the contact", now)
        elif contact is not None and action == "opt_in":
            changed = opt_in(s, contact, "sms", f"SMS {word!r} from the contact", now)
        normalized = {"kind": "inbound_sms", "action": action, "channel": "sms",
                      "contact_id": contact.id if contact else None, "changed": changed}
        set_normalized(s, key, normalized)
    return {"outcome": "applied" if contact is not None else "unmatched", **normalized}


async def _verified_params(request: Request) -> ImmutableMultiDict | None:
    settings = settings_of(request)
    params = form_params(await request.body())
    url = public_request_url(settings, request)
    return params if signature_ok(settings, url, params, request.headers) else None


async def status_callback(request: Request) -> Response:
    params = await _verified_params(request)
    if params is None:
        return forbidden(PROVIDER, "status callback with a missing or wrong X-Twilio-Signature")
    await run_in_threadpool(handle_status, settings_of(request), params,
                            request.query_params.get("promo_key"))
    return PlainTextResponse("", status_code=200)


async def inbound_sms(request: Request) -> Response:
    params = await _verified_params(request)
    if params is None:
        return forbidden(PROVIDER, "inbound SMS with a missing or wrong X-Twilio-Signature")
    await run_in_threadpool(handle_inbound, settings_of(request), params)
    # nothing to say back: Twilio answers its own STOP/START keywords itself
    return Response(EMPTY_TWIML, media_type="text/xml")
