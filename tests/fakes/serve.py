"""Run every fake in one process, for the benchmark: `python -m tests.fakes.serve`.

Prints one JSON line with each fake's URL, then serves until its standard input closes.
Each fake has a control path: GET /_fake/stats (what arrived, rate-limit replies, each
account's calls and their span) and GET /_fake/clear.
"""

from __future__ import annotations

import argparse
import json
import sys

from tests.fakes import FakeSendGrid, FakeTelegram, FakeTwilio, FakeVK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.08, help="seconds added to each reply")
    parser.add_argument("--limits", default="{}",
                        help='JSON: account -> calls per second, e.g. {"sendgrid": 100}')
    parser.add_argument("--sendgrid-key", default="SG.bench-key")
    parser.add_argument("--twilio", default="AC" + "5" * 32 + ":bench-token", help="SID:TOKEN")
    parser.add_argument("--vk", default="vk-group-token:vk-user-token:777",
                        help="GROUP_TOKEN:USER_TOKEN:GROUP_ID")
    parser.add_argument("--telegram", default="424242:bench-bot-token")
    parser.add_argument("--telegram-channel", default="@promo_bench")
    args = parser.parse_args()
    limits = json.loads(args.limits)
    sid, token = args.twilio.split(":", 1)
    group_token, user_token, group_id = args.vk.split(":")
    fakes = {
        "sendgrid": FakeSendGrid(args.sendgrid_key, latency=args.latency, rate_limits=limits),
        "twilio": FakeTwilio(sid, token, latency=args.latency, rate_limits=limits),
        "vk": FakeVK(group_token, user_token, int(group_id), latency=args.latency,
                     rate_limits=limits),
        "telegram": FakeTelegram(args.telegram, latency=args.latency, rate_limits=limits,
                                 channels={args.telegram_channel: -1004242424242}),
    }
    for fake in fakes.values():
        fake.start()
    print(json.dumps({name: fake.url for name, fake in fakes.items()}), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin (or dies)
    for fake in fakes.values():
        fake.stop()


if __name__ == "__main__":
    main()
