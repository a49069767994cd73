"""VK through the official API with `vk_api`: community messages and wall posts.

`vk`: `messages.send` with a community token to contacts who allowed messages from the
community. Every call carries a `random_id` derived from the ledger keys it sends, so a
retried call is dropped by VK instead of sent twice (`provider_dedup`). Contacts who get
the same text go together, up to 100 `peer_ids` per call; the reply then has a result per
peer. 901/902 (no permission, privacy settings) mark the contact unreachable on VK; 6, 9
and 29 (too many requests, flood control, rate limit) are retried.

`vk_wall`: `wall.post` on the community wall with an admin's user token, once per wave.

vk_api posts to its own hard-coded host, one request at a time per `VkApi` (it holds a
lock for the whole request and sleeps to keep 3 per second): the session below sends its
requests to `vk_api_url`, each sending thread has its own `VkApi`, and the pace is ours.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import jconfig
import requests
import vk_api
from prefect.blocks.core import Block
from pydantic import Field, SecretStr
from vk_api.exceptions import ApiError, ApiHttpError

from channels.base import (
    Channel,
    ChannelError,
    ConfigurationError,
    Live,
    OutgoingMessage,
    PermanentError,
    PerThread,
    RetryableError,
    SendResult,
    credentials,
    retry_hint,
    transport_error,
)
from promo.secrets import reveal
from promo.settings import Settings

PROVIDER = "vk"
MAX_TEXT = 9000  # characters: messages.send and wall.post
API_VERSION = "5.199"
SDK_HOSTS = ("https://api.vk.ru/method/", "https://api.vk.com/method/")

UNREACHABLE = {900, 901, 902}  # blacklisted the community, no permission, privacy settings
RETRYABLE = {1, 6, 9, 10, 29}  # unknown (try later), too many rps, flood control, internal, limit
CONFIGURATION = {5, 7, 15, 27, 28}  # bad token, no permission, access denied, wrong token type


class VKCredentials(Block):
    """The VK community: its token (messages), an admin's user token (wall posts) and its id.
    Register the type with `prefect block register -m channels.vk`, save one on the Blocks
    page and name it in the `credential_blocks` setting (`vk = "<block name>"`); without it
    the `vk_*` settings are read."""

    _block_type_name = "event-promo VK"

    group_token: SecretStr | None = Field(None, description="community token: messages.send")
    group_id: int | None = Field(None, description="the community's id")
    user_token: SecretStr | None = Field(None, description="an admin's user token: wall.post")
    api_url: str = "https://api.vk.com/method/"

    @classmethod
    def from_settings(cls, s: Settings) -> VKCredentials | None:
        if not (s.vk_group_token or s.vk_user_token):
            return None
        return cls(group_token=s.vk_group_token, group_id=s.vk_group_id,
                   user_token=s.vk_user_token, api_url=s.vk_api_url)


def build(channel: str, settings: Settings) -> Live | None:
    """Community messages, or wall posts, when their tokens are set up."""
    c = credentials(VKCredentials, PROVIDER, settings)
    if c is None:
        return None
    timeout = settings.send_timeout
    if channel == "vk" and c.group_token:
        adapter: Channel = VKMessages(reveal(c.group_token), api_url=c.api_url, timeout=timeout)
        return Live(adapter, f"vk_group:{c.group_id}", "vk_group")
    if channel == "vk_wall" and c.user_token and c.group_id:
        adapter = VKWall(reveal(c.user_token), group_id=c.group_id, api_url=c.api_url,
                         timeout=timeout)
        return Live(adapter, f"vk_user:{c.group_id}", "vk_user")
    return None


def missing(channel: str, settings: Settings) -> str | None:
    c = credentials(VKCredentials, PROVIDER, settings)
    if c is None:
        return None
    if channel == "vk":
        return None if c.group_token else "vk_group_token"
    need = [k for k, v in (("vk_user_token", c.user_token), ("vk_group_id", c.group_id)) if not v]
    return ", ".join(need) or None


class _ApiSession(requests.Session):
    """Sends vk_api's requests to `api_url` (a test fake, a proxy) with a timeout."""

    def __init__(self, api_url: str, timeout: float) -> None:
        super().__init__()
        self.api_url = api_url.rstrip("/") + "/"
        self.timeout = timeout

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        for host in SDK_HOSTS:
            if url.startswith(host):
                url = self.api_url + url[len(host):]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


def random_id(keys: list[str]) -> int:
    """The same ledger keys always give the same random_id (63 bits: VK checks it for
    uniqueness across the sender's whole history)."""
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def classify(code: int, message: str) -> ChannelError | ConfigurationError:
    text = f"VK error {code}: {message}"
    if code in RETRYABLE:
        return RetryableError(text, provider=PROVIDER, code=code)
    if code in CONFIGURATION:
        return ConfigurationError(text, provider=PROVIDER, code=code)
    return PermanentError(text, provider=PROVIDER, code=code, unreachable=code in UNREACHABLE)


def make_api(token: str, api_url: str, timeout: float) -> vk_api.VkApi:
    """A vk_api client on `api_url` that leaves pacing and retries to us."""
    vk = vk_api.VkApi(token=token, session=_ApiSession(api_url, timeout),
                      api_version=API_VERSION, config=jconfig.MemoryConfig)
    vk.RPS_DELAY = 0  # the account's limiter paces every thread
    vk.error_handlers.pop(6, None)  # vk_api would sleep and retry without end
    return vk


class _VK(Channel):
    """What community messages and wall posts share: the token, the API host, the calls."""

    def __init__(self, token: str, *, api_url: str, timeout: float = 10.0) -> None:
        self.apis = PerThread(lambda: make_api(token, api_url, timeout),
                              lambda vk: vk.http.close())

    def call(self, method: str, values: dict[str, Any]) -> Any:
        try:
            return self.apis.get().method(method, values)
        except ApiError as exc:
            raise classify(exc.code, exc.error.get("error_msg", "")) from None
        except ApiHttpError as exc:
            status = exc.response.status_code
            message = f"VK HTTP {status}"
            if status == 429 or status >= 500:
                raise RetryableError(message, provider=PROVIDER, status=status,
                                     retry_after=retry_hint(exc.response.headers)) from None
            raise PermanentError(message, provider=PROVIDER, status=status) from None
        except requests.RequestException as exc:
            raise transport_error(exc, PROVIDER) from None
        except ValueError as exc:  # a reply that is not JSON (a proxy's error page)
            raise RetryableError(f"VK: unreadable reply: {exc}", provider=PROVIDER) from None

    def close(self) -> None:
        self.apis.close()


class VKMessages(_VK):
    name: ClassVar[str] = "vk"
    provider_dedup: ClassVar[bool] = True
    max_batch: ClassVar[int] = 100

    def batches(self, messages: list[OutgoingMessage]) -> list[list[OutgoingMessage]]:
        """The same text to up to 100 peers in one call; every other text on its own."""
        by_text: dict[str, list[OutgoingMessage]] = {}
        for m in messages:
            by_text.setdefault(m.text, []).append(m)
        return [group[i:i + self.max_batch] for group in by_text.values()
                for i in range(0, len(group), self.max_batch)]

    def request(self, messages: list[OutgoingMessage]) -> dict[str, Any]:
        values: dict[str, Any] = {"message": messages[0].text,
                                  "random_id": random_id([m.key for m in messages])}
        if len(messages) == 1:
            values["peer_id"] = messages[0].address
        else:
            values["peer_ids"] = ",".join(str(m.address) for m in messages)
        return values

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        reply = self.call("messages.send", self.request(messages))
        if len(messages) == 1:
            return [SendResult(messages[0].id, str(reply))]
        by_peer = {str(item.get("peer_id")): item for item in reply}
        results = []
        for m in messages:
            item = by_peer.get(str(m.address), {})
            error = item.get("error")
            if error:
                code = error.get("code", 0) if isinstance(error, dict) else 0
                detail = error.get("description", "") if isinstance(error, dict) else str(error)
                err = classify(code, detail)
                if isinstance(err, ConfigurationError):
                    # refused for this peer only; the others in the reply went (or failed)
                    # on their own: raising here would lose them and send them again later
                    err = PermanentError(f"VK error {code}: {detail}", provider=PROVIDER,
                                         code=code)
                results.append(SendResult(m.id, error=err))
            elif item:
                results.append(SendResult(m.id, str(item.get("message_id")
                                                    or item.get("conversation_message_id"))))
        return results


class VKWall(_VK):
    """A post on the community wall, once per wave; needs an admin's user token."""

    name: ClassVar[str] = "vk_wall"

    def __init__(self, token: str, *, group_id: int, api_url: str, timeout: float = 10.0) -> None:
        super().__init__(token, api_url=api_url, timeout=timeout)
        self.group_id = group_id

    def request(self, m: OutgoingMessage) -> dict[str, Any]:
        # guid: VK drops a repeat of the same post for an hour (a retry after a 5xx)
        return {"owner_id": -abs(self.group_id), "from_group": 1, "message": m.text,
                "guid": m.key}

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        results = []
        for m in messages:
            reply = self.call("wall.post", self.request(m))
            results.append(SendResult(m.id, f"wall{-abs(self.group_id)}_{reply['post_id']}"))
        return results
