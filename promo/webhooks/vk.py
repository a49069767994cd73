"""VK Callback API: a person allowing or denying messages from the community.

In the community's settings (Manage > API usage > Callback API) give VK
`{public_url}/vk/callback`, copy the confirmation string into `vk_confirmation_code`,
set a secret key and put it in `vk_callback_secret`, and tick the events "Message
access allowed" and "Message access denied" (`message_allow`, `message_deny`).
VK sends the secret inside every event's JSON; it is compared in constant time.
VK wants the body `ok` for every event, or it delivers the event again.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from audiences.contacts import find_contact
from promo.db import session_scope
from promo.db.models import Contact, utcnow
from promo.secrets import reveal
from promo.settings import Settings
from promo.tokens import read_link_token
from promo.webhooks.consent import opt_in, opt_out
from promo.webhooks.http import as_dict, forbidden, json_body, settings_of
from promo.webhooks.store import body_digest, dedupe_key, record_once, set_normalized

PROVIDER = "vk"

# the events that change VK consent, and how
ACTIONS = {"message_allow": "opt_in", "message_deny": "opt_out"}


def _group_ok(settings: Settings, data: dict[str, Any]) -> bool:
    return settings.vk_group_id is None or data.get("group_id") == settings.vk_group_id


def secret_ok(settings: Settings, data: dict[str, Any]) -> bool:
    """Whether the event carries our secret key (and is for our community)."""
    secret = settings.vk_callback_secret
    given = data.get("secret")
    if secret is None or not isinstance(given, str) or not _group_ok(settings, data):
        return False
    return hmac.compare_digest(given.encode(), (reveal(secret) or "").encode())


def confirmation_ok(settings: Settings, data: dict[str, Any]) -> bool:
    """The handshake: with the secret if VK sends one, else for our community's id only
    (the answer only proves to VK that this server is ours)."""
    if not settings.vk_confirmation_code:
        return False
    if "secret" in data:
        return secret_ok(settings, data)
    return settings.vk_group_id is not None and data.get("group_id") == settings.vk_group_id


def handle(settings: Settings, data: dict[str, Any]) -> dict[str, Any]:
    """Grant or withdraw VK consent for the contact with this VK user id.

    A person not yet known by VK id is linked through the widget's `key`, when it is a
    link token for a contact (`promo.tokens.link_token(settings, id, "vk")`).
    """
    kind = data.get("type")
    action = ACTIONS[kind]
    obj = as_dict(data.get("object"))
    user_id = obj.get("user_id")
    key = dedupe_key(PROVIDER, data.get("event_id") or body_digest(data))
    raw = {k: v for k, v in data.items() if k != "secret"}  # the secret is not stored
    now = utcnow()
    with session_scope(settings.database_url) as s:
        if not record_once(s, PROVIDER, key, raw):
            return {"outcome": "duplicate"}
        contact = None
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            contact = find_contact(s, "vk_id", user_id)
            link = obj.get("key")
            if contact is None and action == "opt_in" and isinstance(link, str):
                contact_id = read_link_token(settings, link, "vk")
                linked = s.get(Contact, contact_id) if contact_id is not None else None
                if linked is not None and linked.vk_id is None:
                    linked.vk_id = user_id
                    contact = linked
        changed = False
        if contact is not None:
            if action == "opt_in":
                changed = opt_in(s, contact, "vk", "VK: allowed messages from the community", now)
            else:
                changed = opt_out(s, contact, "vk", "VK: denied messages from the community", now)
        normalized = {"kind": "consent", "channel": "vk", "action": action,
                      "contact_id": contact.id if contact else None, "changed": changed}
        set_normalized(s, key, normalized)
    return {"outcome": "applied" if contact is not None else "unmatched", **normalized}


async def callback(request: Request) -> Response:
    settings = settings_of(request)
    # VK puts the secret inside the JSON: it cannot be checked before parsing. The body is
    # size-limited before it is read (http.Limits), parsed safely (json_body), and nothing
    # else is looked at before the secret checks out.
    data = json_body(await request.body())
    if not isinstance(data, dict):
        return forbidden(PROVIDER, "a body that is not a Callback API event")
    if data.get("type") == "confirmation":
        if not confirmation_ok(settings, data):
            return forbidden(PROVIDER, "confirmation for another community, or a wrong secret "
                                       "(or vk_confirmation_code is not set)")
        return PlainTextResponse(settings.vk_confirmation_code)
    if not secret_ok(settings, data):
        return forbidden(PROVIDER, "an event with a missing or wrong secret")
    if data.get("type") in ACTIONS:
        await run_in_threadpool(handle, settings, data)
    return PlainTextResponse("ok")
