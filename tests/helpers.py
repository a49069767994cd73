"""Helpers the tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

EVENT_TEMPLATE = """\
slug: {slug}
title: "Moscow Python Meetup #74"
starts_at: {starts_at}
timezone: Europe/Moscow
venue: "Точка кипения, ул. Малая Андроньевская, 15"
registration_url: https://example.org/python-meetup-74
topic: python
language: ru
"""


def write_event(folder: Path, starts_at: datetime, slug: str = "python-meetup-74",
                extra: str = "") -> Path:
    """An event file in the contract's shape; `extra` is appended YAML (a campaign: block)."""
    path = folder / f"{slug}.yaml"
    text = EVENT_TEMPLATE.format(slug=slug, starts_at=starts_at.isoformat())
    path.write_text(text + textwrap.dedent(extra), encoding="utf-8")
    return path
