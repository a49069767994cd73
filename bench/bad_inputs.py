"""Feed generated bad input through the real entry points and count what goes wrong.

    .venv/bin/python bench/bad_inputs.py [--cases 5000] [--seed 15] [--bound 20]

Five classes, each case a valid input with one to three hostile changes (or random bytes):
- csv: `promo contacts import` / `promo registrations import` of a generated file;
- event: `promo events check` of a generated event file;
- template: `promo plan` of an event whose inline text is a generated template;
- settings: `promo events check` of a valid event under generated PROMO_* variables or
  a generated promo.toml;
- webhook: a request to each endpoint of the webhook app (signed or not, shapes, sizes, URLs).

Printed per class: cases, refused, accepted, tracebacks (a command that exited with main's
"unexpected" code 1 or printed a traceback; a webhook answer of 500), hangs (a case still
running after --bound seconds), partial changes (a refused case that changed the store),
unnamed (a refusal that names neither the file nor the setting), and the time.
The command runs in this process (`promo.cli:main`), as a user runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
for _name in list(os.environ):
    if _name.startswith("PROMO_"):
        del os.environ[_name]

STARTS = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
EVENT = f"""\
slug: python-meetup-74
title: "Moscow Python Meetup #74"
starts_at: {STARTS.isoformat()}
timezone: Europe/Moscow
venue: "Точка кипения"
registration_url: https://example.org/python-meetup-74
topic: python
language: ru
"""

# values that have broken something somewhere, or could
HOSTILE = [
    "", " ", "0", "-1", "1e400", "nan", "inf", "true", "null", "~", "[]", "{}", "'", '"', '"a',
    'a"b', "\\", "\x00", "\x1b[2J", "\u202e", "\ufeff", "x" * 300, "x" * 5000,
    "Europe/" + "x" * 300, "../../etc/passwd", "9999-12-31T23:59:59+14:00", "0001-01-01",
    "2020-01-01T00:00:00+00:00", "25:61", "+5", "٥", "1_000", "99999999999999999999999",
    "-100123", "id0", "https://vk.com/id-5", "@user", "+7 (916) 000-00-00", "a@b", "@@",
    "=1+1", "%s%s%n", "{{ 7 * 7 }}", "${jndi:x}", "&a", "*a", "!!python/object:os.system",
    "Анна", "😀" * 50, "\r", "\r\n", ";", "\t", ",", "|", "fax", "klingon", "yes",
]


def pick(rng: random.Random) -> str:
    return rng.choice(HOSTILE) if rng.random() < 0.8 else "".join(
        chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(1, 30)))


# -- csv ----------------------------------------------------------------------------------------

CSV_HEADER = ["email", "phone", "name", "telegram_chat_id", "vk_id", "timezone", "language",
              "topics", "consent", "consent_at", "registered_at", "attended", "status"]
CSV_ROW = ["anna@example.org", "+79161234567", "Анна", "5001", "id1001", "Europe/Moscow", "ru",
           "python", "email|sms", "2026-11-01 10:00", "2026-11-02 10:00", "да", "пришел"]


def csv_case(rng: random.Random) -> bytes:
    header = list(CSV_HEADER[:rng.randrange(1, len(CSV_HEADER) + 1)])
    rows = []
    for i in range(rng.randrange(1, 6)):
        row = [v.replace("anna", f"anna{i}").replace("5001", str(5001 + i))
               .replace("1001", str(1001 + i)).replace("4567", f"45{60 + i}")
               for v in CSV_ROW[:len(header)]]
        rows.append(row)
    delimiter = rng.choice([",", ";", "\t"])
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(9)
        target = rng.choice(rows)
        if kind <= 3:
            target[rng.randrange(len(target))] = pick(rng)
        elif kind == 4:
            header[rng.randrange(len(header))] = pick(rng)
        elif kind == 5:
            target.append(pick(rng))
        elif kind == 6 and len(target) > 1:
            target.pop()
        elif kind == 7:
            header[0] += "x" * rng.choice([10, 140_000])
        else:
            target[0] = target[0][: rng.randrange(len(target[0]) + 1)] + '"'
    text = "\n".join(delimiter.join(r) for r in [header, *rows]) + "\n"
    roll = rng.random()
    if roll < 0.05:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    if roll < 0.1:
        return text.encode("utf-8")[: rng.randrange(len(text))]
    encoding = rng.choice(["utf-8", "utf-8", "utf-8-sig", "cp1251", "utf-16"])
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode("utf-8")


# -- events -------------------------------------------------------------------------------------

def billion_laughs() -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


EVENT_FIELDS = ["slug", "title", "starts_at", "ends_at", "timezone", "venue", "url",
                "registration_url", "topic", "language", "templates", "cancelled"]
WAVE_LINES = ["  announce: {days_before: %s}", "  announce: {at: %s}", "  last_call: {channels: [%s]}",
              "  reminder: {days_before: %s}", "  reminder: {mode: %s}", "  teaser: {days_before: %s}",
              "  announce: %s"]


def yaml_value(rng: random.Random) -> str:
    value = pick(rng)
    return rng.choice([value, json.dumps(value), repr(value)]).replace("\n", " ")


def event_case(rng: random.Random) -> str:
    lines = EVENT.splitlines()
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(10)
        if kind <= 3:
            field = rng.choice(EVENT_FIELDS)
            lines = [ln for ln in lines if not ln.startswith(field + ":")]
            lines.append(f"{field}: {yaml_value(rng)}")
        elif kind == 4:
            lines = [ln for ln in lines if not ln.startswith(rng.choice(EVENT_FIELDS) + ":")]
        elif kind == 5:
            lines.append("campaign:")
            lines.append(rng.choice(WAVE_LINES) % rng.choice(
                ["30", "-1", "true", "1.5", "'11:00'", "fax", "[email, email]", "null", "all",
                 "25:00", pick(rng).replace("\n", " ")]))
        elif kind == 6:
            depth = rng.choice([50, 5000])
            lines.append("deep: " + "[" * depth + "]" * depth)
        elif kind == 7:
            lines.append(billion_laughs())
        elif kind == 8:
            lines = [ln.replace(STARTS.isoformat(), rng.choice(
                ["2020-03-01T19:00:00+03:00", "0", "true", "9999-12-31T23:59:59+14:00",
                 "2026-13-45T99:00:00", "'2030-01-01T10:00:00'"])) for ln in lines]
        else:
            text = "\n".join(lines)
            cut = rng.randrange(len(text))
            lines = (text[:cut] + pick(rng) + text[cut:]).splitlines()
    return "\n".join(lines) + "\n"


# -- templates ----------------------------------------------------------------------------------

PIECES = [
    "{{ event.title }}", "{{ nope }}", "{{ event.nope.deeper }}", "{% for i in range(N) %}",
    "{% endfor %}", "{% if x %}", "{% endif %}", "{{ 'ab' * N }}", "{{ N ** N }}", "{{ N / 0 }}",
    "{{ '%Ns' % 1 }}", "{{ 'x'|center(N) }}", "{% include '@N/x' %}", "{% include 'nope' %}",
    "{% import 'x' as m %}", "{{ ().__class__.__mro__ }}", "{{ range.__globals__ }}",
    "{{ cycler.__init__.__globals__ }}", "{% macro m(n) %}{{ m(n) }}{% endmacro %}",
    "{{ m(1) }}", "{{ 'x'.format(N) }}", "{{ loop.length }}", "{{ unsubscribe_url }}", "{%",
    "}}", "{# #}", "{% raw %}", "{% set s = 'x' * N %}", "{{ s|length }}", "{{ [1] * N }}",
    "{{ starts_at.strftime('%Y') }}", "{{ when }}", "{{ '{:N}'.format(1) }}", "{{ 'x'.ljust(N) }}",
    "{{ event.title|indent(N) }}", "{% extends 'nope' %}", "{% block b %}", "{{ lipsum(N) }}",
    "{{ self._TemplateReference__context }}", "{{ [].pop() }}", "{{ {}.x.y }}",
    "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "{% if 1 %}" * 2000 + "{% endif %}" * 2000,
]
NUMBERS = ["0", "3", "-1", "99", "10000", "100000", "10**6", "10**9", "2**64", "1000000000"]


def template_case(rng: random.Random) -> str:
    parts = [rng.choice(PIECES).replace("N", rng.choice(NUMBERS), 1)
             for _ in range(rng.randrange(1, 6))]
    if rng.random() < 0.02:  # a loop that only time ends: rare, each costs the limit
        parts.append("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}"
                     "{% endfor %}")
    body = "".join(parts).replace("\n", " ")
    return (EVENT + "campaign:\n  last_call: null\n"
            + "texts:\n  announce:\n    telegram:\n      ru: " + json.dumps(body) + "\n")


# -- settings -----------------------------------------------------------------------------------

SETTING_VARS = ["PROMO_CAPS", "PROMO_QUIET_HOURS", "PROMO_RATE_LIMITS", "PROMO_WAVES",
                "PROMO_PRICES", "PROMO_SEND_BATCH_SIZE", "PROMO_SEND_TIMEOUT",
                "PROMO_PUBLIC_URL", "PROMO_EMAIL_FROM", "PROMO_DEFAULT_LANGUAGE",
                "PROMO_DEFAULT_TIMEZONE", "PROMO_DEFAULT_REGION", "PROMO_MAX_SMS_SEGMENTS",
                "PROMO_REMINDER_COUNTS_AGAINST_CAPS", "PROMO_SENDGRID_KEY", "PROMO_CAP",
                "PROMO_VK_GROUP_ID", "PROMO_CAPS__SMS", "PROMO_CONFIG"]
JSON_BAD = ['{bad', '{"sms":"1/99999999999d"}', '{"sms": NaN}', '{"sendgrid": Infinity}',
            '{"fax": "1/7d"}', '{"announce": {"days_before": 30}}',
            '{"last_call": {"channels": ["fax"]}}', '{"sms": "25:00-26:00"}', '[]', '"x"',
            '{"announce": {"days_before": true}}', "[" * 5000 + "]" * 5000, '{"sms": -1}',
            '{"reminder": {"days_before": 2}}', '{"sms": "1/0d"}', "null"]
TOML_BAD = ['send_batch_size = "500"', "reminder_counts_against_caps = 1", "caps = 5",
            "[waves.announce]\ndays_before = 40", "sendgrid_key = 'x'", "x = " + "[" * 3000,
            "currency = 3", "prices = {sms = nan}", "[caps]\nsms = '1/0d'", "=", "[[a]]\nb=1",
            "email_from = 'nobody'", "public_url = 'ftp://x'", "default_language = 'de'"]


def settings_case(rng: random.Random, folder: Path) -> tuple[dict[str, str | None], bytes | None]:
    if rng.random() < 0.3:
        roll = rng.random()
        if roll < 0.7:
            text = rng.choice(TOML_BAD).encode()
        elif roll < 0.85:
            text = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 100)))
        else:
            text = pick(rng).encode("utf-8", "replace")
        return {}, text
    env: dict[str, str | None] = {}
    for _ in range(rng.randrange(1, 3)):
        name = rng.choice(SETTING_VARS)
        if name == "PROMO_CONFIG":
            env[name] = rng.choice([str(folder / "missing.toml"), str(folder), ""])
        elif name in ("PROMO_CAPS", "PROMO_QUIET_HOURS", "PROMO_RATE_LIMITS", "PROMO_WAVES",
                      "PROMO_PRICES"):
            env[name] = rng.choice(JSON_BAD)
        else:
            env[name] = pick(rng)
        env[name] = env[name].replace("\x00", "") if name != "PROMO_CONFIG" else env[name]
    return env, None


# -- webhooks -----------------------------------------------------------------------------------

def json_value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice([None, True, 0, -1, 2**70, 1.5, pick(rng), [], {}])
    if roll < 0.75:
        return [json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["message", "chat", "id", "type", "text", "from", "user_id", "object", "contact_id",
            "email", "phone", "event", "consent", "registered_at", "my_chat_member",
            "new_chat_member", "status", "update_id", "event_id", "sg_event_id", "unique_args"]
    return {rng.choice(keys): json_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def webhook_case(rng: random.Random) -> tuple[str, str, bytes | object, dict[str, str]]:
    from promo.webhooks.registrations import sign
    from tests.webhook_support import (
        REGISTRATION_SECRET,
        SLUG,
        TELEGRAM_SECRET,
        VK_GROUP,
        VK_SECRET,
        sendgrid_headers,
    )

    endpoint = rng.choice(["telegram", "vk", "registrations", "sendgrid", "twilio", "unsubscribe",
                           "go"])
    signed = rng.random() < 0.8
    body = json_value(rng)
    headers: dict[str, str] = {}
    if endpoint == "unsubscribe":
        token = rng.choice([pick(rng), "a" * rng.choice([10, 9000, 60_000])])
        return "GET" if rng.random() < 0.5 else "POST", "/unsubscribe/" + quote(token), b"", {}
    if endpoint == "go":
        return "GET", "/go/" + "/".join(quote(pick(rng), safe="") for _ in range(3)), b"", {}
    if endpoint == "telegram":
        if isinstance(body, dict) and rng.random() < 0.5:
            body["message"] = {"text": rng.choice(["/start x", "/stop", "/start"]),
                               "chat": json_value(rng), "from": json_value(rng)}
        path = "/telegram/webhook"
        if signed:
            headers["X-Telegram-Bot-Api-Secret-Token"] = TELEGRAM_SECRET
    elif endpoint == "vk":
        path = "/vk/callback"
        if isinstance(body, dict) or rng.random() < 0.7:
            body = {"type": rng.choice(["message_allow", "message_deny", "confirmation", "x"]),
                    "group_id": rng.choice([VK_GROUP, "x", None]),
                    "object": json_value(rng), **(body if isinstance(body, dict) else {})}
            if signed:
                body["secret"] = VK_SECRET
    elif endpoint == "registrations":
        path = "/registrations"
        if isinstance(body, dict) and rng.random() < 0.7:
            body["event"] = rng.choice([SLUG, "nope", 5])
            body["contact_id"] = rng.choice([1, 10**30, -1, "1", None, True])
    elif endpoint == "sendgrid":
        path = "/sendgrid/events"
        body = [json_value(rng) for _ in range(rng.randrange(3))] if rng.random() < 0.7 else body
    else:
        path = rng.choice(["/twilio/status", "/twilio/inbound"])
        fields = {rng.choice(["MessageSid", "CallSid", "MessageStatus", "ErrorCode", "From",
                              "Body", "x"]): pick(rng).replace("\x00", "")
                  for _ in range(rng.randrange(5))}
        from twilio.request_validator import RequestValidator

        from tests.webhook_support import PUBLIC_URL, TWILIO_TOKEN
        if signed:
            headers["X-Twilio-Signature"] = RequestValidator(TWILIO_TOKEN).compute_signature(
                PUBLIC_URL + path, fields)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        from urllib.parse import urlencode
        return "POST", path, urlencode(fields).encode(), headers
    raw = json.dumps(body).encode()
    roll = rng.random()
    if roll < 0.05:
        raw = b"[" * 20000 + b"]" * 20000
    elif roll < 0.1:
        raw = raw + b" " * rng.choice([70_000, 5_000_000])
    elif roll < 0.15:
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if endpoint == "registrations" and signed:
        headers["X-Promo-Signature"] = sign(REGISTRATION_SECRET, raw)
    if endpoint == "sendgrid" and signed:
        headers.update(sendgrid_headers(raw))
    return "POST", path, raw, headers


# -- the run ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--bound", type=float, default=20.0, help="seconds before a case hangs")
    args = parser.parse_args()

    import pytest

    from promo.db import dispose_engines
    from tests.bad_input import Hang, run_promo, snapshot, within

    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="promo-bad-inputs-"))
    os.chdir(folder)
    os.environ["PROMO_DATABASE_URL"] = f"sqlite:///{folder / 'promo.db'}"
    os.environ["PROMO_OUTBOX_DIR"] = str(folder / "outbox")
    valid_event = folder / "valid.yaml"
    valid_event.write_text(EVENT, encoding="utf-8")
    assert run_promo("events", "add", str(valid_event)).code == 0

    stats: dict[str, Counter] = defaultdict(Counter)
    seconds: dict[str, float] = defaultdict(float)
    examples: dict[str, list[str]] = defaultdict(list)
    classes = ["csv", "event", "template", "settings", "webhook"]
    weights = [0.25, 0.25, 0.12, 0.13, 0.25]

    monkeypatch = pytest.MonkeyPatch()
    from tests.webhook_support import make_world
    world = make_world(folder, monkeypatch)
    from starlette.testclient import TestClient

    from promo.webhooks.app import create_app
    client = TestClient(create_app(world.settings), raise_server_exceptions=False)

    def note(kind: str, outcome: str, detail: str) -> None:
        stats[kind][outcome] += 1
        if outcome in ("traceback", "hang", "partial", "unnamed") and len(examples[kind]) < 5:
            examples[kind].append(f"{outcome}: {detail[:300]!r}")

    started = time.monotonic()
    for n in range(args.cases):
        kind = rng.choices(classes, weights)[0]
        t0 = time.monotonic()
        stats[kind]["cases"] += 1
        try:
            with within(args.bound):
                before = snapshot()
                if kind == "webhook":
                    method, path, body, headers = webhook_case(rng)
                    r = client.request(method, path, content=body, headers=headers)
                    refused = r.status_code >= 400
                    if r.status_code >= 500:
                        note(kind, "traceback", f"{path} {r.status_code} {body[:200]!r}")
                    named = True
                    failed_text = f"{path} {r.status_code}"
                else:
                    env: dict[str, str | None] = {}
                    if kind == "csv":
                        path = folder / f"case{n}.csv"
                        path.write_bytes(csv_case(rng))
                        cmd = (("registrations", "import", str(path), "--event",
                                "python-meetup-74") if rng.random() < 0.3
                               else ("contacts", "import", str(path)))
                    elif kind == "event":
                        path = folder / f"case{n}.yaml"
                        path.write_text(event_case(rng), encoding="utf-8", errors="replace")
                        cmd = ("events", "check", str(path))
                    elif kind == "template":
                        path = folder / f"case{n}.yaml"
                        path.write_text(template_case(rng), encoding="utf-8")
                        cmd = ("plan", str(path))
                    else:
                        env, toml = settings_case(rng, folder)
                        path = folder / "promo.toml"
                        if toml is not None:
                            path.write_bytes(toml)
                        cmd = ("events", "check", str(valid_event))
                    result = run_promo(*cmd, env=env)
                    (folder / "promo.toml").unlink(missing_ok=True)
                    refused = result.code != 0
                    failed_text = result.err
                    if result.crashed:
                        note(kind, "traceback", result.err)
                    names = [str(path)] if kind != "settings" else [
                        "promo.toml", "PROMO_", *(k.removeprefix("PROMO_").lower().split("__")[0]
                                                  for k in env)]
                    named = any(x in result.err for x in names)
                    if kind == "template" and refused and not named:
                        named = "texts." in result.err or ".j2:" in result.err
                if refused:
                    stats[kind]["refused"] += 1
                    if not named:
                        note(kind, "unnamed", failed_text)
                    if snapshot() != before:
                        note(kind, "partial", failed_text)
                else:
                    stats[kind]["accepted"] += 1
        except Hang:
            note(kind, "hang", f"case {n}")
        except Exception as exc:  # noqa: BLE001 - an exception out of an entry point
            note(kind, "traceback", f"{type(exc).__name__}: {exc}")
        seconds[kind] += time.monotonic() - t0
    total = time.monotonic() - started
    monkeypatch.undo()
    dispose_engines()

    columns = ("cases", "refused", "accepted", "traceback", "hang", "partial", "unnamed")
    print(f"{args.cases} generated bad inputs, seed {args.seed}, bound {args.bound:g} s per case")
    print(f"{'class':<10}" + "".join(f"{c:>10}" for c in columns) + f"{'seconds':>10}")
    for kind in classes:
        print(f"{kind:<10}" + "".join(f"{stats[kind][c]:>10}" for c in columns)
              + f"{seconds[kind]:>10.1f}")
    print(f"{'all':<10}" + "".join(f"{sum(s[c] for s in stats.values()):>10}" for c in columns)
          + f"{total:>10.1f}")
    for kind, lines in examples.items():
        for line in lines:
            print(f"  {kind} {line}")


if __name__ == "__main__":
    main()
