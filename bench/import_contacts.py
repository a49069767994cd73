"""Import 100,000 contacts from a CSV file through the real import path, then again (every row
now matches a stored contact), and print the wall time and the peak memory.

    .venv/bin/python bench/import_contacts.py [--rows 100000] [--database-url URL]

The file is generated in a temporary folder: Cyrillic names, phones written the ways people
write them, emails, VK and Telegram ids on some rows, topics and consents; `;`-separated,
UTF-8 with a BOM, as Excel saves it. The store is a fresh SQLite file unless a URL is given.
"""

from __future__ import annotations

import argparse
import codecs
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FIRST = ["Анна", "Иван", "Мария", "Дмитрий", "Елена", "Алексей", "Ольга", "Сергей", "Наталья",
         "Павел", "Татьяна", "Михаил", "Kate", "John"]
LAST = ["Иванова", "Петров", "Смирнова", "Кузнецов", "Попова", "Соколов", "Волкова", "Lee"]
ZONES = ["Europe/Moscow", "Europe/Moscow", "Asia/Yekaterinburg", "Asia/Novosibirsk", ""]
TOPICS = ["python", "data", "go", "devops", "python|data"]


def phone(rng: random.Random, i: int) -> str:
    digits = f"916{i:07d}"
    style = rng.randrange(3)
    if style == 0:
        return f"8 ({digits[:3]}) {digits[3:6]}-{digits[6:8]}-{digits[8:]}"
    if style == 1:
        return f"+7 {digits[:3]} {digits[3:6]} {digits[6:8]} {digits[8:]}"
    return f"+7{digits}"


def generate(path: Path, rows: int, seed: int = 74) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as raw:
        raw.write(codecs.BOM_UTF8)
        out = codecs.getwriter("utf-8")(raw)
        out.write("name;email;phone;vk_id;telegram_chat_id;language;timezone;topics;consent\r\n")
        for i in range(1, rows + 1):
            email = f"guest{i}@example.org" if rng.random() < 0.85 else ""
            tel = phone(rng, i) if rng.random() < 0.6 or not email else ""
            vk = str(100_000 + i) if rng.random() < 0.4 else ""
            tg = str(500_000_000 + i) if rng.random() < 0.25 else ""
            consent = [c for c, has in (("email", email), ("sms", tel), ("vk", vk),
                                        ("telegram", tg)) if has and rng.random() < 0.8]
            out.write(";".join([
                f'"{rng.choice(LAST)} {rng.choice(FIRST)}"', email, tel, vk, tg,
                "en" if rng.random() < 0.1 else "ru", rng.choice(ZONES), rng.choice(TOPICS),
                "|".join(consent)]) + "\r\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="promo-bench-import-"))
    os.environ["PROMO_DATABASE_URL"] = args.database_url or f"sqlite:///{folder / 'promo.db'}"
    from audiences.importer import run_import
    from promo.db import get_engine, session_scope
    from promo.settings import reset_settings

    reset_settings()
    get_engine()  # the schema, outside the timing
    csv_path = folder / "contacts.csv"
    started = time.perf_counter()
    generate(csv_path, args.rows)
    size = csv_path.stat().st_size
    print(f"generated {args.rows:,} rows ({size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - started:.1f} s: {csv_path}")

    for label in ("first import (all new)", "second import (all matched, nothing new)"):
        started, cpu = time.perf_counter(), time.process_time()
        with session_scope() as s:
            report = run_import(s, csv_path, progress=lambda m, t0=started: print(
                f"  {time.perf_counter() - t0:5.1f} s  {m}", file=sys.stderr))
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        # CPU time too: on a busy machine the wall time says more about the neighbours
        print(f"{label}: {took:.1f} s wall, {cpu:.1f} s CPU, {args.rows / took:,.0f} rows/s; "
              f"new {report.new:,}, "
              f"updated {report.merged:,}, unchanged {report.unchanged:,}, "
              f"problems {len(report.problems)}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"peak RSS: {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
