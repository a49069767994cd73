"""Telegram through the Bot API with the official `python-telegram-bot`.

`telegram`: a direct message to each contact who started the bot (their chat id).
`telegram_channel`: a post in the organizer's channel, once per wave.

python-telegram-bot is asynchronous: one event loop thread per adapter runs the bot, and
the base's sending threads hand it their calls, so several are in flight on one
connection pool. `Forbidden` (the user blocked the bot) and "chat not found" mark the
contact unreachable on Telegram; `RetryAfter` is honored through the base's retries.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import warnings
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr
from telegram import Bot
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

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
    transport_error,
)
from promo.secrets import reveal
from promo.settings import Settings

PROVIDER = "telegram"
MAX_TEXT = 4096  # characters of sendMessage, after entity parsing
_TOKEN_IN_URL = re.compile(r"/bot\d+:[\w-]+")


class TelegramCredentials(Block):
    """The bot's token and the channel it posts to. Register the type with
    `prefect block register -m channels.telegram`, save one on the Blocks page and name it in
    the `credential_blocks` setting (`telegram = "<block name>"`); without it the
    `telegram_*` settings are read."""

    _block_type_name = "event-promo Telegram"

    bot_token: SecretStr | None = Field(None, description="from @BotFather")
    channel: str | None = Field(None, description="the channel to post to, e.g. @my_meetups")
    base_url: str = "https://api.telegram.org/bot"

    @classmethod
    def from_settings(cls, s: Settings) -> TelegramCredentials | None:
        if not s.telegram_bot_token:
            return None
        return cls(bot_token=s.telegram_bot_token, channel=s.telegram_channel,
                   base_url=s.telegram_base_url)


def telegram_credentials(settings: Settings) -> TelegramCredentials | None:
    return credentials(TelegramCredentials, PROVIDER, settings)


def build(channel: str, settings: Settings) -> Live | None:
    """Direct messages, or channel posts, when the bot (and the channel) are set up."""
    c = telegram_credentials(settings)
    if c is None or not c.bot_token:
        return None
    token = reveal(c.bot_token)
    options = {"base_url": c.base_url, "timeout": settings.send_timeout,
               "pool": settings.send_concurrency}
    if channel == "telegram":
        adapter: Channel = TelegramDirect(token, **options)
    elif channel == "telegram_channel" and c.channel:
        adapter = TelegramChannelPost(token, channel=c.channel, **options)
    else:
        return None
    # the bot's overall limit covers its direct messages and its channel posts
    return Live(adapter, f"telegram:{token.split(':')[0]}", "telegram")


def missing(channel: str, settings: Settings) -> str | None:
    c = telegram_credentials(settings)
    if channel == "telegram_channel" and c is not None and c.bot_token and not c.channel:
        return "telegram_channel (the channel to post to, e.g. @my_meetups)"
    return None


class _RedactToken(logging.Filter):
    """httpx logs each request's URL, and the Bot API puts the token in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = _TOKEN_IN_URL.sub("/bot<token>", record.getMessage())
            record.args = ()
        return True


logging.getLogger("httpx").addFilter(_RedactToken())


class _BotLoop:
    """The bot and the event loop thread it runs on, started on first use."""

    def __init__(self, token: str, base_url: str, timeout: float, pool: int) -> None:
        self.token = token
        self.base_url = base_url
        self.timeout = timeout
        self.pool = pool
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.bot: Bot | None = None
        self._requests: list[HTTPXRequest] = []

    def run(self, make: Any) -> Any:
        """Run `make(bot)` (a coroutine) on the bot's loop and wait for its result."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever,
                                                name="telegram-bot", daemon=True)
                self._thread.start()
                request = HTTPXRequest(connection_pool_size=self.pool,
                                       read_timeout=self.timeout, write_timeout=self.timeout,
                                       connect_timeout=self.timeout, pool_timeout=self.timeout)
                # ours to close: an uninitialized Bot's shutdown() closes nothing
                self._requests = [request, HTTPXRequest(connection_pool_size=1)]
                self.bot = Bot(self.token, base_url=self.base_url, request=request,
                               get_updates_request=self._requests[1])
            loop, bot = self._loop, self.bot
        coro: Coroutine[Any, Any, Any] = make(bot)
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def close(self) -> None:
        with self._lock:
            loop, thread, bot = self._loop, self._thread, self.bot
            self._loop = self._thread = self.bot = None
        if loop is None:
            return
        requests, self._requests = self._requests, []

        async def shutdown() -> None:
            await bot.shutdown()
            for request in requests:
                await request.shutdown()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join()
        loop.close()

    def redact(self, text: str) -> str:
        return text.replace(self.token, "<bot token>")


def classify(exc: TelegramError, bot: _BotLoop, *, contact: bool) -> ChannelError | ConfigurationError:
    """The Bot API's failure, as our error; `contact`: the chat is a contact's (not a channel)."""
    message = f"Telegram: {bot.redact(str(exc))}"
    if isinstance(exc, RetryAfter):
        with warnings.catch_warnings():  # PTB 22 warns that it will become a timedelta
            warnings.simplefilter("ignore", PTBDeprecationWarning)
            wait = exc.retry_after
        seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
        return RetryableError(message, provider=PROVIDER, status=429, retry_after=seconds)
    if isinstance(exc, InvalidToken):
        return ConfigurationError(message, provider=PROVIDER, status=401)
    if isinstance(exc, Forbidden):  # blocked by the user; not a member of the channel
        return PermanentError(message, provider=PROVIDER, status=403, unreachable=contact)
    if isinstance(exc, (BadRequest, ChatMigrated)):
        gone = "chat not found" in str(exc).lower() or "deactivated" in str(exc).lower()
        return PermanentError(message, provider=PROVIDER, status=400, unreachable=contact and gone)
    if isinstance(exc, (TimedOut, NetworkError)):
        if exc.__cause__ is not None:  # below HTTP: did the request leave?
            error = transport_error(exc.__cause__, PROVIDER)
            error.args = (message,)
            return error
        return RetryableError(message, provider=PROVIDER)  # a 5xx or an unexpected 429
    return PermanentError(message, provider=PROVIDER)


class _Telegram(Channel):
    def __init__(self, token: str, *, base_url: str = "https://api.telegram.org/bot",
                 timeout: float = 10.0, pool: int = 16) -> None:
        self.bot = _BotLoop(token, base_url, timeout, pool)

    def post(self, chat_id: int | str, text: str, *, contact: bool) -> str:
        try:
            sent = self.bot.run(lambda bot: bot.send_message(chat_id=chat_id, text=text))
        except TelegramError as exc:
            raise classify(exc, self.bot, contact=contact) from None
        return f"{sent.chat.id}:{sent.message_id}"

    def close(self) -> None:
        self.bot.close()


class TelegramDirect(_Telegram):
    name: ClassVar[str] = "telegram"

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        results = []
        for m in messages:
            try:
                chat_id = int(m.address or "")
            except ValueError:
                raise PermanentError(f"{m.address!r} is not a Telegram chat id",
                                     provider=PROVIDER, unreachable=True) from None
            results.append(SendResult(m.id, self.post(chat_id, m.text, contact=True)))
        return results


class TelegramChannelPost(_Telegram):
    """A post in the organizer's channel (`@name` or its numeric id), once per wave."""

    name: ClassVar[str] = "telegram_channel"

    def __init__(self, token: str, *, channel: str, **kw: Any) -> None:
        super().__init__(token, **kw)
        self.channel: int | str = int(channel) if channel.lstrip("-").isdigit() else channel

    def send_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        return [SendResult(m.id, self.post(self.channel, m.text, contact=False)) for m in messages]
