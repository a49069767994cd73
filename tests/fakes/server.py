"""A small threaded HTTP server that the provider fakes build on.

Each fake answers like its provider (same paths, fields, status codes and error bodies)
and can be told to misbehave for the next requests: a rate-limit reply with or without a
retry hint, a 5xx, a reply slower than the client's timeout (after accepting the
message, as a provider that is slow to answer would), or a connection reset. It can also
add latency to every reply and enforce a provider-shaped rate limit (a token bucket per
account that answers the provider's 429 when empty).

Replies go out in one buffer (status line, headers and body together): two writes on a
keep-alive loopback connection meet the client's delayed ACK and cost 40 ms each.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

REASONS = {200: "OK", 201: "Created", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 413: "Payload Too Large",
           429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable"}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def form(self) -> dict[str, str]:
        """Form fields (the body, then the query string); the last value of a repeated name."""
        fields = dict(self.query)
        ctype = self.headers.get("content-type", "")
        if self.body and ctype.startswith("application/x-www-form-urlencoded"):
            fields.update({k: v[-1] for k, v in
                           parse_qs(self.body.decode(), keep_blank_values=True).items()})
        elif self.body and ctype.startswith("application/json"):
            fields.update({k: v if isinstance(v, str) else json.dumps(v)
                           for k, v in json.loads(self.body).items()})
        return fields

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int
    body: Any = b""  # bytes, or anything JSON-serializable
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        body = self.body
        headers = dict(self.headers)
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        head = f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}\r\n"
        headers["Content-Length"] = str(len(body))
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        return head.encode("latin-1") + body


@dataclass
class Fault:
    kind: str  # rate_limit | error | slow | reset, or a provider's own (vk: api_error)
    params: dict[str, Any]


class Bucket:
    """A provider's "N calls per second" as a token bucket: `rate` per second, and up to a
    second's worth (at least 2) at once, as a per-second counter would let through."""

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(2.0, rate)
        self.tokens = self.capacity
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float | None:
        """None when a call may go; else the seconds until it could."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return None
            return (1 - self.tokens) / self.rate


class FakeProvider:
    """The shared part of a fake: the server, faults, latency, rate limits and records.

    Subclasses implement `handle` (validate like the provider, record what it accepted),
    `sends` (which requests deliver something: faults and limits apply to those),
    `account` (whose rate limit a request counts against) and the provider's own
    replies for a rate limit and a server error.
    """

    name = "fake"

    def __init__(self, *, latency: float = 0.0, rate_limits: dict[str, float] | None = None) -> None:
        self.latency = latency
        self.rate_limits = dict(rate_limits or {})
        self._buckets: dict[str, Bucket] = {}
        self._faults: deque[Fault] = deque()
        self.lock = threading.Lock()
        self.received: list[dict[str, Any]] = []  # what the provider accepted, in order
        self.arrivals: list[float] = []  # when each of those arrived (time.monotonic)
        self.requests: list[Request] = []  # every request to a sending endpoint
        self.answered: Counter[int] = Counter()  # status codes of those replies
        self.rate_limited = 0  # replies that said "too many requests"
        self.calls: dict[str, list[float]] = {}  # account -> when each call within its limit came
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- to override -------------------------------------------------------------
    def handle(self, req: Request) -> Reply:
        raise NotImplementedError

    def sends(self, req: Request) -> bool:
        return req.method == "POST"

    def account(self, req: Request) -> str:
        return "default"

    def rate_limit_reply(self, req: Request, retry_after: float | None) -> Reply:
        raise NotImplementedError

    def error_reply(self, req: Request, status: int) -> Reply:
        return Reply(status, {"message": REASONS.get(status, "error")})

    def fault_reply(self, req: Request, fault: Fault) -> Reply | None:
        """A provider's own kind of fault (None: not one)."""
        return None

    # ---- telling it what to do ---------------------------------------------------
    def fail(self, kind: str, times: int = 1, **params: Any) -> None:
        """Misbehave on the next `times` sending requests: `rate_limit` (retry_after=...
        or none), `error` (status=500), `slow` (delay=seconds, the message is accepted),
        `reset` (the connection is reset, nothing accepted), or a provider's own kind."""
        with self.lock:
            self._faults.extend(Fault(kind, params) for _ in range(times))

    def record(self, item: dict[str, Any]) -> None:
        with self.lock:
            self.received.append(item)
            self.arrivals.append(time.monotonic())

    def clear(self) -> None:
        with self.lock:
            self.received.clear()
            self.arrivals.clear()
            self.requests.clear()
            self.answered.clear()
            self.rate_limited = 0
            self.calls.clear()
            self._faults.clear()
            self._buckets.clear()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            span = self.arrivals[-1] - self.arrivals[0] if len(self.arrivals) > 1 else 0.0
            # each account's calls within its limit: how many, and over how long
            calls = {account: {"calls": len(times),
                               "span": times[-1] - times[0] if len(times) > 1 else 0.0}
                     for account, times in self.calls.items()}
            return {"received": len(self.received), "requests": len(self.requests),
                    "rate_limited": self.rate_limited, "span": span,
                    "answered": {str(k): v for k, v in self.answered.items()},
                    "by_account": dict(Counter(r.get("account", "default")
                                               for r in self.received)),
                    "accounts": calls}

    # ---- serving -----------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> FakeProvider:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = Request(self.command, parts.path,
                              {k: v[-1] for k, v in parse_qs(parts.query).items()},
                              {k.lower(): v for k, v in self.headers.items()}, body)
                if parts.path.startswith("/_fake/"):
                    self._write(fake._control(req))
                    return
                reply, delay = fake._dispatch(req)
                if reply is None:  # reset: RST instead of an answer
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if delay:
                    time.sleep(delay)
                self._write(reply)

            def _write(self, reply: Reply) -> None:
                try:
                    self.wfile.write(reply.encode())
                    self.wfile.flush()
                except OSError:
                    self.close_connection = True  # the client gave up (a timeout)

            do_GET = do_POST = _serve

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 512  # listen backlog: a full one resets new connections

        server = Server(("127.0.0.1", port), Handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _dispatch(self, req: Request) -> tuple[Reply | None, float]:
        """The reply (None: reset the connection) and how long to hold it back."""
        if not self.sends(req):
            return self.handle(req), self.latency
        with self.lock:
            self.requests.append(req)
            fault = self._faults.popleft() if self._faults else None
        delay = self.latency
        reply: Reply | None
        limited = False
        if fault is not None and fault.kind == "reset":
            return None, 0.0
        if fault is not None and fault.kind == "slow":
            delay += float(fault.params.get("delay", 5.0))
            reply = self.handle(req)
        elif fault is not None and fault.kind == "rate_limit":
            reply = self.rate_limit_reply(req, fault.params.get("retry_after"))
            limited = True
        elif fault is not None and fault.kind == "error":
            reply = self.error_reply(req, int(fault.params.get("status", 500)))
        elif fault is not None:
            reply = self.fault_reply(req, fault)
            if reply is None:
                raise ValueError(f"{self.name}: unknown fault {fault.kind!r}")
        else:
            wait = self._take(req)
            limited = wait is not None
            reply = self.handle(req) if wait is None else self.rate_limit_reply(req, wait)
        with self.lock:
            self.answered[reply.status] += 1
            self.rate_limited += limited
        return reply, delay

    def _take(self, req: Request) -> float | None:
        account = self.account(req)
        rate = self.rate_limits.get(account, self.rate_limits.get("*"))
        wait = None
        if rate:
            with self.lock:
                bucket = self._buckets.get(account)
                if bucket is None:
                    bucket = self._buckets[account] = Bucket(rate)
            wait = bucket.take()
        if wait is None:
            with self.lock:
                self.calls.setdefault(account, []).append(time.monotonic())
        return wait

    def _control(self, req: Request) -> Reply:
        if req.path == "/_fake/stats":
            return Reply(200, self.stats())
        if req.path == "/_fake/received":
            with self.lock:
                return Reply(200, list(self.received))
        if req.path == "/_fake/clear":
            self.clear()
            return Reply(200, {"ok": True})
        return Reply(404, {"error": "unknown control path"})


def ceil_seconds(wait: float) -> int:
    """Providers give retry hints in whole seconds, rounded up."""
    return max(1, int(-(-wait // 1)))
