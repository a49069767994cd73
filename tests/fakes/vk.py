"""A fake VK API: POST /method/messages.send and /method/wall.post.

VK answers HTTP 200 for everything it understood: `{"response": ...}` or
`{"error": {"error_code", "error_msg", "request_params"}}`. messages.send with a
community token needs `random_id` (a repeat of the same random_id to the same peer is
not sent again), a `message` and a recipient; with `peer_ids` (up to 100) the response is
a list with one entry per peer, each a `message_id` or an `error`. 901: the user has not
allowed messages from the community; 902: their privacy settings forbid it; 5: a bad
token; 27: a community token where a user token is needed; 6/9/29: too many requests.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.server import FakeProvider, Fault, Reply, Request

ERRORS = {
    5: "User authorization failed: invalid access_token (4).",
    6: "Too many requests per second",
    8: "Invalid request",
    9: "Flood control",
    10: "Internal server error",
    15: "Access denied",
    27: "Group authorization failed: method is unavailable with group auth.",
    29: "Rate limit reached",
    100: "One of the parameters specified was missing or invalid",
    901: "Can't send messages for users without permission",
    902: "Can't send messages to this user due to their privacy settings",
}


def vk_error(code: int, params: dict[str, str], detail: str = "") -> Reply:
    message = ERRORS.get(code, "Unknown error occurred") + (f": {detail}" if detail else "")
    return Reply(200, {"error": {
        "error_code": code, "error_msg": message,
        "request_params": [{"key": k, "value": v} for k, v in params.items()
                           if k not in ("access_token", "message")],
    }})


class FakeVK(FakeProvider):
    name = "vk"

    def __init__(self, group_token: str = "vk-group-token", user_token: str = "vk-user-token",
                 group_id: int = 123, *, denied: set[int] | None = None,
                 private: set[int] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.group_token = group_token
        self.user_token = user_token
        self.group_id = group_id
        self.denied = set(denied or ())  # never allowed messages from the community: 901
        self.private = set(private or ())  # privacy settings forbid it: 902
        self._seen: dict[tuple[int, int], int] = {}  # (peer, random_id) -> message id
        self._next_id = 1000

    def sends(self, req: Request) -> bool:
        return req.method == "POST" and req.path in ("/method/messages.send", "/method/wall.post")

    def account(self, req: Request) -> str:
        return "vk_user" if req.path.endswith("wall.post") else "vk_group"

    def rate_limit_reply(self, req: Request, retry_after: float | None) -> Reply:
        return vk_error(6, self._params(req))  # VK gives no retry hint

    def error_reply(self, req: Request, status: int) -> Reply:
        return Reply(status, b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                     {"Content-Type": "text/html"})

    def fault_reply(self, req: Request, fault: Fault) -> Reply | None:
        if fault.kind == "api_error":  # fail("api_error", code=9)
            return vk_error(int(fault.params["code"]), self._params(req))
        return None

    def _params(self, req: Request) -> dict[str, str]:
        try:
            return req.form()
        except ValueError:
            return {}

    def handle(self, req: Request) -> Reply:
        params = self._params(req)
        method = req.path.removeprefix("/method/")
        if "v" not in params:
            return vk_error(8, params, "v (version) is required")
        token = params.get("access_token")
        if method == "messages.send":
            if token != self.group_token:
                return vk_error(5, params)
            return self._send(params)
        if method == "wall.post":
            if token == self.group_token:
                return vk_error(27, params)
            if token != self.user_token:
                return vk_error(5, params)
            return self._wall(params)
        return Reply(200, {"error": {"error_code": 3, "error_msg": "Unknown method passed"}})

    def _send(self, params: dict[str, str]) -> Reply:
        if not params.get("random_id"):
            return vk_error(100, params, "random_id is a required parameter")
        text = params.get("message", "")
        if not text and not params.get("attachment"):
            return vk_error(100, params, "message is empty or invalid")
        random_id = int(params["random_id"])
        if params.get("peer_ids"):
            peers = [int(p) for p in params["peer_ids"].split(",") if p]
            if len(peers) > 100:
                return vk_error(100, params, "peer_ids is too long (100 at most)")
            return Reply(200, {"response": [self._one(p, random_id, text) for p in peers]})
        peer = params.get("peer_id") or params.get("user_id")
        if not peer:
            return vk_error(100, params,
                            "you should specify peer_id, user_id, domain, chat_id or user_ids param")
        result = self._one(int(peer), random_id, text)
        if "error" in result:
            return vk_error(result["error"]["code"], params)
        return Reply(200, {"response": result["message_id"]})

    def _one(self, peer: int, random_id: int, text: str) -> dict[str, Any]:
        if peer in self.denied or peer in self.private:
            code = 901 if peer in self.denied else 902
            return {"peer_id": peer, "error": {"code": code, "description": ERRORS[code]}}
        with self.lock:
            known = self._seen.get((peer, random_id))
            if known is None:
                self._next_id += 1
                known = self._seen[(peer, random_id)] = self._next_id
                fresh = True
            else:
                fresh = False
        if fresh:
            self.record({"peer_id": peer, "message_id": known, "random_id": random_id,
                         "text": text, "account": "vk_group"})
        return {"peer_id": peer, "message_id": known, "conversation_message_id": known}

    def _wall(self, params: dict[str, str]) -> Reply:
        owner = params.get("owner_id", "")
        if not owner:
            return vk_error(100, params, "owner_id is undefined")
        if owner != f"-{self.group_id}":
            return vk_error(15, params)
        if not params.get("message") and not params.get("attachments"):
            return vk_error(100, params, "message is empty")
        with self.lock:
            self._next_id += 1
            post_id = self._next_id
        self.record({"owner_id": int(owner), "post_id": post_id, "text": params.get("message"),
                     "from_group": params.get("from_group"), "account": "vk_user"})
        return Reply(200, {"response": {"post_id": post_id}})
