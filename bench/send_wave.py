"""Benchmark: a 20,000-message wave through the provider fakes, three ways.

    .venv/bin/python bench/send_wave.py [--messages 20000] [--latency 0.08]

The fakes run in their own process (`tests.fakes.serve`), answer every call after
`--latency` seconds and enforce provider-shaped rate limits: a token bucket per provider
account that answers the provider's own 429 (VK: error 6) when it is empty.

1. our pipeline: the Prefect `wave_flow` (decide, then batch tasks of 500 that pace each
   provider account with the shared limiter, several calls in flight);
2. a plain sequential SDK loop over the same messages (one call after another; a rate
   limit error waits a second and tries again), on a sample, extrapolated;
3. a Prefect flow with one task per message (the same SDK calls), on a sample,
   extrapolated.

Prints the throughputs, each provider account's achieved call rate as a fraction of its
limit (measured by the fakes), and the rate-limit errors the fakes answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MSK = ZoneInfo("Europe/Moscow")
SENDGRID_KEY = "SG.bench-key"
TWILIO_SID, TWILIO_TOKEN = "AC" + "5" * 32, "bench-token"
SENDER = "+15005550006"
VK_GROUP, VK_USER, VK_GROUP_ID = "vk-group-token", "vk-user-token", 777
BOT = "424242:bench-bot-token"
CHANNEL = "@promo_bench"

# provider-shaped limits, calls per second: SendGrid has no published figure (our
# default), SMS through a Messaging Service with a pool of senders, Twilio's default 1
# call per second, VK's 20 per second for a community token (3 for a user token), and
# Telegram's 30 messages per second per bot
LIMITS = {"sendgrid": 100.0, "twilio_sms": 30.0, "twilio_calls": 1.0, "vk_group": 20.0,
          "vk_user": 3.0, "telegram": 30.0}
DIRECT = {"email": "sendgrid", "sms": "twilio_sms", "voice": "twilio_calls", "vk": "vk_group",
          "telegram": "telegram"}
ADDRESS = {"email": "email", "sms": "phone", "voice": "phone", "vk": "vk_id",
           "telegram": "telegram_chat_id"}


def fake_account(account: str) -> str:
    """The fakes' name for a provider account (Twilio's SMS limit is per sender)."""
    return f"twilio_sms:{SENDER}" if account == "twilio_sms" else account


def control(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=30) as reply:
        return json.loads(reply.read())


def mix(total: int) -> dict[str, int]:
    """Each channel's share of the wave in proportion to its limit, so that every channel
    would finish together if each ran at its limit."""
    rates = {ch: LIMITS[acct] for ch, acct in DIRECT.items()}
    shares = {ch: int(total * r / sum(rates.values())) for ch, r in rates.items()}
    shares["email"] += total - sum(shares.values())
    return shares


def seed(folder: Path, shares: dict[str, int], starts_at: datetime) -> None:
    from sqlalchemy import insert

    from flows.store import save_event
    from promo.db import session_scope
    from promo.db.models import Consent, Contact, ContactTopic
    from promo.domain.event import load_event
    from tests.helpers import write_event

    path = write_event(folder, starts_at, extra="""\
campaign:
  announce: {channels: [email, sms, voice, vk, telegram, vk_wall, telegram_channel]}
  last_call: null
  reminder: null
""")
    contacts, consents = [], []
    cid = 0
    for channel, n in shares.items():
        for _ in range(n):
            cid += 1
            field = ADDRESS[channel]
            value: Any = {"email": f"guest{cid}@example.org", "phone": f"+7916{cid:07d}",
                          "vk_id": 10_000_000 + cid, "telegram_chat_id": 50_000_000 + cid}[field]
            contacts.append({"id": cid, "name": f"Гость {cid}", "language": "ru",
                             "timezone": "Europe/Moscow", field: value})
            consents.append({"contact_id": cid, "channel": channel,
                             "granted_at": starts_at - timedelta(days=100),
                             "granted_source": "bench"})
    with session_scope() as s:
        save_event(s, load_event(path), path)
        s.execute(insert(Contact), contacts)
        s.execute(insert(ContactTopic), [{"contact_id": c["id"], "topic": "python"}
                                         for c in contacts])
        s.execute(insert(Consent), consents)


def not_sent() -> Counter:
    """(channel, reason) of the ledger rows the pipeline did not send (leaving out the
    channels each contact has no address for)."""
    from sqlalchemy import select

    from promo.db import session_scope
    from promo.db.models import Message

    with session_scope() as s:
        return Counter((ch, (reason or "")[:120]) for ch, reason in s.execute(
            select(Message.channel, Message.reason).where(
                Message.status.not_in(("sent", "suppressed")))))


def report(urls: dict[str, str], seconds: float, messages: int, title: str) -> dict[str, Any]:
    stats = {name: control(url, "/_fake/stats") for name, url in urls.items()}
    limited = sum(s["rate_limited"] for s in stats.values())
    accounts = {}
    for s in stats.values():
        accounts.update(s["accounts"])
    print(f"\n== {title}")
    print(f"   {messages} messages in {seconds:.1f} s: {messages / seconds:.1f} messages/s; "
          f"rate-limit errors answered by the fakes: {limited} "
          f"({', '.join(n + ' ' + str(s['rate_limited']) for n, s in stats.items())})")
    for account, limit in LIMITS.items():
        got = accounts.get(fake_account(account))
        if not got or got["calls"] < 2 or not got["span"]:
            continue
        rate = (got["calls"] - 1) / got["span"]
        print(f"   {account:<13} {got['calls']:>6} calls at {rate:7.2f}/s "
              f"= {rate / limit:6.1%} of {limit:g}/s")
    return {"seconds": seconds, "messages": messages}


# --- the plain SDK calls, for the two baselines ---------------------------------------

class PlainClients(threading.local):
    """The SDK clients a naive script would make, one set per thread."""

    def __init__(self, urls: dict[str, str]) -> None:
        from sendgrid import SendGridAPIClient
        from telegram import Bot
        from twilio.rest import Client

        from channels.vk import make_api  # vk_api hard-codes its host

        self.sendgrid = SendGridAPIClient(SENDGRID_KEY, host=urls["sendgrid"])
        self.twilio = Client(TWILIO_SID, TWILIO_TOKEN)
        self.twilio.api.base_url = urls["twilio"]
        self.vk = make_api(VK_GROUP, urls["vk"] + "/method/", 30)
        self.loop = asyncio.new_event_loop()
        self.bot = Bot(BOT, base_url=urls["telegram"] + "/bot")


def plain_send(clients: PlainClients, item: dict[str, Any]) -> None:
    """One message the naive way: the SDK call; a rate-limit error waits 1 s and retries."""
    from python_http_client.exceptions import TooManyRequestsError
    from sendgrid.helpers.mail import Mail
    from telegram.error import RetryAfter
    from twilio.base.exceptions import TwilioRestException
    from vk_api.exceptions import ApiError
    from vk_api.utils import get_random_id

    for _ in range(10):
        try:
            kind = item["kind"]
            if kind == "email":
                clients.sendgrid.send(Mail("events@example.org", item["to"], item["subject"],
                                           item["text"], item["html"]))
            elif kind == "sms":
                clients.twilio.messages.create(to=item["to"], from_=SENDER, body=item["text"])
            elif kind == "voice":
                clients.twilio.calls.create(to=item["to"], from_=SENDER, twiml=item["twiml"])
            elif kind == "vk":
                clients.vk.method("messages.send", {"peer_id": item["to"], "message": item["text"],
                                                    "random_id": get_random_id()})
            else:
                clients.loop.run_until_complete(
                    clients.bot.send_message(chat_id=item["to"], text=item["text"]))
            return
        except (TooManyRequestsError, RetryAfter) as exc:
            del exc
        except TwilioRestException as exc:
            if exc.status != 429:
                raise
        except ApiError as exc:
            if exc.code != 6:
                raise
        time.sleep(1.0)  # the fakes count every refusal; wait and try again


def replay_items(urls: dict[str, str]) -> list[dict[str, Any]]:
    """The direct messages the pipeline sent, as the fakes received them."""
    items = []
    for m in control(urls["sendgrid"], "/_fake/received"):
        items.append({"kind": "email", "to": m["to"][0], "subject": m["subject"],
                      "text": m["content"]["text/plain"], "html": m["content"].get("text/html")})
    for m in control(urls["twilio"], "/_fake/received"):
        if m["sid"].startswith("SM"):
            items.append({"kind": "sms", "to": m["to"], "text": m["body"]})
        else:
            items.append({"kind": "voice", "to": m["to"], "twiml": m["twiml"]})
    for m in control(urls["vk"], "/_fake/received"):
        if "peer_id" in m:
            items.append({"kind": "vk", "to": m["peer_id"], "text": m["text"]})
    for m in control(urls["telegram"], "/_fake/received"):
        if m["chat"] != CHANNEL:
            items.append({"kind": "telegram", "to": m["chat_id"], "text": m["text"]})
    return items


def sample(items: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """`n` messages in the wave's proportions, interleaved as a loop over contacts would be."""
    if n >= len(items):
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def clear(urls: dict[str, str]) -> None:
    for url in urls.values():
        control(url, "/_fake/clear")


def fakes_environment(urls: dict[str, str], database_url: str, outbox: Path,
                      limits: dict[str, float]) -> dict[str, str]:
    """The settings that send through the fakes at `urls` (as the fakes' process printed
    them), with the store, the outbox and each account's limit."""
    return {
        "PROMO_DATABASE_URL": database_url,
        "PROMO_OUTBOX_DIR": str(outbox),
        "PROMO_SENDGRID_API_KEY": SENDGRID_KEY, "PROMO_SENDGRID_HOST": urls["sendgrid"],
        "PROMO_TWILIO_ACCOUNT_SID": TWILIO_SID, "PROMO_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "PROMO_TWILIO_FROM": SENDER, "PROMO_TWILIO_BASE_URL": urls["twilio"],
        "PROMO_VK_GROUP_TOKEN": VK_GROUP, "PROMO_VK_GROUP_ID": str(VK_GROUP_ID),
        "PROMO_VK_USER_TOKEN": VK_USER, "PROMO_VK_API_URL": urls["vk"] + "/method/",
        "PROMO_TELEGRAM_BOT_TOKEN": BOT, "PROMO_TELEGRAM_CHANNEL": CHANNEL,
        "PROMO_TELEGRAM_BASE_URL": urls["telegram"] + "/bot",
        "PROMO_RATE_LIMITS": json.dumps(limits),
        # the quiet hours are not what is measured
        "PROMO_QUIET_HOURS": json.dumps({"sms": "", "voice": ""}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.08)
    parser.add_argument("--sequential-sample", type=int, default=2_000,
                        help="messages sent by the sequential loop (0: all of them)")
    parser.add_argument("--per-task-sample", type=int, default=1_000,
                        help="messages sent by the one-task-per-message flow (0: all)")
    parser.add_argument("--pipeline-only", action="store_true", help="skip the two baselines")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="promo-bench-"))
    os.environ.update({
        "PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_LOGGING_SERVER_LEVEL": "CRITICAL",
        "PTB_TIMEDELTA": "1",
    })
    for name in [n for n in os.environ if n.startswith("PROMO_")]:
        del os.environ[name]
    limits = {fake_account(a): r for a, r in LIMITS.items()}
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.serve", "--latency", str(args.latency),
         "--limits", json.dumps(limits), "--sendgrid-key", SENDGRID_KEY,
         "--twilio", f"{TWILIO_SID}:{TWILIO_TOKEN}",
         "--vk", f"{VK_GROUP}:{VK_USER}:{VK_GROUP_ID}", "--telegram", BOT,
         "--telegram-channel", CHANNEL],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        urls = json.loads(server.stdout.readline())
        os.environ.update(fakes_environment(urls, f"sqlite:///{work / 'promo.db'}",
                                            work / "outbox", LIMITS))
        run(args, work, urls)
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def run(args: argparse.Namespace, work: Path, urls: dict[str, str]) -> None:
    from prefect import flow, task
    from prefect.testing.utilities import prefect_test_harness

    from flows.campaign import wave_flow
    from promo.settings import reset_settings

    reset_settings()
    starts_at = datetime(2027, 4, 22, 19, 0, tzinfo=MSK)
    announce = starts_at - timedelta(days=14, hours=8)
    shares = mix(args.messages)
    seed(work, shares, starts_at)
    print(f"wave of {args.messages} direct messages + 2 posts, latency {args.latency * 1000:.0f} ms;"
          f" per channel: {shares}")

    with prefect_test_harness(server_startup_timeout=120):
        clear(urls)
        t0 = time.perf_counter()
        result = wave_flow("python-meetup-74", "announce", announce.isoformat())
        seconds = time.perf_counter() - t0
        sent = result["sent"].get("sent", 0)
        print(f"   pipeline outcome: {result['sent']}")
        ours = report(urls, seconds, sent, "our pipeline: wave_flow, batch tasks, paced")
        for (channel, reason), n in not_sent().items():
            print(f"   not sent: {channel} x{n}: {reason}")
        if args.pipeline_only:
            return

        items = replay_items(urls)
        clear(urls)
        seq = sample(items, args.sequential_sample or len(items))
        clients = PlainClients(urls)
        t0 = time.perf_counter()
        for item in seq:
            plain_send(clients, item)
        seconds = time.perf_counter() - t0
        sequential = report(urls, seconds, len(seq),
                            f"plain sequential SDK loop ({len(seq)} of {len(items)} messages)")
        print(f"   extrapolated to {len(items)}: {len(items) / (len(seq) / seconds):.0f} s")

        clear(urls)
        per_task = sample(items, args.per_task_sample or len(items))
        shared = PlainClients(urls)

        @task(name="send-one")
        def send_one(index: int) -> None:
            plain_send(shared, per_task[index])

        @flow(name="one-task-per-message")
        def one_task_per_message(count: int) -> None:
            futures = [send_one.submit(i) for i in range(count)]
            for f in futures:
                f.wait()

        t0 = time.perf_counter()
        one_task_per_message(len(per_task))
        seconds = time.perf_counter() - t0
        tasks = report(urls, seconds, len(per_task),
                       f"one Prefect task per message ({len(per_task)} of {len(items)} messages)")
        print(f"   extrapolated to {len(items)}: {len(items) / (len(per_task) / seconds):.0f} s")

    print("\nsummary (messages/s): pipeline {:.1f}, sequential loop {:.1f}, task per message {:.1f}"
          .format(ours["messages"] / ours["seconds"],
                  sequential["messages"] / sequential["seconds"],
                  tasks["messages"] / tasks["seconds"]))


if __name__ == "__main__":
    main()
